"""Time `vrt-ray data synth` (render, encode, teacher, files) and print JSON.

    python benchmarks/synth.py [--pairs 200] [--seed 0]
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

from vrt_ray.data.synth import SynthSettings, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = generate(Path(tmp), SynthSettings(pairs=args.pairs, seed=args.seed),
                           progress=False)
        seconds = time.perf_counter() - start
    print(json.dumps({"pairs": args.pairs, "seconds": round(seconds, 1),
                      "frames": summary["frames"],
                      "frames_per_s": round(summary["frames"] / seconds),
                      "teacher": summary["teacher"]}))


if __name__ == "__main__":
    main()

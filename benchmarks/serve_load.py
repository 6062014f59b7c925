"""Load on the served judge (jobs/serve.py) with the tiny model on a local Ray; prints one JSON
object: requests/s, p50/p99 latency and errors for 1, 8 and 32 concurrent clients.

One `VideoJudge` replica (2 Ray CPUs, `serve.max_batch_size` requests per episode-runner call)
over the random tiny model, greedy, `max_new_tokens` tokens a turn. Each client sends JSON
requests naming synthetic videos under the media root, one after the other, `--per-client`
requests (at least `--min-requests` per level). A warm-up request goes first. Progress goes to
stderr. Usage: python benchmarks/serve_load.py [--clients 1 8 32] [--workdir DIR]
"""
import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests

from vrt_ray.cli.stdout import claim_stdout, emit


def log(message: str) -> None:
    print(f"[serve_load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def prepare(root: Path, args):
    """Synthetic pairs, the tiny model and the run config under `root`."""
    from vrt_ray import config
    from vrt_ray.data.loaders import load_pairs
    from vrt_ray.data.synth import SynthSettings, generate
    from vrt_ray.models import make_tiny

    generate(root / "data", SynthSettings(pairs=args.pairs, min_frames=16, max_frames=64, seed=5))
    pairs = [p for split in ("train", "val", "test") if (root / "data" / f"{split}.jsonl").exists()
             for p in load_pairs(root / "data" / f"{split}.jsonl", "jsonl").pairs]
    make_tiny(root / "model", seed=0)
    cfg = config.load("tiny_cpu", [
        f"output_dir={root}/out", f"serve.media_root={root}/data", f"serve.port={args.port}",
        "serve.num_cpus=1", f"serve.max_batch_size={args.batch}", "protocol.initial_frames=2",
        "protocol.max_turns=2", f"protocol.max_new_tokens={args.max_new_tokens}",
        "ray.num_cpus=2"])
    return cfg, [{"prompt": p.prompt, "video_a": p.video_a, "video_b": p.video_b} for p in pairs]


def level(url: str, bodies: list, clients: int, per_client: int) -> dict:
    """`clients` threads, each sending `per_client` requests back to back."""
    latencies, errors, lock = [], [], threading.Lock()

    def client(c: int) -> None:
        session = requests.Session()
        for i in range(per_client):
            body = bodies[(c * per_client + i) % len(bodies)]
            started = time.perf_counter()
            try:
                response = session.post(f"{url}/v1/judge", json=body, timeout=600)
                ok = response.status_code == 200
                error = None if ok else f"{response.status_code}: {response.text[:200]}"
            except requests.RequestException as exc:
                ok, error = False, str(exc)[:200]
            with lock:
                (latencies.append(time.perf_counter() - started) if ok else errors.append(error))

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": clients * per_client, "ok": len(latencies),
            "errors": len(errors), "error_examples": sorted(set(errors))[:3],
            "wall_s": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 2),
            "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 1),
                           "p99": round(float(np.percentile(ms, 99)), 1),
                           "mean": round(float(ms.mean()), 1)} if len(ms) else None}


def main() -> None:
    out = claim_stdout()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--per-client", type=int, default=2)
    parser.add_argument("--min-requests", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="serve.max_batch_size")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    root = (args.workdir or Path("outputs/bench/serve_load") / stamp).resolve()
    root.mkdir(parents=True, exist_ok=True)
    cfg, bodies = prepare(root, args)

    from ray import serve

    from jobs.serve import deploy

    started = time.perf_counter()
    url = deploy(cfg, str(root / "model"))
    log(f"deployed at {url} in {time.perf_counter() - started:.1f} s")
    try:
        warm = level(url, bodies[:1], 1, 1)
        log(f"warm-up: {warm['latency_ms']}")
        results = []
        for clients in args.clients:
            per_client = max(args.per_client, -(-args.min_requests // clients))
            results.append(level(url, bodies, clients, per_client))
            log(f"{clients} clients: {results[-1]['requests_per_s']} req/s, "
                f"{results[-1]['latency_ms']}, {results[-1]['errors']} errors")
    finally:
        serve.shutdown()
    emit(out, {"benchmark": "serve_load", "utc": stamp, "workdir": str(root),
               "settings": {"replicas": cfg.serve.num_replicas, "replica_cpus": cfg.serve.num_cpus,
                            "max_batch_size": args.batch, "batch_wait_s": cfg.serve.batch_wait_s,
                            "max_new_tokens": args.max_new_tokens,
                            "max_turns": cfg.protocol.max_turns,
                            "initial_frames": cfg.protocol.initial_frames,
                            "pairs": len(bodies), "engine": cfg.rollout.engine,
                            "model": "tiny random Qwen2.5-VL (vrt_ray.models.make_tiny)"},
               "warmup_latency_ms": warm["latency_ms"]["mean"], "levels": results})


if __name__ == "__main__":
    main()

"""`vrt-ray data synth`: render the synthetic preference data set with teacher traces."""
from __future__ import annotations

import argparse


def add_synth(data_subparsers: argparse._SubParsersAction) -> None:
    """Add `synth` to the `data` command group."""
    synth = data_subparsers.add_parser(
        "synth", help="render synthetic video pairs, labels, teacher traces and captions",
        description="Render mp4 pairs of simple scenes with time-localised defects into OUT: "
                    "pairs.jsonl, train/val/test.jsonl, videos/, traces.jsonl (cold-start "
                    "teacher episodes), captions.jsonl. Same seed, same bytes. Prints a JSON "
                    "summary with the teacher's defect-found rate and answer accuracy.")
    synth.add_argument("--out", required=True, metavar="DIR", help="output folder")
    synth.add_argument("--pairs", type=int, required=True, metavar="N", help="number of pairs")
    synth.add_argument("--seed", type=int, default=0, metavar="S")
    synth.add_argument("--min-frames", type=int, default=16, metavar="N",
                       help="shortest video (default 16)")
    synth.add_argument("--max-frames", type=int, default=256, metavar="N",
                       help="longest video (default 256)")
    synth.add_argument("--size", type=int, default=112, metavar="PX",
                       help="frame side in pixels (default 112)")
    synth.add_argument("--fps", type=int, default=8, metavar="N",
                       help="frames per second (default 8)")
    synth.add_argument("--initial-frames", type=int, default=4, metavar="K",
                       help="teacher: uniform frames per video shown first (default 4)")
    synth.add_argument("--max-turns", type=int, default=6, metavar="N",
                       help="teacher: tool calls per episode (default 6)")
    synth.add_argument("--max-frames-per-call", type=int, default=8, metavar="N",
                       help="teacher: frames per tool call (default 8)")
    synth.add_argument("--notes", choices=("exact", "coarse"), default="exact",
                       help="teacher notes and captions: the object's centre and moves in "
                            "pixels (exact, default) or in words (coarse)")
    synth.add_argument("--workers", type=int, default=None, metavar="N",
                       help="processes making pairs (default: one per core)")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(handler=_synth)


def _synth(args: argparse.Namespace) -> int:
    import json

    from vrt_ray.data.synth import SynthSettings, generate

    settings = SynthSettings(
        pairs=args.pairs, seed=args.seed, min_frames=args.min_frames, max_frames=args.max_frames,
        size=args.size, fps=args.fps, initial_frames=args.initial_frames,
        max_turns=args.max_turns, max_frames_per_call=args.max_frames_per_call,
        notes=args.notes)
    summary = generate(args.out, settings, progress=not args.no_progress,
                       workers=args.workers)
    print(json.dumps(summary, indent=2))
    return 0

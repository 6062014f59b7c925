"""`vrt-ray judge`: run one judging episode on two videos and print the verdicts."""
from __future__ import annotations

import argparse
import json


def register(commands: argparse._SubParsersAction) -> None:
    judge = commands.add_parser(
        "judge", help="judge two videos against a prompt with a checkpoint",
        description="Run one thinking-with-image episode (greedy unless --temperature) and print "
                    "the verdict per dimension and overall; optionally write the HTML trace.")
    judge.add_argument("video_a", metavar="VIDEO_A")
    judge.add_argument("video_b", metavar="VIDEO_B")
    judge.add_argument("--model", required=True, metavar="DIR|URI",
                       help="a Qwen2.5-VL checkpoint directory or models:/NAME/VERSION (the "
                            "config's tracking URI)")
    judge.add_argument("--prompt", required=True, help="the text prompt both videos were made for")
    judge.add_argument("--config", default=None, metavar="CONFIG",
                       help="run config (YAML path or name under configs/; default tiny_cpu)")
    judge.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="key=value", help="config override, repeatable")
    judge.add_argument("--temperature", type=float, default=0.0)
    judge.add_argument("--html", metavar="OUT", help="write the trace page here")
    judge.add_argument("--json", action="store_true", help="print JSON instead of a table")
    judge.set_defaults(handler=_judge)


def _judge(args: argparse.Namespace) -> int:
    from vrt_ray import config
    from vrt_ray.cli import UserError
    from vrt_ray.judge import Judge, frame_counts, verdict_table
    from vrt_ray.registry import local_model_dir
    from vrt_ray.report import write_html

    if not args.prompt.strip():
        raise UserError("--prompt is empty")
    cfg = config.load(args.config, args.overrides)
    frame_counts({"A": args.video_a, "B": args.video_b}, cfg.video.backend)  # fail before loading
    model = local_model_dir(args.model, cfg.tracking.uri)
    trajectory = Judge.load(model, cfg).judge(args.prompt, args.video_a, args.video_b,
                                                   temperature=args.temperature)
    verdicts = verdict_table(trajectory, cfg.protocol.dimensions)
    if args.html:
        write_html(args.html, [trajectory], prompts={trajectory.pair_id: args.prompt})
    if args.json:
        print(json.dumps({"verdicts": verdicts, "end_reason": trajectory.end_reason,
                          "tool_calls": {"valid": trajectory.valid_calls,
                                         "invalid": trajectory.invalid_calls},
                          "frames_fetched": trajectory.frames_fetched,
                          "turns": len(trajectory.turns), "html": args.html}))
    else:
        for dim, verdict in verdicts.items():
            print(f"{dim:<8} {verdict if verdict is not None else '(none)'}")
        print(f"ended by {trajectory.end_reason} after {len(trajectory.turns)} turns, "
              f"{trajectory.valid_calls} valid / {trajectory.invalid_calls} invalid tool calls"
              + (f"; trace: {args.html}" if args.html else ""))
    return 0

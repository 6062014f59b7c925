"""`vrt-ray tracking sync PATH`: log what jobs kept offline while the tracking server was down."""
from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("tracking", help="MLflow tracking: replay offline buffers")
    sub = group.add_subparsers(dest="tracking_command", metavar="SUBCOMMAND", required=True)
    sync = sub.add_parser(
        "sync", help="log offline buffers (<output_dir>/mlflow_offline) into the tracking server",
        description="Replay what jobs could not log while the tracking server was unreachable "
                    "(params, metrics with their steps and times, artifacts, registered models, "
                    "run status) into the server, creating runs it never saw. A replayed buffer "
                    "is renamed *.jsonl.synced.")
    sync.add_argument("path", metavar="PATH", help="a buffer file or a folder of them")
    sync.add_argument("--uri", help="tracking URI to log into (default: the one each buffer "
                                    "was written for)")
    sync.set_defaults(handler=_sync)


def _sync(args: argparse.Namespace) -> int:
    from vrt_ray.mlflow_log import sync

    done = sync(args.path, args.uri)
    for path, run_id in done:
        print(f"{path}: logged to run {run_id}")
    print(f"tracking sync: {len(done)} buffer(s) logged")
    return 0

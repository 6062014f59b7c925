"""`vrt-ray`: the command line. Each command group lives in its own module and registers its
subcommands here; handlers import heavy libraries lazily so `--help` stays fast."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from vrt_ray.cli import (config_cmd, data_cmd, eval_cmd, judge_cmd, model_cmd, serve_cmd,
                         submit_cmd, tracking_cmd, train_cmd, video_cmd)

GROUPS = (config_cmd, model_cmd, video_cmd, data_cmd, judge_cmd, train_cmd, eval_cmd,
          serve_cmd, submit_cmd, tracking_cmd)


class UserError(Exception):
    """An error in what the user asked for: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vrt-ray",
        description="Train, evaluate and serve thinking-with-image video reward models on Ray.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(commands)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line; `key=value` overrides may also follow options (`CONFIG --model DIR
    k=v`), which plain argparse refuses once an option has ended the positionals."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e
                                                 for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vrt_ray.errors import VrtError

    args = parse_args(argv)
    try:
        return args.handler(args) or 0
    except (VrtError, UserError) as exc:
        print(f"vrt-ray: error: {exc}", file=sys.stderr)
        return 2


"""`vrt-ray config show CONFIG [key=value ...]`: print the resolved run config."""
from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("config", help="inspect run configs")
    sub = group.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = sub.add_parser(
        "show", help="print the resolved config (schema defaults <- file <- overrides)",
        description="Print the resolved config as YAML. CONFIG is a YAML path or the name of a "
                    "file under configs/ (e.g. tiny_cpu, qwen2_5_vl_7b).")
    show.add_argument("config", metavar="CONFIG")
    show.add_argument("overrides", nargs="*", metavar="key=value",
                      help="overrides in dotted form, e.g. protocol.memory_window=3")
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace) -> int:
    from vrt_ray import config

    print(config.to_yaml(config.load(args.config, args.overrides)), end="")
    return 0

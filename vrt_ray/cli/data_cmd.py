"""`vrt-ray data ...`: preference data commands."""
from __future__ import annotations

import argparse

from vrt_ray.cli.synth_cmd import add_synth


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("data", help="make and check preference data")
    sub = group.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    add_synth(sub)

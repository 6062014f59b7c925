"""The `vrt-ray` console script: every subcommand answers --help."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vrt_ray.cli import build_parser, parse_args

VRT_RAY = shutil.which("vrt-ray") or str(Path(sys.executable).parent / "vrt-ray")


def _all_commands(parser, prefix=()):
    """Every command path of the parser, e.g. ('config', 'show')."""
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _all_commands(sub, prefix + (name,))


COMMANDS = [()] + list(_all_commands(build_parser()))


def test_expected_commands_exist():
    assert ("config", "show") in COMMANDS and ("model", "make-tiny") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "vrt-ray")
def test_help(command):
    run = subprocess.run([VRT_RAY, *command, "--help"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: vrt-ray" + "".join(f" {c}" for c in command))


def test_no_command_is_a_usage_error():
    run = subprocess.run([VRT_RAY], capture_output=True, text=True)
    assert run.returncode == 2 and "usage:" in run.stderr


def test_overrides_may_follow_options():
    args = parse_args(["evaluate", "tiny_cpu", "eval.batch_size=4", "--model", "m", "seed=3"])
    assert args.model == "m" and args.overrides == ["eval.batch_size=4", "seed=3"]
    args = parse_args(["grpo", "tiny_cpu", "--resume", "grpo.steps=2"])
    assert args.resume and args.overrides == ["grpo.steps=2"]


@pytest.mark.parametrize("argv", [["evaluate", "tiny_cpu", "--model", "m", "--bogus"],
                                  ["evaluate", "tiny_cpu", "--model", "m", "stray"],
                                  ["video", "info", "a.mp4", "k=v"]])
def test_other_leftovers_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err

"""`vrt-ray grpo`: the training stages run as Ray jobs from the command line."""
from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    grpo = commands.add_parser(
        "grpo", help="GRPO on Ray: rollout workers, reference, verifier, DeepSpeed learners",
        description="Run GRPO steps (DESIGN.md §3) with the actors the config describes; "
                    "metrics go to MLflow, checkpoints to checkpointing.dir.")
    grpo.add_argument("config", metavar="CONFIG",
                      help="run config (YAML path or name under configs/, e.g. tiny_cpu)")
    grpo.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    grpo.add_argument("--resume", action="store_true",
                      help="continue from the latest checkpoint in checkpointing.dir")
    grpo.set_defaults(handler=_grpo)


def _grpo(args: argparse.Namespace) -> int:
    import logging

    from vrt_ray import config

    cfg = config.load(args.config, args.overrides)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from jobs import grpo

    state = grpo.main(cfg, resume=args.resume)
    print(f"grpo: {state.step} steps done, policy version {state.policy_version}, "
          f"checkpoints in {cfg.checkpointing.dir}")
    return 0

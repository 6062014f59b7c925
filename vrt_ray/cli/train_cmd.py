"""`vrt-ray cold-start`, `vrt-ray grpo`: the training stages run as Ray jobs."""
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

    cold = commands.add_parser(
        "cold-start", help="multi-turn SFT on the teacher traces through the learner group",
        description="Replay every teacher trace through the protocol and fine-tune on its "
                    "assistant turns (labels on assistant tokens only); held-out loss per epoch.")
    cold.add_argument("config", metavar="CONFIG", help="run config (YAML path or name)")
    cold.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    cold.add_argument("--model", metavar="DIR", help="start from this checkpoint (default "
                                                     "model.path)")
    cold.add_argument("--out", metavar="DIR", help="where the fine-tuned policy goes (default "
                                                   "<output_dir>/cold_start)")
    cold.set_defaults(handler=_cold_start)


def _load(args: argparse.Namespace):
    import logging

    from vrt_ray import config

    cfg = config.load(args.config, args.overrides)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return cfg


def _cold_start(args: argparse.Namespace) -> int:
    import json

    cfg = _load(args)
    from jobs import cold_start

    print(json.dumps(cold_start.main(cfg, args.model, args.out), indent=2))
    return 0


def _grpo(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from jobs import grpo

    state = grpo.main(cfg, resume=args.resume)
    print(f"grpo: {state.step} steps done, policy version {state.policy_version}, "
          f"checkpoints in {cfg.checkpointing.dir}")
    return 0

"""`vrt-ray warmup | cold-start | rft | grpo | pipeline`: the training stages as Ray jobs."""
from __future__ import annotations

import argparse


def _stage(commands, name: str, help: str, description: str, handler, model_out: bool = True):
    parser = commands.add_parser(name, help=help, description=description)
    parser.add_argument("config", metavar="CONFIG",
                        help="run config (YAML path or name under configs/, e.g. tiny_cpu)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    if model_out:
        parser.add_argument("--model", metavar="DIR|URI", help="start from this checkpoint "
                            "directory or models:/NAME/VERSION (default model.path)")
        parser.add_argument("--out", metavar="DIR", help="where the trained policy goes "
                                                         f"(default <output_dir>/{name.replace('-', '_')})")
    parser.set_defaults(handler=handler)
    return parser


def register(commands: argparse._SubParsersAction) -> None:
    _stage(commands, "warmup", "perception warm-up of a tiny base model on frame captions",
           "SFT on the synthetic frame captions of the training videos (DESIGN.md §12), so a "
           "tiny base can see before it learns to judge; held-out caption loss before/after.",
           _model_stage("warmup"))
    _stage(commands, "cold-start", "multi-turn SFT on the teacher traces through the learner group",
           "Replay every teacher trace through the protocol and fine-tune on its assistant "
           "turns (labels on assistant tokens only); held-out loss per epoch.",
           _model_stage("cold_start"))
    _stage(commands, "rft", "rejection-sampling fine-tuning on the policy's own correct episodes",
           "Sample rft.samples_per_pair episodes per training pair, keep those the verifier "
           "marks all-correct (deduplicated), fine-tune on them; keep rates per dimension.",
           _model_stage("rft"))
    grpo = _stage(commands, "grpo",
                  "GRPO on Ray: rollout workers, reference, verifier, DeepSpeed learners",
                  "Run GRPO steps (DESIGN.md §3) with the actors the config describes; metrics "
                  "go to MLflow, checkpoints to checkpointing.dir.", _grpo, model_out=False)
    grpo.add_argument("--resume", action="store_true",
                      help="continue from the latest checkpoint in checkpointing.dir")
    from vrt_ray.config import TRAINING_STAGES as STAGES

    pipeline = _stage(commands, "pipeline",
                      "the whole recipe: data, tiny model, warm-up, cold start, RFT, GRPO",
                      "Run every stage in order on one config and evaluate on the test split "
                      "after each; prints the stage table (MLflow: a parent run, a child run "
                      "per stage).", _pipeline, model_out=False)
    pipeline.add_argument("--skip", nargs="+", default=[], choices=STAGES, metavar="STAGE",
                          help=f"stages to leave out ({', '.join(STAGES)})")
    pipeline.add_argument("--start-at", choices=STAGES, metavar="STAGE",
                          help="begin with this stage (earlier ones are not run)")
    pipeline.add_argument("--model", metavar="DIR|URI",
                          help="the checkpoint (directory or models:/NAME/VERSION) the first "
                               "stage starts from (default model.path)")


def _load(args: argparse.Namespace):
    import logging

    from vrt_ray import config

    cfg = config.load(args.config, args.overrides)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return cfg


def _model_arg(args: argparse.Namespace, cfg):
    """`--model` as a local directory (a registry URI downloaded), or None."""
    from vrt_ray.registry import local_model_dir

    return local_model_dir(args.model, cfg.tracking.uri) if args.model else None


def _model_stage(job: str):
    """The handler of a stage whose job's `main(cfg, model, out)` returns a summary."""
    def handler(args: argparse.Namespace) -> int:
        import importlib

        from vrt_ray.cli.stdout import claim_stdout, emit

        out = claim_stdout()  # the summary alone: Ray's copies of its workers' output to stderr
        cfg = _load(args)
        summary = importlib.import_module(f"jobs.{job}").main(cfg, _model_arg(args, cfg),
                                                              args.out)
        emit(out, summary)
        return 0

    return handler


def _grpo(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from jobs import grpo

    state = grpo.main(cfg, resume=args.resume)
    print(f"grpo: {state.step} steps done, policy version {state.policy_version}, "
          f"checkpoints in {cfg.checkpointing.dir}")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    cfg = _load(args)
    from jobs import pipeline

    pipeline.main(cfg, skip=args.skip, start_at=args.start_at, model=_model_arg(args, cfg))
    return 0

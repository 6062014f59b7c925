"""`vrt-ray evaluate`: a checkpoint's accuracy on a benchmark file, as a Ray job."""
from __future__ import annotations

import argparse

from vrt_ray.data.loaders import FORMATS


def register(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="accuracy of a checkpoint on a benchmark file (greedy episodes on Ray)",
        description="Judge every pair of a benchmark file with one greedy episode on the rollout "
                    "workers; write results.json, table.txt and report.html (sampled traces) "
                    "and log them with the accuracies to MLflow. Pairs whose videos cannot be "
                    "read are counted and listed.")
    evaluate.add_argument("config", metavar="CONFIG",
                          help="run config (YAML path or name under configs/, e.g. tiny_cpu)")
    evaluate.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    evaluate.add_argument("--data", metavar="FILE",
                          help="benchmark file (default: eval.data, else data.dir/data.test)")
    evaluate.add_argument("--format", choices=FORMATS,
                          help="the file's format (default: eval.format)")
    evaluate.add_argument("--video-root", metavar="DIR",
                          help="where the file's relative video paths resolve (default: "
                               "eval.video_root, else the file's folder)")
    evaluate.add_argument("--model", metavar="DIR|URI",
                          help="checkpoint directory or models:/NAME/VERSION to evaluate "
                               "(default: model.path)")
    evaluate.add_argument("--out", metavar="DIR",
                          help="output folder (default: output_dir/eval)")
    evaluate.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import logging

    from vrt_ray import config
    from vrt_ray.registry import local_model_dir

    chosen = {"eval.data": args.data, "eval.format": args.format,
              "eval.video_root": args.video_root}
    cfg = config.load(args.config, [*args.overrides,
                                    *(f"{k}={v}" for k, v in chosen.items() if v is not None)])
    if args.model:
        cfg.model.path = local_model_dir(args.model, cfg.tracking.uri)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from jobs import evaluate
    from jobs.evaluate import table_text

    out = args.out or f"{cfg.output_dir}/eval"
    results = evaluate.main(cfg, out)
    print(table_text(results))
    print(f"evaluate: results.json, table.txt and report.html in {out}")
    return 0

"""`vrt-ray serve`: the judge behind HTTP with Ray Serve, until Ctrl-C."""
from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="serve the judge over HTTP with Ray Serve (POST /v1/judge)",
        description="Start a local Ray (or join ray.address), deploy the VideoJudge replicas of "
                    "the `serve` config section and answer POST /v1/judge, GET /healthz and "
                    "GET /v1/trace/ID until Ctrl-C. docs/serve.md describes the API.")
    serve.add_argument("config", metavar="CONFIG",
                       help="run config (YAML path or name under configs/, e.g. tiny_cpu)")
    serve.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, e.g. serve.port=8080 serve.num_replicas=2")
    serve.add_argument("--model", required=True, metavar="DIR",
                       help="the checkpoint directory to serve")
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    import logging

    from vrt_ray import config

    cfg = config.load(args.config, args.overrides)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from jobs import serve

    serve.main(cfg, args.model)
    return 0

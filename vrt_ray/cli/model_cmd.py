"""`vrt-ray model make-tiny OUT [--seed N] [--rope-layout L] [--rope-theta B] [--spec K=V ...]`:
build the tiny random Qwen2.5-VL."""
from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("model", help="build and inspect policy checkpoints")
    sub = group.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    tiny = sub.add_parser(
        "make-tiny", help="write the tiny random Qwen2.5-VL (weights, tokenizer, processor)",
        description="Write a tiny Qwen2.5-VL checkpoint directory built from the real "
                    "transformers classes with random weights. The same seed gives the same "
                    "bytes. Loads with AutoModelForImageTextToText / AutoProcessor.")
    tiny.add_argument("out", metavar="OUT", help="checkpoint directory to write (replaced)")
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    tiny.add_argument("--rope-layout", choices=("split", "uniform"), default=None,
                      help="the language model's M-RoPE frequencies: 'uniform' (default; "
                           "Qwen's, at --rope-theta) or 'split' (slow for text, fast for rows "
                           "and columns; HF engine only); docs/tiny_model.md compares them")
    tiny.add_argument("--rope-theta", type=float, default=None,
                      help="the uniform layout's base (implies --rope-layout uniform; "
                           "default 10; Qwen's is 1e6)")
    tiny.add_argument("--spec", nargs="+", default=[], metavar="KEY=VALUE",
                      help="change the shape: fields of vrt_ray.tiny_spec.TinySpec, e.g. "
                           "hidden_size=256 num_heads=4 num_kv_heads=2 intermediate_size=1024")
    tiny.set_defaults(handler=_make_tiny)


def _make_tiny(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from vrt_ray.cli import UserError
    from vrt_ray.models import make_tiny
    from vrt_ray.tiny_spec import tiny_spec

    spec = tiny_spec(args.spec)
    if args.rope_theta is not None:
        if (args.rope_layout or spec.rope_layout) == "split":  # from the flag or --spec
            raise UserError("--rope-theta sets the uniform layout's base; "
                            "the split layout's frequencies are fixed")
        spec = replace(spec, rope_layout="uniform", rope_theta=args.rope_theta)
    elif args.rope_layout is not None:
        spec = replace(spec, rope_layout=args.rope_layout)
    out = make_tiny(args.out, seed=args.seed, spec=spec)
    print(f"wrote {out}")
    return 0

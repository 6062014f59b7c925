"""`vrt-ray data validate FILE --format F` (load a preference file and report what loaded) and
`vrt-ray data synth` (render synthetic preference data, vrt_ray/cli/synth_cmd.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from vrt_ray.cli.synth_cmd import add_synth
from vrt_ray.data.loaders import FORMATS


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("data", help="check and generate video preference data")
    sub = group.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    validate = sub.add_parser(
        "validate", help="load a preference file; print counts, labels and bad rows",
        description="Load a benchmark or JSONL preference file as the loaders do and print how "
                    "many pairs loaded, the label distribution per dimension, and every skipped "
                    "row with its reason. Exit 0 when everything loaded, 1 when rows were "
                    "skipped, 2 when the file cannot be read (or, with --strict, a video is "
                    "missing).")
    validate.add_argument("file", metavar="FILE")
    validate.add_argument("--format", required=True, choices=FORMATS)
    validate.add_argument("--video-root", metavar="DIR",
                          help="folder the video paths are relative to (default: FILE's folder)")
    validate.add_argument("--strict", action="store_true",
                          help="a missing video file is an error instead of a skipped pair")
    validate.set_defaults(handler=_validate)
    add_synth(sub)


def _validate(args: argparse.Namespace) -> int:
    from vrt_ray.data.loaders import load_pairs

    report = load_pairs(args.file, args.format, video_root=args.video_root, strict=args.strict)
    c = report.counts
    print(f"{report.path} ({report.format}): {c['rows']} rows, {c['loaded']} pairs loaded, "
          f"{c['bad_rows']} bad rows, {c['missing_video_pairs']} pairs with missing videos")
    label_counts = report.label_counts()
    print("labels per dimension (A / B / tie):" + ("" if label_counts else " none"))
    for dim, counts in sorted(label_counts.items()):
        print(f"  {dim:<10} {counts['A']:>6} {counts['B']:>6} {counts['tie']:>6}")
    for key in ("vote_type", "overall_preference"):
        counts = report.meta_counts(key)
        if counts:
            print(f"{key}: " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items())))
    for bad in report.bad_rows:
        print(f"bad row: {report.unit} {bad.line}: {bad.reason}")
    for missing in report.missing_videos:
        print(f"missing video: {report.unit} {missing.line}: {missing.path}")
    if report.missing_videos and not report.pairs:
        root = args.video_root or Path(args.file).parent
        print(f"no pair's videos were found under {root}: is --video-root the folder the "
              "video paths are relative to?")
    return 0 if report.clean else 1

"""`vrt-ray video info FILE` and `vrt-ray video frames FILE --frames 1,17,44 --out DIR`: what
the video layer reads from a file, i.e. what a model is shown."""
from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("video", help="inspect videos as the video layer reads them")
    sub = group.add_subparsers(dest="video_command", metavar="SUBCOMMAND", required=True)

    info = sub.add_parser(
        "info", help="print frame count, fps, duration, display size, codec, rotation",
        description="Describe FILE as the video layer reads it: frames (counted from the "
                    "stream, not from metadata), mean fps, duration, display size (after "
                    "rotation), codec, rotation and backend.")
    info.add_argument("file", metavar="FILE")
    info.add_argument("--backend", choices=("pyav", "decord"), default="pyav")
    info.set_defaults(handler=_info)

    frames = sub.add_parser(
        "frames", help="write frames by 1-based index as PNGs",
        description="Write the frames at the given 1-based indices as DIR/frame_NNNNN.png, in "
                    "display orientation, at decoded size, or resized (PIL bicubic) so the "
                    "longer side is N (--size), or to a model's pixel budget with the "
                    "processor's own rule (--max-pixels, --min-pixels).")
    frames.add_argument("file", metavar="FILE")
    frames.add_argument("--frames", required=True, metavar="I,J,...",
                        help="1-based frame indices, comma-separated, e.g. 1,17,44")
    frames.add_argument("--out", required=True, metavar="DIR")
    size = frames.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, metavar="N", help="longer side in pixels")
    size.add_argument("--max-pixels", type=int, metavar="P",
                      help="pixel budget as the model's processor applies it")
    frames.add_argument("--min-pixels", type=int, default=56 * 56, metavar="P",
                        help="lower end of the pixel budget (with --max-pixels; default 3136)")
    frames.add_argument("--backend", choices=("pyav", "decord"), default="pyav")
    frames.set_defaults(handler=_frames)


def _info(args: argparse.Namespace) -> int:
    from vrt_ray.video import open_video

    with open_video(args.file, args.backend) as reader:
        info = reader.info
    print(f"file:      {info.path}\n"
          f"frames:    {info.num_frames}\n"
          f"fps:       {info.fps:.3f}\n"
          f"duration:  {info.duration:.3f} s\n"
          f"size:      {info.width}x{info.height}\n"
          f"codec:     {info.codec}\n"
          f"rotation:  {info.rotation}\n"
          f"backend:   {info.backend}")
    return 0


def _parse_indices(text: str) -> list:
    from vrt_ray.cli import UserError

    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--frames {text!r}: expected comma-separated frame numbers, "
                        "e.g. 1,17,44") from None
    return list(dict.fromkeys(indices))


def _frames(args: argparse.Namespace) -> int:
    from pathlib import Path

    from PIL import Image

    from vrt_ray.cli import UserError
    from vrt_ray.video import open_video, resize_to_budget

    indices = _parse_indices(args.frames)
    if args.size is not None and args.size < 1:
        raise UserError(f"--size {args.size}: must be at least 1")
    if args.max_pixels is not None and not 0 < args.min_pixels <= args.max_pixels:
        raise UserError(f"--min-pixels {args.min_pixels}, --max-pixels {args.max_pixels}: "
                        "need 0 < min <= max")
    with open_video(args.file, args.backend) as reader:
        frames = reader.read(indices)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index, frame in zip(indices, frames):
        if args.max_pixels is not None:
            frame = resize_to_budget(frame, args.min_pixels, args.max_pixels)
        image = Image.fromarray(frame)
        if args.size is not None:
            scale = args.size / max(image.size)
            image = image.resize((max(1, round(image.width * scale)),
                                  max(1, round(image.height * scale))),
                                 Image.Resampling.BICUBIC)
        path = out / f"frame_{index:05d}.png"
        image.save(path)
        print(f"{path}  {image.width}x{image.height}")
    return 0

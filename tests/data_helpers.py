"""Helpers for the loader and `data` CLI tests: stage a fixture file with real video files."""
import shutil
from pathlib import Path

import av
import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def write_tiny_mp4(path: Path) -> Path:
    """A real two-frame 16x16 H.264 mp4."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 100 * i, np.uint8),
                                               format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def stage(fixture: str, where: Path, videos, video_root: Path = None) -> Path:
    """Copy fixture `fixture` into `where` and put a real mp4 at each of `videos` (relative to
    `video_root`, default `where`). Returns the copied file."""
    root = video_root or where
    source = write_tiny_mp4(where / "_tiny.mp4")
    for rel in videos:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / rel)
    source.unlink()
    return Path(shutil.copy(FIXTURES / fixture, where / fixture))


VIDEOGEN_VIDEOS = [f"videos/pika/p{i}.mp4" for i in range(7)] + \
    [f"videos/kling/p{i}.mp4" for i in (0, 1, 2, 3, 4, 6)]
TRAIN_VIDEOS = [f"videos/t{i}_{s}.mp4" for i in range(3) for s in "AB"]
MJBENCH_VIDEOS = [f"test/{i}_{j}.mp4" for i in range(9) for j in (0, 1)]
JSONL_VIDEOS = [f"videos/s{i}_{s}.mp4" for i in range(5) for s in "ab"]


def stage_overrides(root: Path, model, *more: str) -> list:
    """Config overrides of a training-stage test: model, data and outputs under `root`, MLflow
    in a sqlite store there."""
    return [f"model.path={model}", f"data.dir={root}/data", f"output_dir={root}/out",
            f"tracking.uri=sqlite:///{root}/mlflow.db", *more]

"""The run's checkpoints on disk (DESIGN.md §4): `<dir>/step_000010/` holds `policy/` (a Hugging
Face directory: policy + processor, loadable by `from_pretrained` and vLLM), `learner/` (the
DeepSpeed optimizer, scheduler and weights of every rank) and `state.json` (step, data position,
policy version, tracking run id). A checkpoint is assembled in a hidden staging directory and
renamed into place, so a crash mid-write never leaves a half checkpoint as the latest."""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class RunState:
    step: int  # GRPO steps completed
    data_position: int  # training pairs taken so far
    policy_version: int
    tracking_run_id: str = ""


def begin(root: str | Path, step: int) -> Path:
    """A fresh staging directory under `root` for the checkpoint of `step`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".step_{step:06d}.", dir=root))


def commit(staging: Path, state: RunState, keep_last: int) -> Path:
    """Write `state.json` into `staging`, rename it to `step_NNNNNN`, drop all but the newest
    `keep_last` checkpoints; returns the checkpoint's path."""
    (staging / "state.json").write_text(json.dumps(asdict(state), indent=2))
    final = staging.parent / f"step_{state.step:06d}"
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    for old in all_steps(staging.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def all_steps(root: str | Path):
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def latest(root: str | Path) -> Optional[Path]:
    steps = all_steps(root)
    return steps[-1] if steps else None


def read_state(checkpoint: str | Path) -> RunState:
    return RunState(**json.loads((Path(checkpoint) / "state.json").read_text()))

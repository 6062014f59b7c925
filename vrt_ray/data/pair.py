"""The `PreferencePair` record (DESIGN.md §9) and its JSONL form."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping

VERDICTS = ("A", "B", "tie")


@dataclass(frozen=True)
class PreferencePair:
    """Two videos for one prompt and the human verdict per dimension.

    `labels` maps a dimension (`TA`, `VQ`, `MQ`, `overall`, or a benchmark's extra one) to `A`,
    `B` or `tie`, for the dimensions the source has; a missing dimension is unknown, not a tie.
    Video paths are as the source gives them, resolved against a video root by the loaders.
    """

    id: str
    prompt: str
    video_a: str
    video_b: str
    labels: Dict[str, str] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("id", "prompt", "video_a", "video_b"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        for dim, verdict in self.labels.items():
            if verdict not in VERDICTS:
                raise ValueError(f"label {dim}={verdict!r} is not one of {list(VERDICTS)}")

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "video_a": self.video_a,
                "video_b": self.video_b, "labels": dict(self.labels), "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> "PreferencePair":
        """Build from a JSONL row; raises ValueError naming what is wrong."""
        if not isinstance(row, Mapping):
            raise ValueError(f"row must be a JSON object, got {type(row).__name__}")
        missing = [k for k in ("id", "prompt", "video_a", "video_b") if k not in row]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        labels, meta = row.get("labels", {}), row.get("meta", {})
        if not isinstance(labels, Mapping) or not isinstance(meta, Mapping):
            raise ValueError("labels and meta must be JSON objects")
        return cls(id=str(row["id"]), prompt=row["prompt"], video_a=row["video_a"],
                   video_b=row["video_b"], labels=dict(labels), meta=dict(meta))

"""The driver's journal of in-flight episodes (DESIGN.md §4): which episode (pair id, sample
index) was issued to which rollout worker, under which policy version, and which came back.
When a worker dies or hangs, `unfinished(worker)` says what to re-issue; a trajectory that comes
back for an episode already done is refused, so a step never counts one twice."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

EpisodeKey = Tuple[str, int]  # (pair id, sample index)


@dataclass
class JournalEntry:
    worker: int
    policy_version: int
    attempts: int = 1
    done: bool = False


class EpisodeJournal:
    def __init__(self):
        self.entries: Dict[EpisodeKey, JournalEntry] = {}

    def issue(self, key: EpisodeKey, worker: int, policy_version: int) -> None:
        """Record that `key` was sent to `worker`; a re-issue counts another attempt."""
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = JournalEntry(worker, policy_version)
        elif entry.done:
            raise ValueError(f"episode {key} is already done")
        else:
            entry.worker, entry.policy_version = worker, policy_version
            entry.attempts += 1

    def complete(self, key: EpisodeKey) -> bool:
        """Mark `key` done; False (and nothing changes) when it was not issued or is done."""
        entry = self.entries.get(key)
        if entry is None or entry.done:
            return False
        entry.done = True
        return True

    def unfinished(self, worker: int) -> List[EpisodeKey]:
        return [k for k, e in self.entries.items() if e.worker == worker and not e.done]

    @property
    def pending(self) -> int:
        return sum(not e.done for e in self.entries.values())

    @property
    def reissued(self) -> int:
        return sum(e.attempts - 1 for e in self.entries.values())

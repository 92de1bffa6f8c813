"""Append-only progress files: one JSON row per finished unit of work, after a header that fingerprints
the job. A crash or Ctrl-C loses at most the work in flight; a re-run skips every finished row; a progress
file from a different job is refused instead of silently mixed in."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path

from .errors import BladeError
from .io_utils import append_jsonl, iter_jsonl


class ProgressLog:
    def __init__(self, path: Path, fingerprint: str, restart_hint: str, restart: bool = False):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.restart_hint = restart_hint
        if restart and self.path.exists():
            self.path.unlink()

    def load(self, key: Callable[[dict], Hashable]) -> dict:
        """Finished rows by `key(row)`; writes the header when starting fresh."""
        done: dict = {}
        if self.path.exists():
            for _, row in iter_jsonl(self.path, tolerate_truncated_tail=True):
                if row.get("type") == "header":
                    if row.get("fingerprint") != self.fingerprint:
                        raise BladeError(f"{self.path}: saved progress belongs to a different job; "
                                         f"{self.restart_hint}")
                    continue
                done[key(row)] = row
        else:
            append_jsonl(self.path, {"type": "header", "fingerprint": self.fingerprint})
        return done

    def append(self, row: dict) -> None:
        append_jsonl(self.path, row)

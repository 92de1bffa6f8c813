"""Append-only progress files: one JSON row per finished unit of work, after a header that fingerprints
the job. A crash or Ctrl-C loses at most the work in flight; a re-run skips every finished row; a progress
file from a different job is refused, with one line naming what changed, instead of silently mixed in.

Rows may arrive in any order (items finish as their requests return): readers key them, and a later row
for the same key replaces an earlier one (an item that failed last time and was retried).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from pathlib import Path

from ..extras.errors import BladeError
from .atomic_io import append_jsonl, iter_jsonl, truncate_torn_tail
from .fingerprint import JobFingerprint

logger = logging.getLogger(__name__)

RESTART_FLAG = "--restart"


class ProgressLog:
    """`load(key)` once, then `append(row)` per finished unit. `fingerprint` identifies the job."""

    def __init__(self, path: Path, fingerprint: JobFingerprint, restart: bool = False):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._synced_at = 0.0
        if restart and self.path.exists():
            self.path.unlink()

    def load(self, key: Callable[[dict], Hashable]) -> dict:
        """Finished rows by `key(row)` (the last row per key wins); writes the header when starting fresh.

        A file with no finished rows belongs to no job (a run that failed before saving anything): it is
        replaced silently, so fixing a URL or a temperature after a failed start is not refused.
        """
        done: dict = {}
        saved = None
        has_header = False
        if self.path.exists():
            cut = truncate_torn_tail(self.path)
            if cut:
                logger.warning("%s: dropped a torn last line (%d bytes) left by an interrupted run", self.path, cut)
            for _, row in iter_jsonl(self.path, tolerate_truncated_tail=True):
                if row.get("type") == "header":
                    has_header, saved = True, row.get("fingerprint")
                    continue
                done[key(row)] = row
        if done:
            message = self.fingerprint.mismatch_message(saved if has_header else None, str(self.path), RESTART_FLAG)
            if message:
                raise BladeError(message)
            return done
        if has_header and self.fingerprint.differences(saved):
            logger.info("%s held no finished work: starting it afresh for the new inputs", self.path)
        if self.path.exists():
            self.path.unlink()
        append_jsonl(self.path, {"type": "header", "fingerprint": self.fingerprint.to_json()})
        return done

    def append(self, row: dict) -> None:
        """Append one finished row. The tail was cleaned by `load` and this process writes whole lines, so
        no per-row tail check; fsync at most once a second (a SIGKILL loses nothing that reached the page
        cache; the fsync only narrows what an OS crash could take, and per-row fsyncs would stall the event
        loop that keeps the requests flowing)."""
        now = time.monotonic()
        sync = now - self._synced_at >= 1.0
        append_jsonl(self.path, row, fsync=sync, check_tail=False)
        if sync:
            self._synced_at = now

"""The resumable-job seam: an append-only log of finished units of work (one JSON row each), the one place
that repairs a torn last line, checks a job's fingerprint and loads what is done.

A crash or Ctrl-C loses at most the work in flight; a re-run skips every finished row; a log from a
different job is refused, with one line naming what changed, instead of silently mixed in.

Two header styles, one mechanism:
- `fingerprint` given (`knowledge`, `evaluate`): the file's first row is `{"type": "header", "fingerprint":
  ...}` and `load` checks it;
- `fingerprint=None` (BPO's trials.jsonl): the log has no header row because the run keeps its identity in
  its own config.json (checked by the caller); `rows` repairs and reads it.

Rows may arrive in any order (items finish as their requests return): `load` keys them, and a later row for
the same key replaces an earlier one (an item that failed last time and was retried).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

from ..extras.errors import BladeError
from .atomic_io import (append_jsonl, atomic_write_json, atomic_write_jsonl, atomic_write_text, iter_jsonl,
                        truncate_torn_tail)
from .fingerprint import JobFingerprint

logger = logging.getLogger(__name__)

RESTART_FLAG = "--restart"


class JobLog:
    """`load(key)` (or `rows()`) once, then `append(row)` per finished unit. `fingerprint` identifies the job
    (None: the caller keeps the identity elsewhere). `sync_interval`: seconds between fsyncs (0: every row)."""

    def __init__(self, path: Path, fingerprint: JobFingerprint | None, restart: bool = False,
                 sync_interval: float = 1.0):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.sync_interval = sync_interval
        self._synced_at = 0.0
        if restart and self.path.exists():
            self.path.unlink()

    def _repair(self) -> None:
        cut = truncate_torn_tail(self.path)
        if cut:
            logger.warning("%s: dropped a torn last line (%d bytes) left by an interrupted run", self.path, cut)

    def rows(self) -> list[dict]:
        """Every finished row in file order (the header row excluded), after cutting a torn tail."""
        if not self.path.exists():
            return []
        self._repair()
        return [row for _, row in iter_jsonl(self.path, tolerate_truncated_tail=True) if row.get("type") != "header"]

    def load(self, key: Callable[[dict], Hashable]) -> dict:
        """Finished rows by `key(row)` (the last row per key wins); writes the header when starting fresh.

        A file with no finished rows belongs to no job (a run that failed before saving anything): it is
        replaced silently, so fixing a URL or a temperature after a failed start is not refused.
        """
        if self.fingerprint is None:
            return {key(row): row for row in self.rows()}
        done: dict = {}
        saved = None
        has_header = False
        if self.path.exists():
            self._repair()
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
        """Append one finished row. The tail was cleaned by `load`/`rows` and this process writes whole
        lines, so no per-row tail check; fsync at most once per `sync_interval` (a SIGKILL loses nothing
        that reached the page cache; the fsync only narrows what an OS crash could take, and per-row fsyncs
        would stall the event loop that keeps the requests flowing)."""
        now = time.monotonic()
        sync = now - self._synced_at >= self.sync_interval
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, row, fsync=sync, check_tail=False)
        if sync:
            self._synced_at = now

    @staticmethod
    def publish(path: Path, content: Any) -> None:
        """Write a result the log's rows imply, atomically: rows (a list of dicts) as JSONL, a str as text,
        anything else as JSON. A kill mid-write leaves the old file, and the log can always rebuild it."""
        if isinstance(content, str):
            atomic_write_text(path, content)
        elif isinstance(content, list) or (isinstance(content, Iterable) and not isinstance(content, dict)):
            atomic_write_jsonl(path, content)
        else:
            atomic_write_json(path, content)


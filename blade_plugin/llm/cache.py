"""SQLite cache of LLM responses, shared by every command, that doubles as a log of every prompt and
response (as Simon Willison's `llm` CLI keeps one). Keys never include the API key.

Prompts and answers are private: the file (and SQLite's -wal/-shm files, which take its mode) is readable by
its owner only, and the endpoint URL is stored without any `user:password@` or secret query value."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

from ..extras.urls import redact_url

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    base_url TEXT NOT NULL,
    model TEXT NOT NULL,
    messages TEXT NOT NULL,
    params TEXT NOT NULL,
    response TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created_at REAL NOT NULL
);
"""


def normalize_base_url(url: str) -> str:
    """One spelling per endpoint: ".../v1/" and ".../v1" are the same endpoint (the openai SDK appends the
    slash itself), so they must share cache entries and job fingerprints."""
    return url.strip().rstrip("/")


def cache_key(base_url: str, model: str, messages: list[dict], params: dict) -> str:
    canonical = json.dumps([base_url, model, messages, params], sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _owner_only(path: Path) -> None:
    """Create `path` as 0600 (before SQLite creates it with the umask's 0644), or tighten an existing file."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return
    except FileExistsError:
        pass
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        target = path.with_name(name)
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
            if mode & 0o077:
                target.chmod(mode & 0o700)
                logger.info("LLM cache %s was readable by others (%o): now owner-only", target, mode)
        except FileNotFoundError:
            continue
        except PermissionError:  # someone else's file (a shared cache): leave its mode to its owner
            logger.warning("LLM cache %s is readable by others and not ours to change", target)


class ResponseCache:
    """Thread-safe; several processes may share one file (WAL mode, busy timeout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as err:
            # A corrupt cache must not break every command: keep it for inspection, start an empty one.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                sidecar = self.path.with_name(self.path.name + suffix)
                if sidecar.exists():
                    sidecar.rename(aside.with_name(aside.name + suffix))
            logger.warning("LLM cache %s is not a usable SQLite database (%s): moved it to %s and started a "
                           "new one", self.path, err, aside)
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        _owner_only(self.path)
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            conn.execute("SELECT COUNT(*) FROM responses WHERE key = ''").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, base_url: str, model: str, messages: list[dict], params: dict, response: str,
            prompt_tokens: int | None, completion_tokens: int | None) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, redact_url(base_url), model, json.dumps(messages, ensure_ascii=False), json.dumps(params, sort_keys=True),
                 response, prompt_tokens, completion_tokens, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

"""Atomic writes, text decoding and line-numbered JSONL reading shared by every command."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..extras.errors import BladeInputError

logger = logging.getLogger(__name__)

# C0 control characters other than tab, newline, form feed and carriage return: their presence means a
# binary file, even when its bytes happen to decode (GB18030 maps almost every byte pair to something).
_BINARY_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")


def decode_text(data: bytes, path: str | os.PathLike) -> str:
    """Text of a user file: UTF-8 (a BOM is dropped), else GB18030 when the bytes decode cleanly as it.

    GB18030 is a superset of GBK and GB2312, the encodings Chinese datasets are most often saved in. Anything
    else is a BladeInputError naming the byte offset and line of the first undecodable byte.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            text = None
        if text is None or _BINARY_CHARS.search(text):
            line = data.count(b"\n", 0, err.start) + 1
            raise BladeInputError(path, f"not UTF-8 or GB18030 text: byte 0x{data[err.start]:02x} at offset "
                                        f"{err.start} cannot be decoded (save the file as UTF-8)", line=line) from None
        logger.info("%s is not UTF-8: read it as GB18030 (GBK)", path)
    match = _BINARY_CHARS.search(text)
    if match:
        line = text.count("\n", 0, match.start()) + 1
        raise BladeInputError(path, f"binary data (control character {match.group()!r}), not a text file", line=line)
    return text


def read_text_file(path: str | os.PathLike) -> str:
    """`decode_text` of a file; a missing file is a BladeInputError too."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BladeInputError(path, "file not found") from None
    except IsADirectoryError:
        raise BladeInputError(path, "is a directory, expected a file") from None
    except PermissionError:
        raise BladeInputError(path, "permission denied") from None
    return decode_text(data, path)


def jsonl_records(path: str | os.PathLike, text: str | None = None) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSONL file (`read_text_file`, or `text` already
    read from it); a line that is not a JSON object is a BladeInputError naming the file and line."""
    if text is None:
        text = read_text_file(path)
    rows = []
    # split on "\n" only: str.splitlines would also break inside strings holding U+2028 and the like
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise BladeInputError(path, f"invalid JSON ({err.msg} at column {err.colno})", line=number) from None
        if not isinstance(record, dict):
            raise BladeInputError(path, f"expected a JSON object, got {type(record).__name__}", line=number)
        rows.append((number, record))
    return rows


def _current_umask() -> int:
    """The process umask without changing it (Linux exposes it in /proc); else the classic set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temp file beside `path` and rename it over `path` only if the block succeeds.

    A crash mid-write leaves the previous file intact, never a half-written one. A symlink is written through
    (its target is replaced and the link stays); an existing file keeps its permission bits, a new one gets
    the umask's (as `open()` would), not mkstemp's 0600.
    """
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        file_mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        file_mode = 0o666 & ~_current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def truncate_torn_tail(path: str | os.PathLike) -> int:
    """Cut a last line that lacks its "\\n" (a process killed mid-append left it); return the bytes cut.

    Without this the next append would glue a new row onto the torn bytes: the first resume would lose
    that row silently and the second would fail on invalid JSON.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # scan back block by block for the last complete line's end
        end, block = size, 1 << 16
        keep = 0
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def append_jsonl(path: str | os.PathLike, row: dict, *, fsync: bool = True, check_tail: bool = True) -> None:
    """Append one row, after cutting a torn last line, so a killed run keeps every finished row intact.

    The row goes out in one write() of a complete line: a SIGKILL leaves either the whole line or a torn
    tail that the next append (or `iter_jsonl(..., tolerate_truncated_tail=True)`) drops. `fsync` also
    protects against an OS crash or power loss. `check_tail=False` is for a writer that already cleaned
    the tail and has appended only whole lines since.
    """
    path = Path(path)
    if check_tail:
        path.parent.mkdir(parents=True, exist_ok=True)
        truncate_torn_tail(path)
    data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def iter_jsonl(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) for each non-blank line; bad JSON raises BladeInputError with file:line.

    `tolerate_truncated_tail` is for our own append-only progress files: a process killed mid-append can
    leave one partial last line (no "\\n", as every finished row ends with one), which is dropped instead
    of failing the resume, even when its bytes happen to parse.
    """
    path = Path(path)
    if not path.is_file():
        raise BladeInputError(path, "file not found")
    if tolerate_truncated_tail:
        data = path.read_bytes()
        # drop the torn tail as bytes: it may end inside a multi-byte UTF-8 character
        data = data[:data.rfind(b"\n") + 1]
        lines = [line + "\n" for line in data.decode("utf-8").split("\n")[:-1]]  # not splitlines(): U+2028
    else:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as err:
            raise BladeInputError(path, f"invalid JSON ({err.msg} at column {err.colno})", line=number) from None
        if not isinstance(obj, dict):
            raise BladeInputError(path, f"expected a JSON object, got {type(obj).__name__}", line=number)
        yield number, obj


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise BladeInputError(path, "file not found")
    try:
        return json.loads(read_text_file(path))
    except json.JSONDecodeError as err:
        raise BladeInputError(path, f"invalid JSON ({err.msg} at column {err.colno})", line=err.lineno) from None

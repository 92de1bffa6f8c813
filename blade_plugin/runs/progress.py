"""Progress bars that suit both a terminal and a captured log.

On a terminal this is plain `tqdm.auto.tqdm`. Off a terminal (CI, `nohup`, `2> log`) a redrawn bar would
write a carriage-return line every refresh, so a log fills with hundreds of identical `DP: 5%| | 1/20` lines.
There the bar writes one plain line per real change of its count, and at most one every
`BLADE_PROGRESS_INTERVAL` seconds (default 30) for fast-moving counts, plus the final state.

Use `from blade_plugin.runs.progress import tqdm` wherever a bar is made: it takes tqdm's arguments.
"""

from __future__ import annotations

import os
import re
import sys

from tqdm import tqdm as _std_tqdm
from tqdm.auto import tqdm as _auto_tqdm

# Cursor movement and line clearing that tqdm uses for stacked bars; meaningless in a log.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def log_interval() -> float:
    try:
        return max(0.0, float(os.environ.get("BLADE_PROGRESS_INTERVAL", "30")))
    except ValueError:
        return 30.0


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or file-like objects without isatty
        return False


class _LineWriter:
    """A file for tqdm that turns each redraw ("\\r" + bar) into one plain line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = _ANSI.sub("", text).replace("\r", "\n")
        for line in text.split("\n"):
            if line.strip():
                self.stream.write(line.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


class LogProgressBar(_std_tqdm):
    """tqdm for non-terminals: prints only when the count changed since the last printed line."""

    def __init__(self, *args, file=None, **kwargs):
        kwargs.setdefault("mininterval", log_interval())
        kwargs.setdefault("maxinterval", max(kwargs["mininterval"], 10.0))
        kwargs.setdefault("ncols", 100)
        kwargs["dynamic_ncols"] = False
        self._shown_n: float | None = None
        super().__init__(*args, file=_LineWriter(file if file is not None else sys.stderr), **kwargs)

    def display(self, msg=None, pos=None):
        if msg is None and self.n == self._shown_n:
            return True  # a refresh without progress (e.g. set_postfix): nothing new to log
        self._shown_n = self.n
        return super().display(msg=msg, pos=pos)


def tqdm(*args, **kwargs):
    """A progress bar: tqdm.auto's on a terminal, a `LogProgressBar` elsewhere.

    `disable=None` keeps tqdm's meaning (no bar at all off a terminal), for inner bars not worth logging.
    """
    stream = kwargs.get("file") or sys.stderr
    if _is_terminal(stream):
        return _auto_tqdm(*args, **kwargs)
    if kwargs.get("disable", False) is None:
        kwargs["disable"] = True
    return LogProgressBar(*args, **kwargs)

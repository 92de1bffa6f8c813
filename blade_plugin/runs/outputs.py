"""Every output of a command is checked before the first LLM request: it must not be (or replace) one of the
command's inputs, its directory must be writable, and no two outputs may be the same file.

`check_outputs` also records where the command keeps its resumable progress, so that Ctrl-C (`cli.main`) can
say where the work is saved and how to resume.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..extras.errors import BladeError


@dataclass(frozen=True)
class Output:
    """A file the command will write (or a directory it will fill); `option` names it for the user."""

    option: str
    path: Path
    is_dir: bool = False


@dataclass(frozen=True)
class ResumeNote:
    progress: Path
    hint: str = "re-run the same command to resume"


_resume_note: ResumeNote | None = None


def resume_note() -> ResumeNote | None:
    """Where the running command keeps its progress (set by `check_outputs`), for the Ctrl-C message."""
    return _resume_note


def _real(path: Path) -> Path:
    """The file a path names once `./x`, `x`, `..` and symlinks (also a dangling one's target) are resolved."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _check_writable(output: Output) -> None:
    real = _real(output.path)
    what = f"{output.option} {output.path}"
    if real.exists():
        if output.is_dir and not real.is_dir():
            raise BladeError(f"{what}: exists and is not a directory")
        if not output.is_dir and real.is_dir():
            raise BladeError(f"{what}: is a directory, expected a file path")
    directory = real if output.is_dir else real.parent
    existing = _nearest_existing(directory)
    if not existing.is_dir():
        raise BladeError(f"{what}: cannot create it, {existing} is a file, not a directory")
    try:
        # A real probe: os.access ignores read-only mounts' subtleties and always says yes to root.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        reason = "permission denied" if err.errno in (errno.EACCES, errno.EPERM) else err.strerror
        if existing != directory:  # name the directory that cannot be made, not only its nearest parent
            raise BladeError(f"{what}: cannot create {directory}: {existing} is not writable ({reason})") from None
        raise BladeError(f"{what}: directory {existing} is not writable ({reason})") from None
    if real.is_file() and not os.access(real, os.W_OK):
        raise BladeError(f"{what}: file is not writable")


def check_outputs(outputs: Iterable[Output], inputs: Iterable[tuple[str, str | os.PathLike | None]],
                  progress: str | os.PathLike | None = None,
                  resume_hint: str = "re-run the same command to resume") -> None:
    """Refuse, before any work or request, outputs that are an input, clash with each other, or cannot be
    written. `inputs` are (option, path) pairs; None paths (options not given) are ignored."""
    global _resume_note
    outputs = list(outputs)
    real_inputs = [(option, Path(path), _real(Path(path))) for option, path in inputs if path is not None]
    for output in outputs:
        real_out = _real(output.path)
        for option, path, real_in in real_inputs:
            if real_in == real_out:
                raise BladeError(f"{output.option} would write {output.path}, which is the input {option} {path}: "
                                 "refusing to overwrite an input; choose another output path")
    seen: dict[Path, Output] = {}
    for output in outputs:
        real_out = _real(output.path)
        if real_out in seen and seen[real_out].option != output.option:
            first = seen[real_out]
            raise BladeError(f"{output.option} {output.path} and {first.option} {first.path} are the same file")
        seen[real_out] = output
    for output in outputs:
        _check_writable(output)
    _resume_note = ResumeNote(Path(progress), resume_hint) if progress is not None else None

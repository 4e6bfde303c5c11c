"""Atomic file writes: whoever reads a file (or a run that crashed while writing it) finds either the old
version or the complete new one, never a truncated one.

Every file the project writes for something else to read later (checkpoint files, adapters,
results.json, submission.json) goes through atomic_write. The content goes to a temporary file in the
target's folder (os.replace is atomic only within one file system), is flushed to disk with fsync (without
it, a power loss soon after the rename can leave the new name pointing at an empty file), then is renamed
over the target. The temporary name is unique per call, so two processes writing the same file never
write into, or rename away, each other's temporary file.

Beside it: json_text, the one way JSON is written (a NaN or infinity, which JSON cannot hold, becomes
null instead of an invalid file), `locked` (files that must agree with each other, such as an
evaluation's results.json and submission.json, are replaced together under a lock on their folder)
and `check_writable` (a folder proven writable before hours of work are spent on what goes in it).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import uuid
from pathlib import Path
from typing import Callable, Iterator


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp_path), flush tmp_path to disk, then rename it over path."""
    path = Path(path)
    # A random name rather than tempfile.mkstemp: write() creates the file itself, so it gets the same
    # permissions as any file the process creates (mkstemp's would be owner-only).
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left over when something failed before the rename


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(obj, indent: int | None = None) -> str:
    """obj as JSON text; NaN and infinities become null (json.dumps would write NaN, which is not JSON)."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


@contextlib.contextmanager
def locked(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a folder (flock on the folder itself: no lock file is left behind).
    Processes that replace a set of files in the folder under it never interleave their sets."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_writable(folder: str | Path) -> Path:
    """Create folder if needed and prove a file can be written in it (and removed); raises OSError."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-test.{uuid.uuid4().hex}.tmp"
    try:
        probe.write_bytes(b"")
    finally:
        probe.unlink(missing_ok=True)
    return folder

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
evaluation's results.json and submission.json, are replaced together under a lock on their folder),
`hold_lock` (a lock held for the rest of the process, which names its holder to whoever else asks: one
trainer per run folder; its file is never a link, so a planted `.train.lock` symlink cannot make the
trainer write elsewhere) and `check_writable` (a folder proven writable before hours of work are spent
on what goes in it).

Reading goes the other way: every file the project takes from a user or another program (a task file, a
checkpoint's config.json and tokenizer.json, a --config TOML file) is read with `read_capped`, and
through it `read_text`, `read_json` or `read_toml`: a regular file only, at most a given size, UTF-8, and
nested no deeper than a parser can follow. A file that is a symlink to /dev/zero, a FIFO, a runaway file,
binary content or 5,000 nested brackets is refused at once, as a ValueError saying which (the caller names
the file), instead of being read until memory runs out, forever, or into a traceback.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import stat
import tomllib
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


class LockHeld(Exception):
    """hold_lock found the lock taken by another process; .holder is what that process wrote (its pid)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


_held: dict[str, int] = {}  # lock file (its folder's real path + its name) -> the descriptor that holds it


class NotALockFile(ValueError):
    """hold_lock found something at the lock's path that it refuses to open or write: a symbolic link, a
    folder, a FIFO or device, or a file with other names (a hard link). The message says which."""


def _lock_key(path: str | Path) -> str:
    """The lock's identity: its folder resolved, its own name not (a link there is refused, not followed)."""
    path = Path(path)
    return os.path.join(os.path.realpath(path.parent), path.name)


def _open_lock(path: str | Path) -> int:
    """The lock file opened for writing, created if need be, never through a link: O_NOFOLLOW refuses a
    symlink, and what is opened must be a regular file with no other name, or whatever it also is (a file
    a hard link or a symlink points at, outside the run folder) would be overwritten with the pid."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotALockFile("is a symbolic link") from None
        if error.errno == errno.EISDIR:
            raise NotALockFile("is a folder") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise NotALockFile("is not a regular file (a FIFO or a device)" if not stat.S_ISREG(info.st_mode)
                           else f"has {info.st_nlink} names (a hard link to a file elsewhere)")
    return fd


def hold_lock(path: str | Path, holder: str) -> None:
    """Take an exclusive flock on the file path (created if need be) and keep it until the process ends,
    writing `holder` (say, the pid) into it for whoever else asks. Raises LockHeld with what the
    holder wrote when another process has it, NotALockFile when path is a link or no plain file (nothing
    is written then). The kernel releases an flock when its process dies, however it dies: a killed
    process leaves the file behind, never the lock. Taking a lock this process already holds does
    nothing (a program that trains twice on one folder, one run after the other)."""
    key = _lock_key(path)
    if key in _held:
        return
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise LockHeld(text) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode(), 0)
    _held[key] = fd


def release_lock(path: str | Path) -> None:
    """Give up a lock hold_lock took (a no-op when this process does not hold it)."""
    fd = _held.pop(_lock_key(path), None)
    if fd is not None:
        os.close(fd)  # closing releases the flock


def regular_file(path: str | Path) -> int:
    """Open path for reading, refusing anything but a regular file (ValueError): a device such as
    /dev/zero would never end, and a FIFO would block the open itself (hence O_NONBLOCK, then fstat).
    Returns the descriptor."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("not a regular file (a device, a FIFO or a folder)")
    return fd


def read_capped(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes; ValueError when it is something else or larger
    (the caller names the file in its own error). FileNotFoundError and other OSErrors pass through."""
    fd = regular_file(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than the {max_bytes / 2**20:g} MB such a file may hold")
    return data


def read_text(path: str | Path, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most max_bytes (read_capped); ValueError when it is not UTF-8."""
    try:
        return read_capped(path, max_bytes).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text ({error.reason} at byte {error.start})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_json(path: str | Path, max_bytes: int, **options):
    """The JSON value of a regular file of at most max_bytes (read_text). ValueError says what is wrong
    with it: too large, not UTF-8, not JSON (NaN and Infinity included, which no JSON writer writes),
    nested absurdly deep. options go to json.loads (an object_pairs_hook, say)."""
    text = read_text(path, max_bytes)
    try:
        return json.loads(text, parse_constant=_no_constant, **options)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_toml(path: str | Path, max_bytes: int) -> dict:
    """The TOML document of a regular file of at most max_bytes (read_text); ValueError when it is too
    large, not UTF-8, not TOML, or nested too deeply for the parser (which recurses per level)."""
    text = read_text(path, max_bytes)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"not valid TOML: {error}") from None
    except RecursionError:
        raise ValueError("TOML nested too deeply") from None


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

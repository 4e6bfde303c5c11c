"""Atomic file writes: whoever reads a file (or a run that crashed while writing it) finds either the old
version or the complete new one, never a truncated one.

Every file the project writes for something else to read later (checkpoint files, adapters,
results.json, submission.json) goes through atomic_write. The content goes to a temporary file in the
target's folder (os.replace is atomic only within one file system), is flushed to disk with fsync (without
it, a power loss soon after the rename can leave the new name pointing at an empty file), then is renamed
over the target. The temporary name is unique per call, so two processes writing the same file never
write into, or rename away, each other's temporary file.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


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

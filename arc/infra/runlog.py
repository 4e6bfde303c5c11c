"""metrics.jsonl, a run's log: one JSON line per logged step (training loss, learning rate, throughput)
and per eval (eval loss), appended as training goes.

Lines are appended between checkpoints, so a run killed after logging step 105 but before saving step
110 holds lines its checkpoint (step 100) does not cover; the resumed run logs steps 101..110 again.
`RunLog.start(step)` therefore first cuts the log back to the lines of steps <= step (and drops a line
cut in half by a kill): after any number of resumes each step is in the log once, with the values the
uninterrupted run would have written. Values go through arc.infra.files.json_text, so a NaN never makes a
line that is not JSON. The log is a file of the run folder itself: a metrics.jsonl that is a symlink (or no
regular file) is refused, and lines are appended without following a link, so a run folder planted with
one never makes the trainer write elsewhere.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from arc.infra.errors import ConfigError
from arc.infra.files import atomic_write_text, json_text, read_text

MAX_LOG_BYTES = 1 << 30  # a million-step run logging every step writes about 200 MB


class RunLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def start(self, step: int) -> int:
        """Keep only the lines of steps <= step (the checkpoint the run starts from; 0 for a fresh run);
        returns how many lines were dropped."""
        if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
            raise ConfigError(f"{self.path}: a symbolic link or no regular file: refused, nothing written (the run "
                              "log is a file of the run folder itself); remove it, or choose another --out")
        if not self.path.exists():
            return 0
        try:
            text = read_text(self.path, MAX_LOG_BYTES)
        except (OSError, ValueError) as error:
            raise ConfigError(f"{self.path}: unreadable ({error}); remove it, or choose another --out") from None
        kept, dropped = [], 0
        for line in text.splitlines():
            try:
                record = json.loads(line)
                keep = isinstance(record, dict) and int(record["step"]) <= step
            except (ValueError, KeyError, TypeError):
                keep = False  # a line cut short by a kill, or not ours
            if keep:
                kept.append(line)
            else:
                dropped += 1
        if dropped:
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        return dropped

    def append(self, record: dict) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with open(fd, "a", encoding="utf-8") as f:
            f.write(json_text(record) + "\n")

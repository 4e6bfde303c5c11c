"""A training run's folder (--out), as its trainer holds it: one trainer per folder (a lock), where a resumed run
starts from (ResumePoint, checked before any work) and where its checkpoints go (arc.model.checkpoint writes
them, complete or absent). Weights that diverged (NaN, infinity, or values no model computes with) are never
saved: the folder keeps its last usable checkpoint.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from arc.data.tokenizer import GridTokenizer
from arc.infra.errors import ConfigError, DivergenceError
from arc.infra.files import LockHeld, NotALockFile, hold_lock, release_lock
from arc.model.checkpoint import (
    BEYOND,
    base_reference,
    checkpoint_dir,
    has_checkpoint,
    load_model,
    load_train_state,
    read_config,
    save_checkpoint,
    tidy,
    unusable,
)
from arc.model.lora import lora_state_dict
from arc.model.transformer import Transformer


@dataclass
class ResumePoint:
    checkpoint: Path  # the newest complete step folder
    config: dict  # its config.json
    state: dict  # its train_state.pt: optimizer and RNG state, step


LOCK_FILE = ".train.lock"  # in a run folder: flocked by the trainer writing it, holding its pid


class RunFolder:
    """The folder a training run writes (--out), opened once by its trainer: where a resumed run starts
    from (`resume`, checked before any work) and where its checkpoints go (`save`).

    One trainer per run folder: opening it takes an flock on its .train.lock file for the rest of the
    process (lock=False: a data-parallel rank other than 0, which writes nothing), so a second train.py on
    the same --out is refused at once, naming the pid that holds it, before it could tidy away the first
    one's temporary files or interleave its metrics.jsonl. The kernel drops the lock when its process dies:
    a killed run's folder resumes at once."""

    def __init__(self, out: str | Path, resume: bool, lock: bool = True):
        self.path = Path(out)
        self.resume: ResumePoint | None = None
        self.created = not self.path.exists()  # made by this run (for the lock): discarded if its set-up is refused
        if lock:
            self._lock()
        if resume:
            tidy(self.path)  # leftovers of a save that was interrupted
            # the newest complete checkpoint (CheckpointError naming the folder if none)
            checkpoint = checkpoint_dir(self.path)
            state = load_train_state(checkpoint)  # refused now, before any work, when it cannot be resumed
            self.resume = ResumePoint(checkpoint, read_config(checkpoint), state)
        elif has_checkpoint(self.path):
            raise ConfigError(f"--out {self.path}: already holds a checkpoint: continue it with --resume, or choose "
                              "another --out")
        # the newest checkpoint on disk
        self.saved_step: int | None = self.resume.state["step"] if self.resume else None

    def _lock(self) -> None:
        lock = self.path / LOCK_FILE
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a path under /proc, a read-only disk, a file on the way
            raise ConfigError(f"--out {self.path}: cannot create the run folder ({error.strerror or error})") from None
        try:
            hold_lock(lock, f"{os.getpid()}")
        except LockHeld as held:
            holder = f"process {held.holder}" if held.holder.isdigit() else "another process"
            raise ConfigError(f"--out {self.path}: in use by another train.py ({holder} holds {lock}): one trainer "
                              "per run folder; wait for it to end (or stop it), or choose another --out") from None
        except NotALockFile as error:  # the trainer writes its pid there: never through a link, never elsewhere
            raise ConfigError(f"--out {self.path}: its lock file {lock} {error}: refused, nothing written; "
                              "remove it, or choose another --out") from None
        except OSError as error:
            raise ConfigError(f"--out {self.path}: cannot write its lock file {lock} "
                              f"({error.strerror or error})") from None

    def discard(self) -> None:
        """Undo the opening of a folder this run created and never wrote to (its set-up was refused): the
        folder and its lock go, so that a refused run leaves nothing behind."""
        lock = self.path / LOCK_FILE
        if self.created and self.path.is_dir() and [p.name for p in self.path.iterdir()] in ([], [LOCK_FILE]):
            release_lock(lock)
            lock.unlink(missing_ok=True)
            self.path.rmdir()

    def load_weights(self, model: Transformer, device) -> None:
        """Put the resumed checkpoint's weights (a LoRA run's: its base and adapter) into model."""
        model.load_state_dict(load_model(self.resume.checkpoint, device)[0].state_dict())

    def base_reference(self, base: str | Path) -> dict:
        """config.json entries naming a LoRA run's base (see base_reference)."""
        return base_reference(base, self.path)

    def kept(self) -> str:
        return "no checkpoint" if self.saved_step is None else f"its checkpoint of step {self.saved_step}"

    def save(self, model: Transformer, config: dict, tokenizer: GridTokenizer, train_state: dict, lora: bool) -> Path:
        refuse_diverged(model, lora, int(config["step"]), self.path)
        final = save_checkpoint(self.path, model, config, tokenizer, train_state, lora=lora)
        self.saved_step = int(config["step"])
        return final


def refuse_diverged(model: Transformer, lora: bool, step: int, run: Path) -> None:
    """DivergenceError when a weight to be saved (the adapter's, for a LoRA run) holds NaN, infinity or values
    beyond BEYOND: such weights would only spread, so the run folder keeps its last usable checkpoint."""
    weights = lora_state_dict(model) if lora else model.state_dict()
    bad = [name for name, tensor in weights.items() if unusable(tensor)]
    if bad:
        raise DivergenceError(f"step {step}: {len(bad)} weight tensor(s) hold NaN or infinity, or values beyond "
                              f"{BEYOND:.1e} (e.g. {bad[0]}): training diverged; not saved, {run} keeps its last "
                              "usable checkpoint")

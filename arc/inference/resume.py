"""What an evaluation keeps in its --out as it goes, so that a killed run continues with --resume.

    adapted/        the jointly adapted model, a checkpoint saved as the adaptation goes (arc.inference.adapt)
    tasks/<id>.json each finished task's attempts and results.json entry
    progress.json   the seconds the run had spent when it last wrote here (a --minutes budget counts them)

A fresh run (no --resume) clears them first: they belong to the run that wrote them. A resumed run loads the
adapted model instead of the checkpoint, skips the tasks it finds, and starts its clock at the seconds spent; the
time between the last write and the kill is lost, not counted.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from arc.data.tasks import Task
from arc.inference.predict import Prediction
from arc.infra.files import atomic_write_text, json_text, read_json

ADAPTED, TASKS, PROGRESS = "adapted", "tasks", "progress.json"
MAX_TASK_RECORD = 64 << 20  # a task's saved attempts: a few 30x30 grids per test input, far below this


def start(out: Path, resume: bool) -> float:
    """A fresh run clears what an earlier run kept in out; a resumed one gets the seconds it had spent."""
    if not resume:
        shutil.rmtree(out / ADAPTED, ignore_errors=True)
        shutil.rmtree(out / TASKS, ignore_errors=True)
        (out / PROGRESS).unlink(missing_ok=True)
        return 0.0
    if not (out / PROGRESS).is_file():
        return 0.0
    spent = float(read_json(out / PROGRESS, 1 << 16).get("spent_seconds", 0.0))
    print(f"resuming the evaluation in {out}: {spent:.0f}s spent before", flush=True)
    return spent


def save_spent(out: Path, seconds: float, minutes: float | None) -> None:
    atomic_write_text(out / PROGRESS, json_text({"spent_seconds": seconds, "minutes": minutes}))


def save_task(out: Path, task: Task, found: list[Prediction], entry: dict) -> None:
    """A finished task's attempts and results.json entry."""
    record = {"entry": entry, "predictions": [
        {"attempts": [a.tolist() for a in p.attempts], "status": p.status, "prompt_tokens": p.prompt_tokens,
         "candidates": p.candidates, "votes": p.votes,
         "attempts_by": {m: [a.tolist() for a in grids] for m, grids in p.attempts_by.items()}} for p in found]}
    (out / TASKS).mkdir(exist_ok=True)
    atomic_write_text(out / TASKS / f"{task.id}.json", json_text(record))


def saved_task(out: Path, task: Task) -> tuple[list[Prediction], dict] | None:
    """The attempts and entry an earlier process saved for task; None when it did not finish it."""
    path = out / TASKS / f"{task.id}.json"
    if not path.is_file():
        return None
    record = read_json(path, MAX_TASK_RECORD)

    def grids(attempts: list) -> list[np.ndarray]:
        return [np.array(a, dtype=np.uint8) for a in attempts]
    found = [Prediction(e, grids(p["attempts"]), p["status"], p["prompt_tokens"], p["candidates"], p["votes"],
                        {m: grids(a) for m, a in p["attempts_by"].items()})
             for e, p in zip(task.examples(), record["predictions"])]
    return found, record["entry"]

"""The ARC Prize submission file: build it, check its format, write it.

The Kaggle format is one JSON object mapping each task id to a list with one entry per test input, in
the task's test order; each entry holds exactly two attempts as lists of rows of ints:

    {"00576224": [{"attempt_1": [[1, 2], [3, 4]], "attempt_2": [[0]]}], ...}

A test input counts as solved when either attempt equals its true output (pass@2; arc.inference.evaluation
scores the attempts). A malformed file scores nothing at all, so validate_submission checks everything
the format requires before writing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from arc.data.tasks import Grid, Task, parse_grid
from arc.infra.files import atomic_write_text

ATTEMPTS = ("attempt_1", "attempt_2")


def _as_lists(grid: Grid) -> list[list[int]]:
    # tolist() turns numpy ints into Python ints, which json can write
    return np.asarray(grid).astype(int).tolist()


def submission_entry(attempts: list[Grid]) -> dict:
    """{"attempt_1": ..., "attempt_2": ...} from up to two grids. The format always needs both: with one
    attempt it is repeated, with none [[0]] stands in (a guess that is almost always wrong, but valid)."""
    grids = [_as_lists(g) for g in attempts[: len(ATTEMPTS)]] or [[[0]]]
    while len(grids) < len(ATTEMPTS):
        grids.append(grids[0])
    return dict(zip(ATTEMPTS, grids))


def build_submission(predictions_by_task: dict[str, list[list[Grid]]]) -> dict:
    """{task_id: [entry for each test input, in test order]} from each test input's attempts."""
    return {task_id: [submission_entry(attempts) for attempts in per_test]
            for task_id, per_test in predictions_by_task.items()}


def validate_submission(submission: dict, tasks: list[Task] | None = None) -> None:
    """Raise ValueError naming the task and test index on the first format error. With tasks, also
    require exactly the given task ids, each with one entry per test input."""
    if not isinstance(submission, dict):
        raise ValueError(f"submission: expected an object mapping task ids to lists, got {type(submission).__name__}")
    for task_id, entries in submission.items():
        where = f"submission: task {task_id!r}"
        if not isinstance(task_id, str):
            raise ValueError(f"{where}: task ids must be strings")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{where}: expected a non-empty list of entries (one per test input), "
                             f"got {type(entries).__name__}")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: test {i}: expected an object with {' and '.join(ATTEMPTS)}, "
                                 f"got {type(entry).__name__}")
            for name in ATTEMPTS:
                if name not in entry:
                    raise ValueError(f"{where}: test {i}: missing '{name}'")
                # parse_grid checks rows, rectangularity, sides 1..30 and cells (ints 0..9, not bools);
                # its DataError is a ValueError whose message starts with `where`.
                parse_grid(entry[name], f"{where}: test {i}: {name}")
    if tasks is None:
        return
    expected = {t.id: len(t.test) for t in tasks}
    for task_id, n_tests in expected.items():
        if task_id not in submission:
            raise ValueError(f"submission: task {task_id!r}: missing")
        if len(submission[task_id]) != n_tests:
            raise ValueError(f"submission: task {task_id!r}: has {len(submission[task_id])} entries, "
                             f"expected {n_tests} (one per test input)")
    for task_id in submission:
        if task_id not in expected:
            raise ValueError(f"submission: task {task_id!r}: not one of the {len(expected)} given tasks")


def write_submission(path: str | Path, submission: dict) -> Path:
    """Validate, then write atomically (temporary file + rename): an interrupted write never leaves a
    truncated file where a good one was expected."""
    validate_submission(submission)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(submission))
    return path

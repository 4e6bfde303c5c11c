"""Scoring predictions exactly, as the ARC Prize does, and the results it gives: results.json and the table.

A test input counts as answered when one of its attempts equals the true output grid exactly (shape and
every cell); a task's score is the fraction of its test inputs answered; the set's score is the mean
over tasks. A task is "solved" when all of its test inputs are answered. An output that is not a valid
grid, or a task too long for the context, is simply wrong: it never stops the run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from arc.data.tasks import Task, grids_equal
from arc.inference.predict import TOO_LONG, Prediction
from arc.infra.files import atomic_write_text, json_text
from arc.reports.pages import too_long


def task_score(predictions: list[Prediction], answered: Callable[[Prediction], bool]) -> float | None:
    """One task's ARC score: the fraction of its test inputs with a known output that `answered` says are
    right; None when no output is known."""
    known = [answered(p) for p in predictions if p.example.test.output is not None]
    return sum(known) / len(known) if known else None


def mean_score(tasks: list[Task], by_task: dict[str, list[Prediction]],
               answered: Callable[[Prediction], bool]) -> float | None:
    """The set's ARC score: the mean task_score over the tasks with a known output; None without any."""
    scores = [task_score(by_task.get(t.id, []), answered) for t in tasks]
    known = [s for s in scores if s is not None]
    return float(np.mean(known)) if known else None


def score_tasks(tasks: list[Task], predictions: list[Prediction]) -> dict:
    """results.json's content: totals and, per task, each test input's attempts and correctness.
    `score` is the official ARC score with the attempts made (pass@2 with two attempts); `score_pass1`
    counts first attempts only; `score_by_selection` scores each selection method's attempts."""
    by_task: dict[str, list[Prediction]] = {}
    for p in predictions:
        by_task.setdefault(p.example.task_id, []).append(p)
    per_task = {}
    for task in tasks:
        preds = sorted(by_task.get(task.id, []), key=lambda p: p.example.test_index)
        per_task[task.id] = {
            "score": task_score(preds, lambda p: p.correct),
            "tests": [
                {"attempts": [a.tolist() for a in p.attempts], "correct": p.correct, "status": p.status,
                 "prompt_tokens": p.prompt_tokens, "candidates": p.candidates, "votes": p.votes}
                for p in preds
            ],
        }
    scores = [entry["score"] for entry in per_task.values() if entry["score"] is not None]
    methods = sorted({m for p in predictions for m in p.attempts_by})
    first_right = lambda p: bool(p.attempts) and grids_equal(p.attempts[0], p.example.test.output)  # noqa: E731
    return {
        "tasks_total": len(tasks),
        "tasks_scored": len(scores),  # tasks whose true outputs are known
        "tasks_solved": sum(s == 1.0 for s in scores),
        "tests_too_long": sum(p.status == TOO_LONG for p in predictions),  # not predicted: counted wrong
        "score": mean_score(tasks, by_task, lambda p: p.correct),
        "score_pass1": mean_score(tasks, by_task, first_right),
        "score_by_selection": {m: mean_score(tasks, by_task, lambda p, m=m: any(
            grids_equal(a, p.example.test.output) for a in p.attempts_by.get(m, []))) for m in methods},
        "tasks": per_task,
    }


def print_table(results: dict) -> None:
    print(f"{'task':<10} {'tests':>5} {'right':>5} {'prompt':>7}  status")
    for task_id, entry in results["tasks"].items():
        tests = entry["tests"]
        right = sum(bool(t["correct"]) for t in tests)
        statuses = sorted({t["status"] for t in tests})
        prompt = max((t["prompt_tokens"] for t in tests), default=0)
        mark = "SOLVED" if entry["score"] == 1.0 else ("-" if entry["score"] is None else "wrong")
        print(f"{task_id:<10} {len(tests):>5} {right:>5} {prompt:>7}  {mark} ({'; '.join(statuses)})")
    def show(value):
        return "n/a (no true outputs)" if value is None else f"{value:.4f}"
    loss = results.get("eval_loss")  # None also when every true output is longer than the context
    print(f"solved {results['tasks_solved']}/{results['tasks_total']} tasks | score {show(results['score'])} "
          f"(first attempts only: {show(results['score_pass1'])}) | eval loss "
          f"{'n/a (no true output fits the context)' if loss is None and results['score'] is not None else show(loss)} "
          f"per output token | {results.get('seconds_per_task', 0):.1f}s per task" + too_long(results, " | "))
    for name, value in results["score_by_selection"].items():
        print(f"  attempts chosen by {name}: score {show(value)}")
    if results.get("not_predicted"):
        print(f"  not predicted ({len(results['not_predicted'])} tasks): the budget ran out before them; their "
              "attempts are their test inputs")


def write_results(results: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    atomic_write_text(path, json_text(results, indent=1))  # NaN (a diverged model's loss) is written as null
    return path

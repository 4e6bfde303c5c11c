"""Evaluation: predict every test output, score it exactly, print the table, write results.json and
submission.json (the ARC Prize format).

Scoring follows the ARC Prize rules: a test input counts as answered when one of its attempts
equals the true output grid exactly (shape and every cell); a task's score is the fraction of its
test inputs answered; the set's score is the mean over tasks. A task is "solved" when all of its
test inputs are answered. An output that is not a valid grid, or a task too long for the context,
is simply wrong: it never stops the run.

With test-time training (--ttt-steps N) each task gets a fresh LoRA trained on its demonstrations
before its test inputs are predicted; the adapter is removed afterwards, so the base model is the same
for every task. How predictions are made (views, decoding strategy, selection) is arc.inference.predict.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np

from arc.data.tasks import Task, grids_equal, load_tasks, select_tasks
from arc.inference.adapt import adapt
from arc.inference.config import EvalConfig
from arc.inference.predict import Prediction, default_views, predict
from arc.inference.submission import build_submission, write_submission
from arc.inference.ttt import task_adapter
from arc.infra.config import validate
from arc.infra.errors import ConfigError
from arc.infra.files import atomic_write_text, check_writable, json_text, locked
from arc.infra.runtime import autocast_dtype, resolve_device
from arc.layouts.rows import Rows, heldout_rows, make_rows
from arc.model.checkpoint import (
    adapter_base,
    checkpoint_dir,
    has_checkpoint,
    load_model,
    read_config,
)
from arc.model.lora import merge_lora
from arc.reports.pages import Progress, show_results, ttt_words, write_eval_report
from arc.training.scoring import grouped_loss


def task_score(predictions: list[Prediction], answered: Callable[[Prediction], bool]) -> float | None:
    """One task's ARC score: the fraction of its test inputs with a known output that `answered` says are
    right; None when no output is known."""
    known = [answered(p) for p in predictions if p.example.test.output is not None]
    return sum(known) / len(known) if known else None


def mean_score(tasks: list[Task], by_task: dict[str, list[Prediction]], answered: Callable[[Prediction], bool]) -> float | None:
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
    return {
        "tasks_total": len(tasks),
        "tasks_scored": len(scores),  # tasks whose true outputs are known
        "tasks_solved": sum(s == 1.0 for s in scores),
        "score": mean_score(tasks, by_task, lambda p: p.correct),
        "score_pass1": mean_score(tasks, by_task, lambda p: bool(p.attempts) and grids_equal(p.attempts[0], p.example.test.output)),
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
    print(f"solved {results['tasks_solved']}/{results['tasks_total']} tasks | score {show(results['score'])} "
          f"(first attempts only: {show(results['score_pass1'])}) | eval loss {show(results.get('eval_loss'))} "
          f"per output token | {results.get('seconds_per_task', 0):.1f}s per task")
    for name, value in results["score_by_selection"].items():
        print(f"  attempts chosen by {name}: score {show(value)}")


def write_results(results: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    atomic_write_text(path, json_text(results, indent=1))  # NaN (a diverged model's loss) is written as null
    return path


# The checkpoints committed to the repository, in the order evaluate.py prefers them when no training
# run of the user's own exists: the pair-layout model first (checkpoints/README.md tells their story).
SHIPPED = ("pair", "base")


def newest_checkpoint(root: str = "checkpoints") -> str:
    """The default checkpoint: the run folder under root whose newest complete checkpoint was written
    last, leaving the shipped ones out (their files' times are those of the git checkout); with no run of
    one's own, the first shipped one that exists."""
    runs = [run for run in Path(root).glob("*") if run.is_dir() and run.name not in SHIPPED and has_checkpoint(run)]
    if runs:
        return str(max(runs, key=lambda run: (checkpoint_dir(run) / "config.json").stat().st_mtime))
    shipped = [Path(root) / name for name in SHIPPED if has_checkpoint(Path(root) / name)]
    if not shipped:
        raise ConfigError(f"no checkpoint under {root}/: train one with `python train.py` or pass --checkpoint")
    return str(shipped[0])


def predict_tasks(model, rows: Rows, tasks: list[Task], cfg: EvalConfig, max_len: int, device, amp_dtype,
                  task_index: dict[str, int]):
    """Predictions for every test input, and seconds spent per task. Greedy decoding without test-time
    training predicts all examples together (better batching; arc.inference.predict reports its progress). Otherwise
    tasks go one by one (with test-time training, each under its own adapter) and a line reports each
    finished task; without test-time training the seed is offset by the task's first example index, so
    each example keeps the views it gets when all are predicted together."""
    if cfg.ttt.steps <= 0 and cfg.decoding.decode == "greedy":
        started = time.time()
        predictions = predict(model, rows, [e for t in tasks for e in t.examples()], max_len, cfg.decoding, amp_dtype, task_index)
        return predictions, {t.id: (time.time() - started) / max(len(tasks), 1) for t in tasks}, {}
    predictions, seconds, reports, progress, offset = [], {}, {}, Progress(len(tasks)), 0
    for n, task in enumerate(tasks):
        started, detail = time.time(), ""
        if cfg.ttt.steps > 0:
            ttt = replace(cfg.ttt, seed=cfg.ttt.seed + n, max_row_tokens=cfg.ttt.max_row_tokens or max_len)
            with task_adapter(model, task.train, rows, ttt, device, amp_dtype) as report:
                found = predict(model, rows, task.examples(), max_len, cfg.decoding, amp_dtype)
            reports[task.id] = asdict(report)
            detail = ttt_words(reports[task.id])
        else:
            found = predict(model, rows, task.examples(), max_len, replace(cfg.decoding, seed=cfg.decoding.seed + offset), amp_dtype,
                            task_index)
            offset += len(task.test)
        predictions += found
        seconds[task.id] = time.time() - started
        known = [p.correct for p in found if p.correct is not None]
        progress.task_done(task.id, all(known) if known else None, detail)
    return predictions, seconds, reports


def evaluate(cfg: EvalConfig) -> dict:
    validate(cfg)  # every flag, before any work (each field's rule, EvalConfig.problems and its nested configs')
    device = resolve_device(cfg.device, cfg.threads)
    amp_dtype = autocast_dtype(device, cfg.precision)
    if cfg.adapter:
        # load_model puts the adapter on the base its run recorded (relative to the run folder): that is
        # the checkpoint evaluated
        base = str(adapter_base(cfg.adapter))
        if cfg.checkpoint and checkpoint_dir(base).resolve() != checkpoint_dir(cfg.checkpoint).resolve():
            raise ConfigError(f"adapter {cfg.adapter} was trained on {base}, not on {cfg.checkpoint}")
        checkpoint = cfg.checkpoint or base
    else:
        checkpoint = cfg.checkpoint or newest_checkpoint()
    # the newest complete checkpoint of each folder, resolved once: what is loaded is what is recorded
    loaded = {"checkpoint": str(checkpoint_dir(checkpoint)), "adapter": str(checkpoint_dir(cfg.adapter)) if cfg.adapter else None}
    model, tokenizer, config = load_model(loaded["adapter"] or loaded["checkpoint"], device)
    loaded["step"] = config.get("step")
    if cfg.adapter:
        loaded["checkpoint_step"] = config.get("base_step", read_config(loaded["checkpoint"]).get("step"))
    training = config.get("training", {})
    layout = training.get("layout", "in_context")  # checkpoints before the pair layout: in-context
    merge_lora(model)  # a no-op without adapters; merged weights decode as fast as the base model
    model.eval()
    max_len = cfg.context_tokens or model.cfg.max_seq_len
    if max_len > model.cfg.max_seq_len:
        raise ConfigError(f"--context-tokens {max_len} exceeds the model's max_seq_len {model.cfg.max_seq_len}")

    task_set = cfg.task_set or ("seed20" if (cfg.data, cfg.split) == ("arc1", "evaluation") else "all")
    all_tasks = load_tasks(cfg.data, cfg.split)
    if cfg.tasks:
        task_set = "selected"
        tasks = select_tasks(all_tasks, ids=list(cfg.tasks), limit=cfg.max_tasks)
    else:
        tasks = select_tasks(all_tasks, task_set=task_set, limit=cfg.max_tasks)
    examples = [e for t in tasks for e in t.examples()]
    rows = make_rows(layout, tokenizer, training.get("colour_maps", 0), training.get("keep_background", True))
    task_index = {task_id: i for i, task_id in enumerate(config.get("task_ids", []))}
    if layout == "pair":
        if cfg.ttt.steps > 0:
            raise ConfigError("--ttt-steps is per-task LoRA training for the in-context layout; a pair-layout "
                              "checkpoint already trained on its evaluated tasks' demonstrations")
    unseen = [t.id for t in tasks if t.id not in task_index] if layout == "pair" else []
    step, d = config.get("step"), cfg.decoding
    method = (f"{d.decode}, {d.views or default_views(rows)} view(s), select {d.select}, {d.attempts} attempt(s)"
              + (f", new embeddings for {len(unseen)} task(s) ({cfg.adapt.train}, {cfg.adapt.steps} steps)" if unseen else "")
              + (f", test-time training {cfg.ttt.steps} steps" if cfg.ttt.steps > 0 else ""))
    print(f"evaluating {cfg.adapter or checkpoint} (step {step}) on {len(tasks)} tasks / {len(examples)} test inputs "
          f"from {cfg.data}/{cfg.split} [{task_set}]: {method}, on {device}", flush=True)
    if step == 0:
        print("note: this checkpoint was never trained; expect a score of 0")
    out = Path(cfg.out or Path(cfg.adapter or checkpoint) / f"eval-{task_set}")
    try:
        check_writable(out)  # now, not after hours of decoding
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None

    started = time.time()
    adapted = adapt(model, tasks, task_index, rows, cfg.adapt, max_len, device, amp_dtype) if unseen else None
    if adapted:
        print(f"adapted {adapted.tasks} new task embeddings: {adapted.steps} steps in {adapted.seconds:.0f}s, "
              f"loss {adapted.first_loss:.3f} -> {adapted.last_loss:.3f}", flush=True)
    predictions, seconds, ttt_reports = predict_tasks(model, rows, tasks, cfg, max_len, device, amp_dtype, task_index)
    results = score_tasks(tasks, predictions)
    for task_id, entry in results["tasks"].items():
        entry["seconds"] = seconds.get(task_id)
        if task_id in ttt_reports:
            entry["ttt"] = ttt_reports[task_id]
    scored = {t.id: heldout_rows([e for e in t.examples() if e.test.output is not None], rows, max_len, task_index)[0]
              for t in tasks}
    flat, groups = [r for rs in scored.values() for r in rs], [k for k, rs in scored.items() for _ in rs]
    results["eval_loss"], task_loss = grouped_loss(model, flat, groups, 8, amp_dtype) if flat else (None, {})
    for task_id, loss in task_loss.items():
        results["tasks"][task_id]["loss"] = loss  # mean per output token of the task's known test outputs
    results.update(checkpoint=checkpoint, adapter=cfg.adapter, step=step, loaded=loaded, data=cfg.data, split=cfg.split,
                   task_set=task_set, method=method, decoding=asdict(cfg.decoding),
                   ttt=asdict(cfg.ttt) if cfg.ttt.steps > 0 else None, layout=layout,
                   adapt=asdict(adapted) if adapted else None,
                   seconds_total=time.time() - started, seconds_per_task=(time.time() - started) / max(len(tasks), 1))
    if cfg.show:
        show_results(tasks, results)
    print_table(results)
    by_task: dict[str, list] = {t.id: [] for t in tasks}
    for p in sorted(predictions, key=lambda p: p.example.test_index):
        by_task[p.example.task_id].append(p.attempts)
    submission = build_submission(by_task)
    results["submission_sha256"] = hashlib.sha256(json.dumps(submission).encode()).hexdigest()
    # Two evaluations into one --out replace the three files one run at a time (a lock on the folder),
    # results.json last: it names the sha256 of the submission.json it goes with.
    with locked(out):
        print(f"wrote {write_submission(out / 'submission.json', submission)}")
        print(f"wrote {write_eval_report(out, tasks, results)} (open it in a browser)")
        print(f"wrote {write_results(results, out)}")
    return results

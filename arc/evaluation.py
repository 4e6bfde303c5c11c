"""Evaluation: predict every test output, score it exactly, print the table, write results.json and
submission.json (the ARC Prize format).

Scoring follows the ARC Prize rules: a test input counts as answered when one of its attempts
equals the true output grid exactly (shape and every cell); a task's score is the fraction of its
test inputs answered; the set's score is the mean over tasks. A task is "solved" when all of its
test inputs are answered. An output that is not a valid grid, or a task too long for the context,
is simply wrong: it never stops the run.

With test-time training (--ttt-steps N) each task gets a fresh LoRA trained on its demonstrations
before its test inputs are predicted; the adapter is removed afterwards, so the base model is the same
for every task. How predictions are made (views, decoding strategy, selection) is arc.predict.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from arc.batching import heldout_rows
from arc.checkpoint import load_model, read_config
from arc.data import Task, grids_equal, load_tasks, select_tasks
from arc.lora import merge_lora
from arc.predict import DecodeConfig, Prediction, predict
from arc.report import Progress, show_results, ttt_words, write_eval_report
from arc.runtime import autocast_dtype, resolve_device
from arc.scoring import grouped_loss
from arc.submission import build_submission, write_submission
from arc.ttt import TTTConfig, task_adapter


def _task_scores(tasks: list[Task], by_task: dict[str, list[Prediction]], answered) -> list[float]:
    """Per task with known outputs: the fraction of its test inputs that `answered(prediction)` says are right."""
    scores = []
    for task in tasks:
        known = [answered(p) for p in by_task.get(task.id, []) if p.example.test.output is not None]
        if known:
            scores.append(sum(known) / len(known))
    return scores


def score_tasks(tasks: list[Task], predictions: list[Prediction]) -> dict:
    """results.json's content: totals and, per task, each test input's attempts and correctness.
    `score` is the official ARC score with the attempts made (pass@2 with two attempts); `score_pass1`
    counts first attempts only; `score_by_selection` scores each selection method's attempts."""
    by_task: dict[str, list[Prediction]] = {}
    for p in predictions:
        by_task.setdefault(p.example.task_id, []).append(p)
    per_task, scores = {}, []
    for task in tasks:
        preds = sorted(by_task.get(task.id, []), key=lambda p: p.example.test_index)
        correct = [p.correct for p in preds]
        known = [c for c in correct if c is not None]
        task_score = sum(known) / len(known) if known else None
        if task_score is not None:
            scores.append(task_score)
        per_task[task.id] = {
            "score": task_score,
            "tests": [
                {"attempts": [a.tolist() for a in p.attempts], "correct": p.correct, "status": p.status,
                 "prompt_tokens": p.prompt_tokens, "candidates": p.candidates, "votes": p.votes}
                for p in preds
            ],
        }
    mean = lambda values: float(np.mean(values)) if values else None  # noqa: E731
    pass1 = _task_scores(tasks, by_task, lambda p: bool(p.attempts) and grids_equal(p.attempts[0], p.example.test.output))
    methods = sorted({m for p in predictions for m in p.attempts_by})
    by_method = {m: mean(_task_scores(tasks, by_task, lambda p, m=m: any(
        grids_equal(a, p.example.test.output) for a in p.attempts_by.get(m, [])))) for m in methods}
    return {
        "tasks_total": len(tasks),
        "tasks_scored": len(scores),  # tasks whose true outputs are known
        "tasks_solved": sum(s == 1.0 for s in scores),
        "score": mean(scores),
        "score_pass1": mean(pass1),
        "score_by_selection": by_method,
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
    tmp = path.with_name("results.json.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)
    return path


@dataclass
class EvalConfig:
    checkpoint: str | None = None  # checkpoint folder (default: the newest run under checkpoints/)
    adapter: str | None = None  # a LoRA run folder whose adapter goes on top of the checkpoint
    data: str = "arc1"  # arc1 | arc2 | a folder of task JSON files | a Kaggle *_challenges.json
    split: str = "evaluation"  # training | evaluation (for arc1/arc2)
    task_set: str | None = None  # seed20 | all (default: seed20 on arc1 evaluation, else all)
    tasks: tuple[str, ...] = ()  # explicit task ids, comma-separated (overrides --task-set)
    limit: int | None = None  # keep only the first N tasks
    max_len: int | None = None  # context budget per example (default: the model's max_len)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # CPU threads for torch (0: torch's default)
    precision: str = "auto"  # auto (bf16 on CUDA and AMX CPUs, else fp32) | bf16 | fp32
    out: str | None = None  # folder for results.json and submission.json (default: <checkpoint>/eval-<task set>)
    decoding: DecodeConfig = field(default_factory=DecodeConfig)  # views, strategy, selection (arc.predict)
    ttt: TTTConfig = field(default_factory=TTTConfig)  # per-task test-time training (off while ttt.steps is 0)
    show: bool = False  # print each task's expected and predicted grids in the terminal (ANSI colours)


def newest_checkpoint(root: str = "checkpoints") -> str:
    """The run folder under root whose config.json was written last."""
    configs = sorted(Path(root).glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    if not configs:
        raise FileNotFoundError(f"no checkpoint under {root}/: train one with `python train.py` or pass --checkpoint")
    return str(configs[-1].parent)


def predict_tasks(model, tokenizer, tasks: list[Task], cfg: EvalConfig, max_len: int, device, amp_dtype):
    """Predictions for every test input, and seconds spent per task. Greedy decoding without test-time
    training predicts all examples together (better batching; arc.predict reports its progress). Otherwise
    tasks go one by one (with test-time training, each under its own adapter) and a line reports each
    finished task; without test-time training the seed is offset by the task's first example index, so
    each example keeps the views it gets when all are predicted together."""
    if cfg.ttt.steps <= 0 and cfg.decoding.decode == "greedy":
        started = time.time()
        predictions = predict(model, tokenizer, [e for t in tasks for e in t.examples()], max_len, cfg.decoding, amp_dtype)
        return predictions, {t.id: (time.time() - started) / max(len(tasks), 1) for t in tasks}, {}
    predictions, seconds, reports, progress, offset = [], {}, {}, Progress(len(tasks)), 0
    for n, task in enumerate(tasks):
        started, detail = time.time(), ""
        if cfg.ttt.steps > 0:
            ttt = TTTConfig(**{**asdict(cfg.ttt), "seed": cfg.ttt.seed + n, "max_len": cfg.ttt.max_len or max_len})
            with task_adapter(model, task.train, tokenizer, ttt, device, amp_dtype) as report:
                found = predict(model, tokenizer, task.examples(), max_len, cfg.decoding, amp_dtype)
            reports[task.id] = asdict(report)
            detail = ttt_words(reports[task.id])
        else:
            found = predict(model, tokenizer, task.examples(), max_len, replace(cfg.decoding, seed=cfg.decoding.seed + offset), amp_dtype)
            offset += len(task.test)
        predictions += found
        seconds[task.id] = time.time() - started
        known = [p.correct for p in found if p.correct is not None]
        progress.task_done(task.id, all(known) if known else None, detail)
    return predictions, seconds, reports


def evaluate(cfg: EvalConfig) -> dict:
    device = resolve_device(cfg.device, cfg.threads)
    amp_dtype = autocast_dtype(device, cfg.precision)
    checkpoint = cfg.checkpoint or newest_checkpoint()
    if cfg.adapter and cfg.checkpoint:
        adapter_base = read_config(cfg.adapter)["base"]
        if Path(adapter_base).resolve() != Path(checkpoint).resolve():
            raise ValueError(f"adapter {cfg.adapter} was trained on {adapter_base}, not on {checkpoint}")
    model, tokenizer, config = load_model(cfg.adapter or checkpoint, device)
    merge_lora(model)  # a no-op without adapters; merged weights decode as fast as the base model
    model.eval()
    max_len = cfg.max_len or model.cfg.max_len
    if max_len > model.cfg.max_len:
        raise ValueError(f"--max-len {max_len} exceeds the model's max_len {model.cfg.max_len}")

    task_set = cfg.task_set or ("seed20" if (cfg.data, cfg.split) == ("arc1", "evaluation") else "all")
    all_tasks = load_tasks(cfg.data, cfg.split)
    if cfg.tasks:
        task_set = "selected"
        tasks = select_tasks(all_tasks, ids=list(cfg.tasks), limit=cfg.limit)
    else:
        tasks = select_tasks(all_tasks, task_set=task_set, limit=cfg.limit)
    examples = [e for t in tasks for e in t.examples()]
    step, d = config.get("step"), cfg.decoding
    method = (f"{d.decode}, {d.views} view(s), select {d.select}, {d.attempts} attempt(s)"
              + (f", test-time training {cfg.ttt.steps} steps" if cfg.ttt.steps > 0 else ""))
    print(f"evaluating {cfg.adapter or checkpoint} (step {step}) on {len(tasks)} tasks / {len(examples)} test inputs "
          f"from {cfg.data}/{cfg.split} [{task_set}]: {method}, on {device}", flush=True)
    if step == 0:
        print("note: this checkpoint was never trained; expect a score of 0")

    started = time.time()
    predictions, seconds, ttt_reports = predict_tasks(model, tokenizer, tasks, cfg, max_len, device, amp_dtype)
    results = score_tasks(tasks, predictions)
    for task_id, entry in results["tasks"].items():
        entry["seconds"] = seconds.get(task_id)
        if task_id in ttt_reports:
            entry["ttt"] = ttt_reports[task_id]
    rows = {t.id: heldout_rows([e for e in t.examples() if e.test.output is not None], tokenizer, max_len)[0] for t in tasks}
    flat, groups = [r for rs in rows.values() for r in rs], [k for k, rs in rows.items() for _ in rs]
    results["eval_loss"], task_loss = grouped_loss(model, flat, groups, 8, amp_dtype) if flat else (None, {})
    for task_id, loss in task_loss.items():
        results["tasks"][task_id]["loss"] = loss  # mean per output token of the task's known test outputs
    results.update(checkpoint=checkpoint, adapter=cfg.adapter, step=step, data=cfg.data, split=cfg.split,
                   task_set=task_set, method=method, decoding=asdict(cfg.decoding),
                   ttt=asdict(cfg.ttt) if cfg.ttt.steps > 0 else None,
                   seconds_total=time.time() - started, seconds_per_task=(time.time() - started) / max(len(tasks), 1))
    if cfg.show:
        show_results(tasks, results)
    print_table(results)
    out = Path(cfg.out or Path(cfg.adapter or checkpoint) / f"eval-{task_set}")
    print(f"wrote {write_results(results, out)}")
    print(f"wrote {write_eval_report(out, tasks, results)} (open it in a browser)")
    by_task: dict[str, list] = {t.id: [] for t in tasks}
    for p in sorted(predictions, key=lambda p: p.example.test_index):
        by_task[p.example.task_id].append(p.attempts)
    print(f"wrote {write_submission(out / 'submission.json', build_submission(by_task))}")
    return results

"""Evaluation: predict every test output, score it exactly, print the table, write results.json.

Scoring follows the ARC Prize rules: a test input counts as answered when one of its attempts
equals the true output grid exactly (shape and every cell); a task's score is the fraction of its
test inputs answered; the set's score is the mean over tasks. A task is "solved" when all of its
test inputs are answered. An output that is not a valid grid, or a task too long for the context,
is simply wrong: it never stops the run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from arc.data import Example, Grid, Pair, Task
from arc.decode import greedy_decode
from arc.tokenizer import END, MAX_OUTPUT_TOKENS, PAD, GridTokenizer


@dataclass
class Prediction:
    example: Example
    attempts: list[Grid] = field(default_factory=list)  # distinct candidate grids, best first
    status: str = "ok"  # ok | invalid: <why> | too long for the context
    prompt_tokens: int = 0

    @property
    def correct(self) -> bool | None:
        """None when the true output is unknown."""
        truth = self.example.test.output
        if truth is None:
            return None
        return any(a.shape == truth.shape and bool((a == truth).all()) for a in self.attempts)


def predict_greedy(
    model, tokenizer: GridTokenizer, examples: list[Example], max_len: int, batch_size: int = 8, amp_dtype=None
) -> list[Prediction]:
    """One greedy attempt per example, decoded in batches of similar prompt length."""
    predictions, jobs = [], []
    for ex in examples:
        # fit with the answer hidden: the context budget must not depend on the true output's size
        fitted = tokenizer.fit(Example(ex.task_id, ex.test_index, ex.train, Pair(ex.test.input)), max_len)
        if fitted is None:
            predictions.append(Prediction(ex, status="too long for the context"))
            continue
        prompt = tokenizer.encode_prompt(fitted)
        predictions.append(Prediction(ex, prompt_tokens=len(prompt)))
        jobs.append((len(predictions) - 1, prompt, min(MAX_OUTPUT_TOKENS, max_len - len(prompt))))
    jobs.sort(key=lambda job: len(job[1]))
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        outputs = greedy_decode(model, [p for _, p, _ in chunk], [n for _, _, n in chunk], END, PAD, amp_dtype)
        for (index, _, _), ids in zip(chunk, outputs):
            grid, why = tokenizer.parse_grid(ids)
            if grid is None:
                predictions[index].status = f"invalid: {why}"
            else:
                predictions[index].attempts.append(grid)
    return predictions


def score_tasks(tasks: list[Task], predictions: list[Prediction]) -> dict:
    """results.json's content: totals and, per task, each test input's attempts and correctness."""
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
                 "prompt_tokens": p.prompt_tokens}
                for p in preds
            ],
        }
    return {
        "tasks_total": len(tasks),
        "tasks_scored": len(scores),  # tasks whose true outputs are known
        "tasks_solved": sum(s == 1.0 for s in scores),
        "score": float(np.mean(scores)) if scores else None,
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
    print(f"solved {results['tasks_solved']}/{results['tasks_total']} tasks | score {show(results['score'])} | "
          f"eval loss {show(results.get('eval_loss'))} per output token")


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
    batch_size: int = 8  # examples decoded together
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA and AMX CPUs, else fp32) | bf16 | fp32
    out: str | None = None  # folder for results.json (default: <checkpoint>/eval-<task set>)


def newest_checkpoint(root: str = "checkpoints") -> str:
    """The run folder under root whose config.json was written last."""
    configs = sorted(Path(root).glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    if not configs:
        raise FileNotFoundError(f"no checkpoint under {root}/: train one with `python train.py` or pass --checkpoint")
    return str(configs[-1].parent)


def evaluate(cfg: EvalConfig) -> dict:
    from arc.checkpoint import load_model
    from arc.data import load_tasks, select_tasks
    from arc.lora import merge_lora
    from arc.runtime import autocast_dtype, resolve_device
    from arc.trainer import output_token_loss
    from arc.batching import heldout_rows

    device = resolve_device(cfg.device)
    amp_dtype = autocast_dtype(device, cfg.precision)
    checkpoint = cfg.checkpoint or newest_checkpoint()
    model, tokenizer, config = load_model(cfg.adapter or checkpoint, device)
    if cfg.adapter:
        base = read_base(cfg.adapter)
        if Path(base).resolve() != Path(checkpoint).resolve() and cfg.checkpoint:
            raise ValueError(f"adapter {cfg.adapter} was trained on {base}, not on {checkpoint}")
    merge_lora(model)  # a no-op without adapters; merged weights decode as fast as the base model
    model.eval()
    max_len = cfg.max_len or model.cfg.max_len
    if max_len > model.cfg.max_len:
        raise ValueError(f"--max-len {max_len} exceeds the model's max_len {model.cfg.max_len}")

    task_set = cfg.task_set or ("seed20" if (cfg.data, cfg.split) == ("arc1", "evaluation") else "all")
    all_tasks = load_tasks(cfg.data, cfg.split)
    if cfg.tasks:
        tasks = select_tasks(all_tasks, ids=list(cfg.tasks), limit=cfg.limit)
    else:
        tasks = select_tasks(all_tasks, task_set=task_set, limit=cfg.limit)
    examples = [e for t in tasks for e in t.examples()]
    step = config.get("step")
    print(f"evaluating {cfg.adapter or checkpoint} (step {step}) on {len(tasks)} tasks / {len(examples)} test inputs "
          f"from {cfg.data}/{cfg.split} [{task_set if not cfg.tasks else 'selected ids'}], greedy, on {device}")
    if step == 0:
        print("note: this checkpoint was never trained; expect a score of 0")

    predictions = predict_greedy(model, tokenizer, examples, max_len, cfg.batch_size, amp_dtype)
    results = score_tasks(tasks, predictions)
    rows, _ = heldout_rows([e for e in examples if e.test.output is not None], tokenizer, max_len)
    results["eval_loss"] = output_token_loss(model, rows, device, amp_dtype) if rows else None
    results.update(checkpoint=checkpoint, adapter=cfg.adapter, step=step, data=cfg.data, split=cfg.split,
                   task_set=task_set, decode="greedy", attempts_per_test=1)
    print_table(results)
    out = Path(cfg.out or Path(cfg.adapter or checkpoint) / f"eval-{task_set if not cfg.tasks else 'selected'}")
    print(f"wrote {write_results(results, out)}")
    return results


def read_base(adapter_folder: str) -> str:
    from arc.checkpoint import read_config
    return read_config(adapter_folder)["base"]

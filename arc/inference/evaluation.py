"""evaluate.py's run: a checkpoint's predictions for a set of tasks, scored exactly, as a sequence of stages.

    evaluate(cfg)
        open            the checkpoint (its model and layout), the tasks, the output folder (proven writable)
        adapt           tasks the layout's task table lacks get a trained row (arc.inference.adapt)
        predict         per group of tasks (all at once, or one at a time with test-time training):
                            test-time training   fine-tune on the task's demonstrations (arc.inference.ttt)
                            generate             candidates under views (arc.inference.predict)
                            select               the attempts: vote or product of experts
        score           exact match and the ARC score, the eval loss per task (arc.inference.results)
        write           the table, submission.json, report.html, results.json

Each stage is one function below taking what the stages before it made; a new stage is one more function
and one more line in `evaluate` (or in `predict_group`, for a per-task stage).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from arc.data.tasks import Task, load_tasks, select_tasks
from arc.inference.adapt import AdaptReport, adapt
from arc.inference.config import EvalConfig
from arc.inference.predict import Prediction, generate, select
from arc.inference.results import print_table, score_tasks, write_results
from arc.inference.submission import build_submission, write_submission
from arc.inference.ttt import check_trainable, task_training
from arc.infra.config import validate
from arc.infra.errors import ConfigError, DivergenceError
from arc.infra.files import check_writable, locked
from arc.infra.runtime import autocast_dtype, resolve_device
from arc.layouts import make_layout
from arc.layouts.config import LayoutConfig
from arc.layouts.rows import Layout
from arc.model.checkpoint import adapter_base, checkpoint_dir, has_checkpoint, load_model, read_config
from arc.model.lora import merge_lora
from arc.model.transformer import Transformer
from arc.reports.pages import Progress, show_results, ttt_words, write_eval_report
from arc.training.config import read_training
from arc.training.scoring import grouped_loss

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


@dataclass
class Evaluation:
    """What the stages share, set up once by `open_evaluation`."""

    cfg: EvalConfig
    model: Transformer  # eval mode, any LoRA adapter merged
    layout: Layout  # the checkpoint's row layout, with its task table
    tasks: list[Task]
    task_set: str  # the set's name ("selected" for --tasks)
    checkpoint: str  # the folder named (or chosen)
    loaded: dict  # the step folders actually loaded, and their steps
    step: int | None  # the checkpoint's training step
    context_tokens: int  # tokens per example, prompt and answer
    device: torch.device
    amp_dtype: torch.dtype | None
    out: Path  # results.json, submission.json, report.html
    method: str  # the settings in words, for the log and the report


# --------------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------------


def open_evaluation(cfg: EvalConfig) -> Evaluation:
    """The checkpoint (or a LoRA run on its base), its layout and the tasks; --out proven writable now,
    not after hours of decoding."""
    device = resolve_device(cfg.device, cfg.threads)
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
    loaded = {"checkpoint": str(checkpoint_dir(checkpoint)),
              "adapter": str(checkpoint_dir(cfg.adapter)) if cfg.adapter else None}
    model, tokenizer, config = load_model(loaded["adapter"] or loaded["checkpoint"], device)
    loaded["step"] = config.get("step")
    if cfg.adapter:
        loaded["checkpoint_step"] = config.get("base_step", read_config(loaded["checkpoint"]).get("step"))
    # a Hugging Face import has no training settings: it is a plain language model, in-context; a run's are
    # checked value by value before the layout reads them (read_training)
    where = str(Path(loaded["adapter"] or loaded["checkpoint"]) / "config.json")
    rows = read_training(config, where).layout if "training" in config else LayoutConfig(name="in_context")
    layout = make_layout(rows, tokenizer, config.get("task_ids", []))
    merge_lora(model)  # a no-op without adapters; merged weights decode as fast as the base model
    model.eval()
    context_tokens = cfg.context_tokens or model.cfg.max_seq_len
    if context_tokens > model.cfg.max_seq_len:
        raise ConfigError(f"--context-tokens {context_tokens} exceeds the model's max_seq_len {model.cfg.max_seq_len}")
    if cfg.ttt.steps > 0:
        check_trainable(model, layout, cfg.ttt.train)

    task_set = cfg.task_set or ("seed20" if (cfg.data, cfg.split) == ("arc1", "evaluation") else "all")
    all_tasks = load_tasks(cfg.data, cfg.split)
    if cfg.tasks:
        task_set = "selected"
        tasks = select_tasks(all_tasks, ids=list(cfg.tasks), limit=cfg.max_tasks)
    else:
        tasks = select_tasks(all_tasks, task_set=task_set, limit=cfg.max_tasks)
    if not tasks:
        raise ConfigError(f"--data {cfg.data}: no task to evaluate (the set selected is empty)")
    step, method = config.get("step"), method_words(cfg, layout, [t.id for t in tasks if not layout.knows(t.id)])
    print(f"evaluating {cfg.adapter or checkpoint} (step {step}) on {len(tasks)} tasks / "
          f"{sum(len(t.test) for t in tasks)} test inputs from {cfg.data}/{cfg.split} [{task_set}]: {method}, "
          f"on {device}", flush=True)
    if step == 0:
        print("note: this checkpoint was never trained; expect a score of 0")
    out = Path(cfg.out or Path(cfg.adapter or checkpoint) / f"eval-{task_set}")
    try:
        check_writable(out)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    return Evaluation(cfg, model, layout, tasks, task_set, checkpoint, loaded, step, context_tokens, device,
                      autocast_dtype(device, cfg.precision), out, method)


def method_words(cfg: EvalConfig, layout: Layout, unseen: list[str]) -> str:
    """The evaluation's settings in words, for the log and the report (unseen: the tasks to adapt to)."""
    d = cfg.decoding
    return (f"{d.decode}, {d.views or layout.default_views} view(s), select {d.select}, {d.attempts} attempt(s)"
            + (f", new embeddings for {len(unseen)} task(s) ({cfg.adapt.train}, {cfg.adapt.steps} steps"
               + (f" or {cfg.adapt.seconds:g}s per task" if cfg.adapt.seconds else "") + ")" if unseen else "")
            + (f", test-time training ({cfg.ttt.train}) {cfg.ttt.steps} steps"
               + (f" or {cfg.ttt.seconds:g}s" if cfg.ttt.seconds else "") + " per task" if cfg.ttt.steps > 0 else ""))


def adapt_stage(ev: Evaluation) -> AdaptReport | None:
    """New rows of the task table, trained, for the tasks the checkpoint has none for (None: none needed)."""
    if all(ev.layout.knows(t.id) for t in ev.tasks):
        return None
    adapted = adapt(ev.model, ev.tasks, ev.layout, ev.cfg.adapt, ev.context_tokens, ev.device, ev.cfg.seed,
                    ev.amp_dtype)
    print(f"adapted {adapted.tasks} new task embeddings: {adapted.steps} steps in {adapted.seconds:.0f}s, "
          f"loss {adapted.first_loss:.3f} -> {adapted.last_loss:.3f}", flush=True)
    return adapted


def per_task_training(ev: Evaluation, task: Task, n: int):
    """A context in which the model is trained on task's demonstrations (the n-th task), yielding the
    report; the model is the checkpoint's again after it. Without test-time training: nothing, None."""
    if ev.cfg.ttt.steps <= 0:
        return contextlib.nullcontext()
    return task_training(ev.model, task, ev.layout, ev.cfg.ttt, ev.device, ev.context_tokens, ev.cfg.seed + n,
                         ev.amp_dtype)


def predict_group(ev: Evaluation, tasks: list[Task], first_example: int) -> list[Prediction]:
    """Generate, then select, the attempts of a group of tasks. Views are seeded by each example's index
    among all the evaluated examples (first_example: the group's first), so an example gets the same
    views however the tasks are grouped."""
    seed = ev.cfg.seed + first_example
    examples = [e for t in tasks for e in t.examples()]
    found = generate(ev.model, ev.layout, examples, ev.context_tokens, ev.cfg.decoding, ev.amp_dtype, seed)
    return select(ev.model, ev.layout, found, ev.context_tokens, ev.cfg.decoding, ev.amp_dtype, seed)


def predict_stage(ev: Evaluation) -> tuple[list[Prediction], dict[str, dict]]:
    """Every test input's prediction, and per task its seconds (and test-time-training report).

    Greedy decoding without test-time training predicts all tasks as one group (better batching;
    arc.inference.predict reports its progress). Otherwise tasks go one by one, each under its own
    test-time training, and a line reports each finished task."""
    if ev.cfg.ttt.steps <= 0 and ev.cfg.decoding.decode == "greedy":
        started = time.time()
        predictions = predict_group(ev, ev.tasks, 0)
        return predictions, {t.id: {"seconds": (time.time() - started) / max(len(ev.tasks), 1)} for t in ev.tasks}
    predictions, per_task, progress, first_example = [], {}, Progress(len(ev.tasks)), 0
    for n, task in enumerate(ev.tasks):
        started = time.time()
        with per_task_training(ev, task, n) as report:
            found = predict_group(ev, [task], first_example)
        entry = {"seconds": time.time() - started, **({"ttt": asdict(report)} if report is not None else {})}
        first_example += len(task.test)
        predictions += found
        per_task[task.id] = entry
        known = [p.correct for p in found if p.correct is not None]
        progress.task_done(task.id, all(known) if known else None, ttt_words(entry["ttt"]) if "ttt" in entry else "")
    return predictions, per_task


def score_stage(ev: Evaluation, predictions: list[Prediction], per_task: dict[str, dict],
                adapted: AdaptReport | None, started: float) -> dict:
    """results.json's content: exact-match scores (arc.inference.results), each task's seconds, test-time
    training report and eval loss (mean NLL per output token of its known test outputs), and the run's
    settings."""
    cfg = ev.cfg
    results = score_tasks(ev.tasks, predictions)
    for task_id, entry in results["tasks"].items():
        entry.update(per_task.get(task_id, {}))
    scored = {t.id: ev.layout.scored_rows([e for e in t.examples() if e.test.output is not None], ev.context_tokens)[0]
              for t in ev.tasks}
    flat, groups = [r for rs in scored.values() for r in rs], [k for k, rs in scored.items() for _ in rs]
    results["eval_loss"], task_loss = grouped_loss(ev.model, flat, groups, 8, ev.amp_dtype) if flat else (None, {})
    if results["eval_loss"] is not None and not math.isfinite(results["eval_loss"]):
        # the weights were checked finite when loaded (and after adaptation): the arithmetic overflowed
        raise DivergenceError(f"the eval loss is {results['eval_loss']}: the model's outputs are not finite numbers "
                              f"(weights too large for {ev.amp_dtype or 'fp32'} arithmetic?); nothing was written")
    for task_id, loss in task_loss.items():
        results["tasks"][task_id]["loss"] = loss
    results.update(checkpoint=ev.checkpoint, adapter=cfg.adapter, step=ev.step, loaded=ev.loaded, data=cfg.data,
                   split=cfg.split, task_set=ev.task_set, method=ev.method, decoding=asdict(cfg.decoding),
                   ttt=asdict(cfg.ttt) if cfg.ttt.steps > 0 else None, layout=ev.layout.name,
                   adapt=asdict(adapted) if adapted else None,
                   seconds_total=time.time() - started,
                   seconds_per_task=(time.time() - started) / max(len(ev.tasks), 1))
    return results


def write_stage(ev: Evaluation, results: dict, predictions: list[Prediction]) -> None:
    """The table (and with --show the grids) on the terminal; submission.json, report.html, results.json."""
    if ev.cfg.show:
        show_results(ev.tasks, results)
    print_table(results)
    by_task: dict[str, list] = {t.id: [] for t in ev.tasks}
    for p in sorted(predictions, key=lambda p: p.example.test_index):
        by_task[p.example.task_id].append(p.attempts)
    submission = build_submission(by_task)
    results["submission_sha256"] = hashlib.sha256(json.dumps(submission).encode()).hexdigest()
    # Two evaluations into one --out replace the three files one run at a time (a lock on the folder),
    # results.json last: it names the sha256 of the submission.json it goes with.
    with locked(ev.out):
        print(f"wrote {write_submission(ev.out / 'submission.json', submission)}")
        print(f"wrote {write_eval_report(ev.out, ev.tasks, results)} (open it in a browser)")
        print(f"wrote {write_results(results, ev.out)}")


def evaluate(cfg: EvalConfig) -> dict:
    validate(cfg)  # every flag, before any work (each field's rule, EvalConfig.problems and its nested configs')
    ev = open_evaluation(cfg)
    started = time.time()
    adapted = adapt_stage(ev)
    predictions, per_task = predict_stage(ev)
    results = score_stage(ev, predictions, per_task, adapted, started)
    write_stage(ev, results, predictions)
    return results

"""evaluate.py's run: a checkpoint's predictions for a set of tasks, scored exactly, as a sequence of stages.

    evaluate(cfg)
        open            the checkpoint (its model and layout), the tasks, the output folder (proven writable)
        adapt           tasks the layout's task table lacks get a trained row, jointly (arc.inference.adapt)
        predict         per group of tasks (all at once, or one at a time with test-time training or a budget):
                            test-time training   fine-tune on the task's demonstrations (arc.inference.ttt)
                            generate             candidates under views (arc.inference.predict)
                            select               the attempts: vote or product of experts
        score           exact match and the ARC score, the eval loss per task (arc.inference.results)
        write           the table, submission.json, report.html, results.json

Each stage is one function below taking what the stages before it made; a new stage is one more function
and one more line in `evaluate` (or in `predict_task`, for a per-task stage).

With --minutes M the whole of it ends within M minutes: arc.inference.budget's rule gives the adaptation and
each task's test-time training their seconds as the run goes. What a run has done is kept in --out as it goes
(the adapted model, a file per finished task, the time spent), so a killed run continues with --resume.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from arc.data.tasks import Task, load_tasks, select_tasks
from arc.inference.adapt import AdaptReport, adapt, new_tasks, replay_tasks
from arc.inference import resume
from arc.inference.budget import Budget
from arc.inference.config import EvalConfig
from arc.inference.predict import Prediction, generate, select
from arc.inference.results import print_table, score_tasks, write_results
from arc.inference.submission import build_submission, write_submission
from arc.inference.ttt import TTTReport, check_trainable, task_training
from arc.infra.config import validate
from arc.infra.errors import CheckpointError, ConfigError, DivergenceError
from arc.infra.files import check_writable, locked
from arc.infra.runtime import autocast_dtype, eager, resolve_device
from arc.layouts import make_layout
from arc.layouts.config import LayoutConfig
from arc.layouts.rows import EncodedRow, Layout, answer_limit
from arc.model.checkpoint import adapter_base, checkpoint_dir, has_checkpoint, open_checkpoint, read_config
from arc.model.lora import merge_lora
from arc.model.transformer import Transformer
from arc.reports.pages import Progress, show_results, ttt_words, write_eval_report
from arc.training.config import read_training
from arc.training.scoring import row_nll

# The checkpoints committed to the repository, in the order evaluate.py prefers them when no training
# run of the user's own exists: the pair-layout model first (checkpoints/README.md tells their story).
SHIPPED = ("pair", "base")


def newest_checkpoint(root: str = "checkpoints") -> str:
    """The default checkpoint: the run folder under root whose newest complete checkpoint was written
    last, leaving the shipped ones out (their files' times are those of the git checkout); with no run of
    one's own, the first shipped one that exists."""
    runs = [run for run in Path(root).glob("*") if run.is_dir() and run.name not in SHIPPED and has_checkpoint(run)]
    if runs:
        return str(max(runs, key=_saved_at))
    shipped = [Path(root) / name for name in SHIPPED if has_checkpoint(Path(root) / name)]
    if not shipped:
        raise ConfigError(f"no checkpoint under {root}/: train one with `python train.py` or pass --checkpoint")
    return str(shipped[0])


def _saved_at(run: Path) -> float:
    """When a run folder's newest checkpoint was written; a run still saving may replace it while it is
    looked at (then its next newest is), and a run that has none left counts as oldest."""
    for _ in range(3):
        try:
            return (checkpoint_dir(run) / "config.json").stat().st_mtime
        except (OSError, CheckpointError):
            continue
    return 0.0


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
    config: dict  # the loaded checkpoint's config.json
    step: int | None  # the checkpoint's training step
    context_tokens: int  # tokens per example, prompt and answer
    device: torch.device
    amp_dtype: torch.dtype | None
    out: Path  # results.json, submission.json, report.html; what the run keeps for --resume (arc.inference.resume)
    method: str  # the settings in words, for the log and the report
    budget: Budget  # --minutes: the deadline and the rule that spends it
    ttt_steps: int  # each task's test-time training step cap (0: none), decided once (`ttt_steps`)


# --------------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------------


def open_evaluation(cfg: EvalConfig, budget: Budget) -> Evaluation:
    """The checkpoint (or a LoRA run on its base; resuming, the adaptation saved in --out), its layout and the
    tasks; --out proven writable now, not after hours of decoding."""
    device = resolve_device(cfg.device, cfg.threads)
    checkpoint, loaded = chosen_checkpoint(cfg)
    out = Path(cfg.out or Path(cfg.adapter or checkpoint) / f"eval-{cfg.task_set or default_task_set(cfg)}")
    try:
        check_writable(out)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    budget.spent_before = resume.start(out, cfg.resume)
    if cfg.resume and has_checkpoint(out / resume.ADAPTED):  # the adaptation saved by the run resumed: its table
        loaded["adapted"] = str(checkpoint_dir(out / resume.ADAPTED))
    # the step folder actually read is recorded: a run folder still being trained into may hold a newer one by
    # then, and open_checkpoint reads a consistent step
    read, model, tokenizer, config = open_checkpoint(loaded.get("adapted") or cfg.adapter or checkpoint, device)
    if "adapted" not in loaded:
        loaded["adapter" if cfg.adapter else "checkpoint"] = str(read)
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
    tasks, task_set = chosen_tasks(cfg)
    if budget.bounded and not cfg.decoding.views:  # a budgeted run's views, by the budget's rule
        one_view = sum(answer_limit(e.hidden(), cfg.decoding.limit_slack) for t in tasks for e in t.examples())
        views = budget.views(layout.budget_views, layout.default_views, one_view)
        cfg = replace(cfg, decoding=replace(cfg.decoding, views=views))
    steps = ttt_steps(cfg, any(not layout.knows(t.id) for t in tasks))
    if steps > 0:
        check_trainable(model, layout, cfg.ttt.train)
    # (resuming an adaptation: the step of the checkpoint it adapted)
    step = config["adaptation"].get("checkpoint_step") if "adaptation" in config else config.get("step")
    ev = Evaluation(cfg, model, layout, tasks, task_set, checkpoint, loaded, config, step, context_tokens, device,
                    autocast_dtype(device, cfg.precision), out, "", budget, steps)
    ev.method = method_words(ev)
    print(f"evaluating {cfg.adapter or checkpoint} (step {step}) on {len(tasks)} tasks / "
          f"{sum(len(t.test) for t in tasks)} test inputs from {cfg.data}/{cfg.split} [{task_set}]: {ev.method}, "
          f"on {device}", flush=True)
    if step == 0:
        print("note: this checkpoint was never trained; expect a score of 0")
    return ev


def ttt_steps(cfg: EvalConfig, unseen: bool) -> int:
    """Test-time training's step cap: the flags' (EvalConfig.ttt_steps), but none for a budgeted run that gives the
    whole budget to the joint adaptation of unseen tasks (--adapt-share 1, the default: measured better on tune20
    than sharing it with per-task training, RESULTS.md); a set the checkpoint knows every task of spends it all on
    per-task training instead."""
    if cfg.minutes is not None and cfg.ttt.steps is None and cfg.adapt_share >= 1 and unseen:
        return 0
    return cfg.ttt_steps()


def default_task_set(cfg: EvalConfig) -> str:
    return "seed20" if (cfg.data, cfg.split) == ("arc1", "evaluation") else "all"


def chosen_checkpoint(cfg: EvalConfig) -> tuple[str, dict]:
    """The checkpoint folder evaluated (named, the adapter's base, or the newest), and the step folders loaded."""
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
    return checkpoint, {"checkpoint": str(checkpoint_dir(checkpoint)),
                        "adapter": str(checkpoint_dir(cfg.adapter)) if cfg.adapter else None}


def chosen_tasks(cfg: EvalConfig) -> tuple[list[Task], str]:
    """The tasks to evaluate and the set's name."""
    task_set = cfg.task_set or default_task_set(cfg)
    all_tasks = load_tasks(cfg.data, cfg.split)
    if cfg.tasks:
        task_set = "selected"
        tasks = select_tasks(all_tasks, ids=list(cfg.tasks), limit=cfg.max_tasks)
    else:
        tasks = select_tasks(all_tasks, task_set=task_set, limit=cfg.max_tasks)
    if not tasks:
        raise ConfigError(f"--data {cfg.data}: no task to evaluate (the set selected is empty)")
    return tasks, task_set


def method_words(ev: Evaluation) -> str:
    """The evaluation's settings in words."""
    cfg, d = ev.cfg, ev.cfg.decoding
    unseen = [t.id for t in ev.tasks if not ev.layout.knows(t.id)]
    words = f"{d.decode}, {d.views or ev.layout.default_views} view(s), select {d.select}, {d.attempts} attempt(s)"
    if cfg.minutes is not None:
        words += f", within {cfg.minutes:g} minutes"
    if unseen:
        limit = (f"{cfg.adapt_share:.0%} of the budget" if cfg.minutes is not None else f"{cfg.adapt_steps()} steps"
                 + (f" or {cfg.adapt.seconds:g}s per task" if cfg.adapt.seconds else ""))
        replay = f", replay {cfg.adapt.replay_share():.0%}" if cfg.adapt.replay_share() else ""
        words += f", new embeddings for {len(unseen)} task(s) ({cfg.adapt.train}{replay}, {limit})"
    if ev.ttt_steps > 0:
        limit = ("the budget's share" if cfg.minutes is not None else f"{ev.ttt_steps} steps"
                 + (f" or {cfg.ttt.seconds:g}s" if cfg.ttt.seconds else ""))
        words += f", test-time training ({cfg.ttt.train}) {limit} per task"
    return words


def adapt_stage(ev: Evaluation) -> AdaptReport | None:
    """New rows of the task table, trained jointly, for the tasks the checkpoint has none for (None: none needed);
    with --adapt-replay, rows of the checkpoint's own training tasks beside them. Saved in --out as it goes."""
    if not new_tasks(ev.layout, ev.tasks) and "adaptation" not in ev.config:
        return None
    cfg = ev.cfg
    where = str(Path(ev.loaded["checkpoint"]) / "config.json")
    replay = replay_tasks(ev.config, where, ev.tasks) if cfg.adapt.replay_share() > 0 else []
    adapt_cfg = replace(cfg.adapt, steps=cfg.adapt_steps(), replay=cfg.adapt.replay_share())
    seconds = ev.budget.adaptation_seconds(sum(answer_tokens(ev, t) for t in ev.tasks))
    adapted = adapt(ev.model, ev.tasks, ev.layout, adapt_cfg, ev.context_tokens, ev.device, cfg.seed, ev.amp_dtype,
                    replay=replay, seconds=seconds, folder=ev.out / resume.ADAPTED, base_config=ev.config,
                    compile=cfg.compile)
    loss = f", loss {adapted.first_loss:.3f} -> {adapted.last_loss:.3f}" if adapted.first_loss is not None else ""
    print(f"adapted {adapted.tasks} new task embeddings: {adapted.steps} steps in {adapted.seconds:.0f}s{loss}"
          + (f" ({ev.budget.words()})" if ev.budget.bounded else ""), flush=True)
    resume.save_spent(ev.out, ev.budget.spent(), cfg.minutes)
    return adapted


def per_task_training(ev: Evaluation, task: Task, n: int, seconds: float | None):
    """A context in which the model is trained on task's demonstrations (the n-th task) for `seconds` (None: the
    flags' budget), yielding the report; the model is the checkpoint's again after it. Without test-time
    training: nothing, None; without time left in the budget, nothing trained and a report that says so."""
    if ev.ttt_steps <= 0:
        return contextlib.nullcontext()
    if seconds is not None and seconds < MIN_TTT_SECONDS:
        return contextlib.nullcontext(TTTReport(0, None, 0.0, None, None, "no time left in the budget"))
    cfg = replace(ev.cfg.ttt, steps=ev.ttt_steps)
    return task_training(ev.model, task, ev.layout, cfg, ev.device, ev.context_tokens, ev.cfg.seed + n, ev.amp_dtype,
                         seconds=seconds, compile=ev.cfg.compile)


# Below this many seconds a task's test-time training is skipped: its first step may well compile, and a handful of
# steps would only disturb the model (the first Adam steps on a trained model raise the loss, RESULTS.md)
MIN_TTT_SECONDS = 1.0


def predict_group(ev: Evaluation, tasks: list[Task], first_example: int) -> list[Prediction]:
    """Generate, then select, the attempts of a group of tasks. Views are seeded by each example's index
    among all the evaluated examples (first_example: the group's first), so an example gets the same
    views however the tasks are grouped."""
    seed = ev.cfg.seed + first_example
    examples = [e for t in tasks for e in t.examples()]
    with eager():  # the KV cache's shapes vary: no graphs of their own (the blocks may be compiled for fine-tunes)
        found = generate(ev.model, ev.layout, examples, ev.context_tokens, ev.cfg.decoding, ev.amp_dtype, seed)
        return select(ev.model, ev.layout, found, ev.context_tokens, ev.cfg.decoding, ev.amp_dtype, seed)


def answer_tokens(ev: Evaluation, task: Task) -> int:
    """What a task's prediction decodes at most: views x the answer limit of each test input (the budget's
    estimate of its time)."""
    views = ev.cfg.decoding.views or ev.layout.default_views
    return views * sum(answer_limit(e.hidden(), ev.cfg.decoding.limit_slack) for e in task.examples())


def not_predicted(task: Task) -> list[Prediction]:
    """The attempts of a task the budget did not reach: its test inputs, so that submission.json stays valid."""
    return [Prediction(e, [e.test.input], "not predicted: the budget ran out") for e in task.examples()]


def predict_task(ev: Evaluation, task: Task, n: int, first_example: int) -> tuple[list[Prediction], dict]:
    """One task's test-time training and prediction within its share of the budget; its results.json entry."""
    tokens = answer_tokens(ev, task)
    if not ev.budget.can_predict(tokens):
        ev.budget.not_predicted.append(task.id)
        return not_predicted(task), {"seconds": 0.0}
    started = time.time()
    with per_task_training(ev, task, n, ev.budget.task_seconds(len(ev.tasks) - n, tokens)) as report:
        began = time.time()
        found = predict_group(ev, [task], first_example)
        ev.budget.predicted(time.time() - began, tokens)
        # the eval loss of a task trained at test time is its trained model's, measured before it is undone
        scored = task_nll(ev, task) if report is not None and not report.skipped else None
    entry = {"seconds": time.time() - started, **({"ttt": asdict(report)} if report is not None else {})}
    return found, {**entry, **({"nll": scored} if scored else {})}


def task_nll(ev: Evaluation, task: Task) -> list[float] | None:
    """The task's known test outputs' summed NLL and their token count under the model as it is now (teacher
    forced: a measurement, never a training signal); None when no output is known or fits."""
    rows = known_rows(ev, task)
    if not rows:
        return None
    with eager():
        nll, counts = row_nll(ev.model, rows, 8, ev.amp_dtype)
    return [float(nll.sum()), int(counts.sum())]


def predict_stage(ev: Evaluation) -> tuple[list[Prediction], dict[str, dict]]:
    """Every test input's prediction, and per task its seconds (and test-time-training report).

    Greedy decoding without test-time training or a budget predicts all tasks as one group (better
    batching; arc.inference.predict reports its progress). Otherwise tasks go one by one, each under its own
    test-time training and share of the budget, each saved in --out when done, and a line reports each."""
    if ev.ttt_steps <= 0 and ev.cfg.decoding.decode == "greedy" and not ev.budget.bounded:
        started = time.time()
        predictions = predict_group(ev, ev.tasks, 0)
        return predictions, {t.id: {"seconds": (time.time() - started) / max(len(ev.tasks), 1)} for t in ev.tasks}
    predictions, per_task, progress, first_example = [], {}, Progress(len(ev.tasks)), 0
    for n, task in enumerate(ev.tasks):
        kept = resume.saved_task(ev.out, task) if ev.cfg.resume else None
        found, entry = kept or predict_task(ev, task, n, first_example)
        if kept is None:
            resume.save_task(ev.out, task, found, entry)
            resume.save_spent(ev.out, ev.budget.spent(), ev.cfg.minutes)
        first_example += len(task.test)
        predictions += found
        per_task[task.id] = entry
        known = [p.correct for p in found if p.correct is not None]
        words = [ttt_words(entry["ttt"]) if "ttt" in entry else "", "resumed" if kept else "", ev.budget.words(),
                 "not predicted: the budget ran out" if task.id in ev.budget.not_predicted else ""]
        progress.task_done(task.id, all(known) if known else None, " | ".join(w for w in words if w))
    return predictions, per_task


def score_stage(ev: Evaluation, predictions: list[Prediction], per_task: dict[str, dict],
                adapted: AdaptReport | None) -> dict:
    """results.json's content: exact-match scores (arc.inference.results), each task's seconds, test-time
    training report and eval loss (mean NLL per output token of its known test outputs), and the run's
    settings."""
    cfg = ev.cfg
    results = score_tasks(ev.tasks, predictions)
    for task_id, entry in results["tasks"].items():
        entry.update(per_task.get(task_id, {}))
    results["eval_loss"], task_loss = eval_loss(ev, per_task)
    if results["eval_loss"] is not None and not math.isfinite(results["eval_loss"]):
        # the weights were checked finite when loaded (and after adaptation): the arithmetic overflowed
        raise DivergenceError(f"the eval loss is {results['eval_loss']}: the model's outputs are not finite numbers "
                              f"(weights too large for {ev.amp_dtype or 'fp32'} arithmetic?); nothing was written")
    for task_id, loss in task_loss.items():
        results["tasks"][task_id]["loss"] = loss
    results.update(checkpoint=ev.checkpoint, adapter=cfg.adapter, step=ev.step, loaded=ev.loaded, data=cfg.data,
                   split=cfg.split, task_set=ev.task_set, method=ev.method, decoding=asdict(cfg.decoding),
                   ttt=asdict(replace(cfg.ttt, steps=ev.ttt_steps)) if ev.ttt_steps > 0 else None,
                   layout=ev.layout.name,
                   adapt=asdict(adapted) if adapted else None, minutes=cfg.minutes,
                   not_predicted=list(ev.budget.not_predicted),
                   seconds_total=ev.budget.spent(), seconds_per_task=ev.budget.spent() / max(len(ev.tasks), 1))
    return results


def known_rows(ev: Evaluation, task: Task) -> list[EncodedRow]:
    """The scored rows of the task's test inputs whose output is known (those that fit the context)."""
    return ev.layout.scored_rows([e for e in task.examples() if e.test.output is not None], ev.context_tokens)[0]


def eval_loss(ev: Evaluation, per_task: dict[str, dict]) -> tuple[float | None, dict[str, float]]:
    """The mean NLL per output token of the known test outputs, over all tasks and per task: a task trained at
    test time by its trained model (measured then, per_task's "nll"), the others by the model as it is now."""
    sums = {task_id: entry["nll"] for task_id, entry in per_task.items() if "nll" in entry}
    rows = {t.id: known_rows(ev, t) for t in ev.tasks if t.id not in sums}
    flat, groups = [r for rs in rows.values() for r in rs], np.array([k for k, rs in rows.items() for _ in rs])
    if flat:  # the other tasks' rows scored together (batched by length across tasks)
        with eager():
            nll, counts = row_nll(ev.model, flat, 8, ev.amp_dtype)
        sums |= {task_id: [float(nll[groups == task_id].sum()), int(counts[groups == task_id].sum())]
                 for task_id in dict.fromkeys(groups.tolist())}
    if not sums:
        return None, {}
    total = sum(nll for nll, _ in sums.values()) / max(sum(count for _, count in sums.values()), 1)
    return total, {task_id: nll / max(count, 1) for task_id, (nll, count) in sums.items()}


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
    budget = Budget(None if cfg.minutes is None else cfg.minutes * 60, cfg.adapt_share)  # the clock starts here
    validate(cfg)  # every flag, before any work (each field's rule, EvalConfig.problems and its nested configs')
    ev = open_evaluation(cfg, budget)
    adapted = adapt_stage(ev)
    predictions, per_task = predict_stage(ev)
    results = score_stage(ev, predictions, per_task, adapted)
    write_stage(ev, results, predictions)
    return results

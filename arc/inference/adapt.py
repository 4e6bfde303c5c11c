"""Joint adaptation: predict tasks a pair-layout checkpoint was never trained on.

A pair-layout model knows a task only through its learned embedding (arc.model.transformer): a task that was not
among the checkpoint's tasks has no row in the table. Its demonstrations are given at test time, so they can be
trained on, as training did for the evaluated tasks. `adapt` grows the table by one row per new task (started at
the mean of the trained rows), then trains on the new tasks' demonstration pairs, all new tasks jointly, under
the same augmentations as training (D8 transform and colour permutation per row), on the training step (packed
sequences, compiled, bf16 where it pays: arc.training.steps), for a budget of steps and/or seconds:

    embeddings  only the new rows move (the rest of the model is frozen, and the rows of the tasks it
                was trained on stay bitwise equal): cheap, and the model's skills stay as trained
    full        every parameter moves: more capacity for tasks unlike the training tasks, at the risk of
                unlearning what the rest of the table relies on; `replay` mixes in that share of rows from the
                checkpoint's own training tasks (replay_tasks) so that it is not forgotten

It is train.py continued on new tasks, and it saves and resumes as train.py does: every `save_every` steps (or
SAVE_SECONDS of adaptation) the adapted model, its optimiser and random state and its clock go into a step folder
of `folder` (arc.model.checkpoint: complete or absent), which is also a checkpoint evaluate.py can load. A run
killed during adaptation continues from there (resume), bitwise when its budget is in steps.

The new tasks reach the sampler through Task.without_test_outputs: their test outputs never can. Replay tasks are
the checkpoint's own (rebuilt from its config.json), less any that match an evaluated task by id or content.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from arc.data.tasks import Task, check_no_leak, exclude_overlap
from arc.inference.config import BUDGET_STEPS, AdaptConfig
from arc.infra.errors import ConfigError, DivergenceError
from arc.layouts.rows import Layout, NoRows
from arc.model.checkpoint import has_checkpoint, load_train_state, read_config, save_checkpoint
from arc.model.transformer import Transformer
from arc.training.config import read_training
from arc.training.optim import fine_tune_recipe
from arc.training.steps import StepsReport, TrainingClock, compile_once, take_steps, trainable
from arc.training.data import select_data

SAVE_SECONDS = 300.0  # save_every 0: a save after every this many seconds of adaptation (a kill loses at most this)
PROGRESS_STEPS = 50  # a progress line every this many steps
MIN_SECONDS = 1.0  # a budget below this many seconds trains no step (the first would compile, the rest be too few)


@dataclass
class AdaptReport:
    tasks: int  # tasks that got a new embedding
    steps: int  # optimizer steps taken in all (fewer than asked when the time ran out), resumed ones included
    seconds: float  # seconds of adaptation (training time, resumed runs included)
    first_loss: float | None  # training loss per output token at the first and last step of this process
    last_loss: float | None
    replay_tasks: int = 0  # tasks the replayed rows came from
    resumed_at: int | None = None  # the step a resumed adaptation continued from


@dataclass
class Adaptation:
    """What the steps of one adaptation share (set up by `adapt`), and where it is saved."""

    model: Transformer
    layout: Layout
    cfg: AdaptConfig
    new: list[Task]
    steps: int  # the step budget
    seconds: float  # the time budget (0: none)
    optimizer: torch.optim.Optimizer
    clock: TrainingClock
    folder: Path | None  # where it is saved (None: not saved)
    base_config: dict  # the checkpoint's config.json: what the saved one extends
    replay_tasks: int
    started: float  # time.time() when this process began adapting
    last_save: float = 0.0  # clock.seconds at the last save
    checkpoint_step: int | None = None  # the training step of the checkpoint adapted


def new_tasks(layout: Layout, tasks: list[Task]) -> list[Task]:
    """The tasks the layout's task table has no row for."""
    return [t for t in tasks if not layout.knows(t.id)]


def replay_tasks(config: dict, where: str, evaluated: list[Task]) -> list[Task]:
    """The tasks a checkpoint trained on, rebuilt from its config.json (train.py's own data selection), less any
    that match an evaluated task by id or content; the evaluated tasks it knows join them without their test
    outputs (their demonstrations were trained on; their answers never are). ConfigError when the data it names
    cannot give back its task table."""
    trained, heldout, _ = select_data(read_training(config, where))
    table = list(config.get("task_ids", []))  # (an adapted checkpoint's table: its own tasks, then the new ones)
    if [t.id for t in trained + heldout] != table[: len(trained) + len(heldout)]:
        raise ConfigError(f"{where}: its training tasks cannot be rebuilt from the data its config names (the task "
                          "table differs): adapt without replay (--adapt-replay 0)")
    kept, _ = exclude_overlap(trained + [t.without_test_outputs() for t in heldout], evaluated)
    check_no_leak([t for t in kept if any(p.output is not None for p in t.test)], evaluated)
    own = {t.id for t in trained + heldout}
    return kept + [t.without_test_outputs() for t in evaluated if t.id in own]


def _too_long(new: list[Task], error: NoRows, model: Transformer) -> ConfigError:
    """The demonstrations do not fit (or too rarely) in the token budget: what an evaluate.py user can change."""
    return ConfigError(f"cannot adapt to {' '.join(t.id for t in new[:8])}: {error}: raise --context-tokens "
                       f"(at most the model's max_seq_len {model.cfg.max_seq_len})")


def _save(ad: Adaptation, step: int, finished: bool) -> None:
    """The adapted model as a checkpoint of `folder` (its grown task table in config.json), with what resumes it."""
    ad.last_save = ad.clock.seconds
    if ad.folder is None:
        return
    config = {**ad.base_config, "model": asdict(ad.model.cfg), "task_ids": list(ad.layout.task_ids), "step": step,
              "adaptation": {"tasks": [t.id for t in ad.new], "checkpoint_step": ad.checkpoint_step,
                             "steps": ad.steps, "seconds": ad.seconds,
                             "config": asdict(ad.cfg), "finished": finished, "trained_seconds": ad.clock.seconds}}
    state = {"optimizer": ad.optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
             "training_seconds": ad.clock.seconds}
    save_checkpoint(ad.folder, ad.model, config, ad.layout.tokenizer, state)


def _after_step(ad: Adaptation, done: int, loss: float, lr: float) -> None:
    """A progress line every PROGRESS_STEPS steps; a save every save_every steps (or SAVE_SECONDS)."""
    if done % PROGRESS_STEPS == 0:
        budget = f" of {ad.seconds:.0f}s" if ad.seconds else ""
        steps = f"/{ad.steps}" if ad.steps < BUDGET_STEPS else ""  # (the budget's cap: no count worth printing)
        print(f"adapting: step {done}{steps} | loss {loss:.3f} | lr {lr:.2e} | trained {ad.clock.seconds:.0f}s"
              f"{budget}", flush=True)
    every = ad.cfg.save_every
    if (every and done % every == 0) or (not every and ad.clock.seconds - ad.last_save >= SAVE_SECONDS):
        _save(ad, done, finished=False)


def adapt(model: Transformer, tasks: list[Task], layout: Layout, cfg: AdaptConfig, row_tokens: int,
          device: torch.device, seed: int = 0, amp_dtype: torch.dtype | None = None, *, replay: list[Task] = (),
          seconds: float | None = None, folder: str | Path | None = None, base_config: dict | None = None,
          compile: bool = False) -> AdaptReport:
    """Give every task of `tasks` that the layout's task table lacks a row (in the model and the layout), and
    train as cfg says on rows seeded by `seed` (replay: the checkpoint's own tasks, cfg.replay of the rows), for
    cfg.steps steps or `seconds` (None: cfg.seconds per new task; 0: no limit), saving into `folder` (a run folder:
    base_config is the checkpoint's config.json). A model loaded from such a folder mid-way (its config.json says
    "adaptation", not finished) continues from its saved step instead. Leaves the model in the mode it was in,
    every requires_grad as it was."""
    resumed = _resume_point(folder, layout, tasks)
    new = resumed["tasks"] if resumed else new_tasks(layout, tasks)
    if not new or (resumed and resumed["finished"]):
        return AdaptReport(len(new), resumed["step"] if resumed else 0, resumed["seconds"] if resumed else 0.0,
                           None, None)
    if cfg.steps <= 0:
        raise ConfigError(f"{len(new)} task(s) have no embedding in this checkpoint "
                          f"({' '.join(t.id for t in new[:8])}): adapt to them with --adapt-steps N, or evaluate the "
                          "tasks it was trained on")
    if not resumed:
        model.add_tasks(len(new))
        layout.add_tasks([t.id for t in new])
    # the time limit (0: none): the flags' per new task, the budget's, or a resumed adaptation's own
    budget = resumed["budget_seconds"] if resumed else cfg.seconds * len(new) if seconds is None else seconds
    cap = cfg.steps
    if seconds is not None and not resumed and seconds < MIN_SECONDS:  # a budget with (next to) no time for it
        print(f"adapting: the budget leaves {seconds:.1f}s, too little for a step: the {len(new)} new task rows stay "
              "at the mean of the trained rows", flush=True)
        cap = 0
    try:
        sampler = layout.demonstration_sampler(new, row_tokens, seed, replay=replay, replay_share=cfg.replay)
    except NoRows as error:
        raise _too_long(new, error, model) from None
    batches = layout.batches(sampler, cfg.batch_size, row_tokens)
    # embeddings: only the new rows get gradients, and without weight decay the trained rows stay bitwise equal
    params = [model.embed_task.weight] if cfg.train == "embeddings" else None
    recipe = fine_tune_recipe(cfg.lr)
    with trainable(model, params) as trained:
        ad = Adaptation(model, layout, cfg, new, cfg.steps, budget, recipe.optimizer_for(model), TrainingClock(),
                        Path(folder) if folder else None, base_config or {}, len(replay), time.time())
        ad.checkpoint_step = (base_config or {}).get("adaptation", {}).get("checkpoint_step",
                                                                           (base_config or {}).get("step"))
        start = _restore(ad, resumed) if resumed else 0
        if compile and cap > start:
            compile_once(model, batches(start), device, amp_dtype)
        try:
            report = take_steps(model, ad.optimizer, trained, lambda step: [batches(step)],
                                recipe.schedule_for(cfg.steps, budget or None), range(start, cap),
                                recipe.grad_clip, device, amp_dtype, clock=ad.clock,
                                after_step=partial(_after_step, ad))
        except DivergenceError as error:  # the model is unusable now: nothing is predicted with it
            raise DivergenceError(f"adapting {len(new)} new task embedding(s): {error} "
                                  "(try a lower --adapt-lr)") from None
        except NoRows as error:  # rows fit too rarely in the evaluation's token budget
            raise _too_long(new, error, model) from None
        _save(ad, start + report.steps, finished=True)
    return _report(ad, start, report, resumed is not None)


def _report(ad: Adaptation, start: int, report: StepsReport, resumed: bool) -> AdaptReport:
    return AdaptReport(len(ad.new), start + report.steps, ad.clock.seconds, report.first_loss, report.last_loss,
                       ad.replay_tasks, start if resumed else None)


def _resume_point(folder: str | Path | None, layout: Layout, tasks: list[Task]) -> dict | None:
    """What a model loaded from an unfinished (or finished) adaptation's folder says of it: its new tasks, its
    step and budget, whether it finished; None when the folder holds no adaptation."""
    if folder is None or not has_checkpoint(folder):
        return None
    config = read_config(folder)
    saved = config.get("adaptation")
    if not isinstance(saved, dict) or not all(layout.knows(task_id) for task_id in saved.get("tasks", [])):
        return None
    by_id = {t.id: t for t in tasks}
    missing = [task_id for task_id in saved["tasks"] if task_id not in by_id]
    if missing:
        raise ConfigError(f"{folder}: an adaptation to other tasks ({' '.join(missing[:4])} ...): --resume "
                          "continues the same evaluation (the same tasks)")
    return {"tasks": [by_id[task_id] for task_id in saved["tasks"]], "step": int(config["step"]),
            "finished": bool(saved.get("finished")), "budget_seconds": float(saved.get("seconds", 0.0)),
            "seconds": float(saved.get("trained_seconds", 0.0))}


def _restore(ad: Adaptation, resumed: dict) -> int:
    """The saved optimiser state, random state and clock of an unfinished adaptation; returns its step."""
    state = load_train_state(ad.folder)
    ad.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    ad.clock.seconds = ad.last_save = float(state.get("training_seconds", 0.0))
    print(f"adapting: resumed at step {resumed['step']} ({ad.clock.seconds:.0f}s trained)", flush=True)
    return resumed["step"]

"""The rows a training run learns from: which tasks (train.py's data flags, and the leak guard between the training
tasks and the evaluated ones), the training rows' sampler and batches, and the held-out rows of the eval loss.

    select_data     the training tasks (+ extra data, generated tasks), the evaluated tasks, the ids left out
    training_data   the sampler (evaluated tasks only without their test outputs), its batches, the eval rows

Joint adaptation (arc.inference.adapt) rebuilds a checkpoint's own training tasks with select_data, to replay them.
"""
from __future__ import annotations

from dataclasses import dataclass

from arc.data.generators import generated_tasks
from arc.data.tasks import Task, check_no_leak, exclude_overlap, load_tasks, select_tasks
from arc.layouts.rows import Batches, EncodedRow, Layout
from arc.layouts.sampling import Sampler
from arc.training.config import TrainConfig


@dataclass
class TrainingData:
    sampler: Sampler  # draws the training rows
    batches: Batches  # training batch number i, padded or packed (the layout's choice)
    eval_rows: list[EncodedRow]  # the evaluated tasks' test outputs, un-augmented (the eval loss only)
    eval_skipped: int  # test outputs longer than the row budget (left out of the eval loss)
    n_train_tasks: int  # training tasks after the exclusions
    excluded: list[str]  # ids left out of the training tasks (evaluated, or copies of evaluated tasks)


def select_data(cfg: TrainConfig) -> tuple[list[Task], list[Task], list[str]]:
    """The training tasks, the evaluated (held-out) tasks with their test outputs, and the ids left out of
    the training tasks. The leak guard lives here: no evaluated task (by id or content) is a training task.
    Extra tasks (cfg.extra_data, e.g. ARC-AGI-2's training set) join the training tasks, less those already
    among them or evaluated; generated tasks (cfg.layout.generated_tasks per generator family) join them too."""
    train_tasks, excluded = load_tasks(cfg.data, cfg.split), []
    heldout_tasks = select_tasks(load_tasks(cfg.eval_data, cfg.eval_split), task_set=cfg.eval_set)
    if cfg.extra_data and cfg.extra_data != "none":
        data, _, split = cfg.extra_data.partition(":")
        # ARC-AGI-2 training holds most ARC-AGI-1 training tasks (same id or reordered pairs): one row each
        extra, _ = exclude_overlap(load_tasks(data, split or "training"), train_tasks)
        extra, evaluated = exclude_overlap(extra, heldout_tasks)
        train_tasks, excluded = train_tasks + extra, evaluated
    if cfg.layout.generated_tasks:
        train_tasks = train_tasks + generated_tasks(cfg.layout.generated_tasks)
    if cfg.exclude_evaluated and cfg.exclude_evaluated != "none":
        data, _, split = cfg.exclude_evaluated.partition(":")
        train_tasks, dropped = exclude_overlap(train_tasks, load_tasks(data, split or "evaluation"))
        excluded += dropped
    if (cfg.eval_data, cfg.eval_split) == (cfg.data, cfg.split):
        # tasks held out of the training split itself (a dev set: --eval-split training --eval-set dev20)
        # leave the training tasks by id; any other copy of them is still refused below
        held = {t.id for t in heldout_tasks}
        excluded += sorted(held)
        train_tasks = [t for t in train_tasks if t.id not in held]
    check_no_leak(train_tasks, heldout_tasks)
    return train_tasks, heldout_tasks, excluded


def training_data(layout: Layout, train_tasks: list[Task], heldout_tasks: list[Task], row_tokens: int, seed: int,
                  excluded: list[str] = (), batch_size: int = 1) -> TrainingData:
    """The training rows' sampler, its batches and the held-out rows. The evaluated tasks reach the sampler
    only as a test-time learner sees them: their test outputs are dropped here (Task.without_test_outputs),
    and the pair sampler refuses any task that still has one."""
    sampler = layout.sampler(train_tasks, [t.without_test_outputs() for t in heldout_tasks], row_tokens, seed)
    eval_rows, skipped = layout.scored_rows([e for t in heldout_tasks for e in t.examples()], row_tokens)
    return TrainingData(sampler, layout.batches(sampler, batch_size, row_tokens), eval_rows, skipped,
                        len(train_tasks), list(excluded))

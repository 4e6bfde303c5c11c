"""Test-time adaptation: predict tasks a pair-layout checkpoint was never trained on.

A pair-layout model knows a task only through its learned embedding (arc.model.transformer): a task that was not
among the checkpoint's evaluated tasks has no row in the table. Its demonstrations are given at test
time, so they can be trained on, as training did for the evaluated tasks. `adapt` grows the table by one
row per new task (started at the mean of the trained rows), then trains on the new tasks'
demonstration pairs, all new tasks jointly, under the same augmentations as training (D8 transform and
colour permutation per row), for a budget of steps and/or seconds:

    embeddings  only the new rows move (the rest of the model is frozen, and the rows of the tasks it
                was trained on stay bitwise equal): cheap, and the model's skills stay as trained
    full        every parameter moves: more capacity for tasks unlike the training tasks, at the risk of
                unlearning what the rest of the table relies on

The new tasks reach the sampler through Task.without_test_outputs: their test outputs never can.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from arc.data.tasks import Task
from arc.infra.errors import ConfigError, DivergenceError
from arc.inference.config import AdaptConfig
from arc.layouts.rows import Layout, NoRows
from arc.model.transformer import Transformer
from arc.training.optim import fine_tune_recipe
from arc.training.steps import fine_tune


def _too_long(new: list[Task], error: NoRows, model: Transformer) -> ConfigError:
    """The demonstrations do not fit (or too rarely) in the token budget: what an evaluate.py user can change."""
    return ConfigError(f"cannot adapt to {' '.join(t.id for t in new[:8])}: {error}: raise --context-tokens "
                       f"(at most the model's max_seq_len {model.cfg.max_seq_len})")


@dataclass
class AdaptReport:
    tasks: int  # tasks that got a new embedding
    steps: int  # optimizer steps taken (fewer than asked when the time ran out)
    seconds: float
    first_loss: float | None  # training loss per output token at the first and last step
    last_loss: float | None


def adapt(model: Transformer, tasks: list[Task], layout: Layout, cfg: AdaptConfig, row_tokens: int,
          device: torch.device, seed: int = 0, amp_dtype: torch.dtype | None = None) -> AdaptReport:
    """Give every task of `tasks` that the layout's task table lacks a row (in the model and the layout),
    and train as cfg says, on rows seeded by `seed`. Leaves the model in the mode it was in, every
    requires_grad as it was."""
    new = [t for t in tasks if not layout.knows(t.id)]
    if not new:
        return AdaptReport(0, 0, 0.0, None, None)
    if cfg.steps <= 0:
        raise ConfigError(f"{len(new)} task(s) have no embedding in this checkpoint "
                         f"({' '.join(t.id for t in new[:8])}): adapt to them with --adapt-steps N, or evaluate the "
                         "tasks it was trained on")
    if cfg.train not in ("embeddings", "full"):
        raise ConfigError(f"--adapt-train {cfg.train!r}: embeddings | full")
    model.add_tasks(len(new))
    layout.add_tasks([t.id for t in new])
    try:
        sampler = layout.demonstration_sampler(new, row_tokens, seed)
    except NoRows as error:
        raise _too_long(new, error, model) from None

    def progress(done: int, loss: float, lr: float) -> None:
        if done % 50 == 0:  # a long adaptation says how far it is (one line every 50 steps)
            budget = f" of {cfg.seconds * len(new):.0f}s" if cfg.seconds else ""
            elapsed = time.time() - started
            print(f"adapting: step {done}/{cfg.steps} | loss {loss:.3f} | {elapsed:.0f}s{budget}", flush=True)

    started = time.time()
    # embeddings: only the new rows get gradients, and without weight decay the trained rows stay bitwise equal
    params = [model.embed_task.weight] if cfg.train == "embeddings" else None
    try:
        report = fine_tune(model, lambda step: sampler.batch(step, cfg.batch_size), fine_tune_recipe(cfg.lr),
                           cfg.steps, cfg.seconds * len(new), device, amp_dtype, params, progress)
    except DivergenceError as error:  # the model is unusable now: nothing is predicted with it
        raise DivergenceError(f"adapting {len(new)} new task embedding(s): {error} (try a lower --adapt-lr)") from None
    except NoRows as error:  # rows fit too rarely in the evaluation's token budget
        raise _too_long(new, error, model) from None
    return AdaptReport(len(new), report.steps, time.time() - started, report.first_loss, report.last_loss)

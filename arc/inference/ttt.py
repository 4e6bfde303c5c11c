"""Test-time training (TTT): fine-tune a fresh LoRA on one task's own demonstrations, then predict it.

An ARC task is a new little world: its demonstrations show a rule the model may never have seen.
The strongest ARC systems (Akyürek et al. 2024, "The Surprising Effectiveness of Test-Time Training";
the ARChitects' ARC Prize 2024 entry) spend part of their score on this step: before predicting a task,
they train a small adapter on that task alone, so the rule is partly written into weights instead of
being inferred from the context in one forward pass.

The rows come from the task's demonstrations only, as its layout draws them for a test-time learner
(Layout.demonstration_sampler; in-context: leave-one-out rows, each demonstration in turn the pseudo-test
and the others its context), each under a fresh augmentation. The test output is never used.

Usage, per task:
    with task_adapter(model, task, layout, TTTConfig(), device, row_tokens) as report:
        ...decode the task's test inputs with `model`...
    # here the model is exactly the base model again: same modules, bitwise-equal weights
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from arc.data.tasks import Task
from arc.inference.config import TTTConfig
from arc.infra.errors import ConfigError, DivergenceError
from arc.layouts.rows import Layout, NoRows
from arc.model.lora import add_lora, lora_modules, lora_parameters, remove_lora
from arc.training.fit import fit, restored, trainable
from arc.training.optim import make_optimizer


@dataclass
class TTTReport:
    steps: int  # optimizer steps taken
    rows: int  # training rows drawn (steps x batch size)
    seconds: float  # wall time of building rows and training
    first_loss: float | None  # training loss per output token at the first step (None: no step)
    last_loss: float | None  # ... and at the last step (different rows: a noisy but honest signal)
    skipped: str | None  # why TTT did not run for this task (then no adapter was added), else None


def _refuse_existing_adapter(model: nn.Module) -> None:
    # A second adapter cannot be added on top of a first (add_lora finds no plain nn.Linear left), and
    # removing ours afterwards must not take someone else's with it.
    if lora_modules(model):
        raise ValueError("test-time training needs a model without LoRA modules; this one has "
                         f"{len(lora_modules(model))} (e.g. a trained adapter: evaluate TTT on its base)")


def test_time_train(model: nn.Module, task: Task, layout: Layout, cfg: TTTConfig, device: torch.device,
                    row_tokens: int, seed: int = 0, autocast_dtype: torch.dtype | None = None) -> TTTReport:
    """Add a fresh LoRA to `model` and train it on rows of the task's demonstrations (seed: the rows and
    the adapter's initialisation, A; B starts at zero).

    Leaves the adapter in place, unmerged, and the model in eval mode, ready to decode. Prefer
    task_adapter, which also takes the adapter out again. When the layout can build no row (fewer than
    2 demonstrations for leave-one-out, or none fits) nothing is added and the report says why.
    """
    _refuse_existing_adapter(model)
    started = time.time()
    try:
        sampler = layout.demonstration_sampler([task], cfg.max_row_tokens or row_tokens, seed, cfg.augment)
    except NoRows as why:
        model.eval()
        return TTTReport(0, 0, time.time() - started, None, None, str(why))

    # Seed the adapter's A matrices without disturbing the caller's random streams.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        add_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets)
    warmup = min(4, cfg.steps)
    with trainable(model, lora_parameters(model)) as params:
        # No weight decay: a few dozen steps from B = 0 leave nothing for decay to tame.
        optimizer = make_optimizer(model, cfg.lr, weight_decay=0.0)
        try:
            report = fit(model, optimizer, params, lambda step: [sampler.batch(step, cfg.batch_size)],
                         lambda step: cfg.lr * min(1.0, (step + 1) / warmup), range(cfg.steps), 1.0, device, autocast_dtype)
        except DivergenceError as error:
            raise DivergenceError(f"test-time training of task {task.id}: {error} (try a lower --ttt-lr)") from None
        except NoRows as error:  # leave-one-out rows fit too rarely in the token budget
            raise ConfigError(f"test-time training of task {task.id}: {error}: raise --ttt-max-row-tokens "
                              "(or --context-tokens)") from None
    model.eval()
    return TTTReport(report.steps, report.steps * cfg.batch_size, time.time() - started, report.first_loss, report.last_loss, None)


test_time_train.__test__ = False  # its name starts with "test": tell pytest it is not a test when imported


@contextlib.contextmanager
def task_adapter(model: nn.Module, task: Task, layout: Layout, cfg: TTTConfig, device: torch.device,
                 row_tokens: int, seed: int = 0, autocast_dtype: torch.dtype | None = None) -> Iterator[TTTReport]:
    """Run test_time_train and yield its report with the adapter active; on leaving (even by an
    exception) remove the adapter and restore requires_grad flags and train/eval mode.

    The adapter is never merged: W + BA - BA is not bitwise W in floating point, and the next task
    must start from exactly the base model. Removing the wrapper modules returns the original
    nn.Linear objects, whose weights the optimizer never touched.
    """
    _refuse_existing_adapter(model)  # before the try: the finally must only ever remove our adapter
    with restored(model):
        try:
            yield test_time_train(model, task, layout, cfg, device, row_tokens, seed, autocast_dtype)
        finally:
            remove_lora(model)

"""Test-time training (TTT): fine-tune a fresh LoRA on one task's own demonstrations, then predict it.

An ARC task is a new little world: its demonstrations show a rule the model may never have seen.
The strongest ARC systems (Akyürek et al. 2024, "The Surprising Effectiveness of Test-Time Training";
the ARChitects' ARC Prize 2024 entry) spend part of their score on this step: before predicting a task,
they train a small adapter on that task alone, so the rule is partly written into weights instead of
being inferred from the context in one forward pass.

The training data comes from the demonstrations only (the test output is never used, and the test
input is never even seen): leave-one-out rows make each demonstration in turn the pseudo-test and the
others its context. Every row gets a fresh augmentation (D8 transform, colour permutation keeping 0,
demonstration order), so a 3-demonstration task yields many distinct rows.

Usage, per task:
    with task_adapter(model, task.train, InContextRows(tokenizer), TTTConfig(), device) as report:
        ...decode the task's test inputs with `model`...
    # here the model is exactly the base model again: same modules, bitwise-equal weights
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from arc.data.augment import random_augmentation
from arc.data.tasks import Example, Pair
from arc.inference.config import TTTConfig
from arc.layouts.rows import EncodedRow, InContextRows, collate
from arc.model.lora import add_lora, lora_modules, lora_parameters, remove_lora
from arc.training.optim import BETAS, optimizer_step, set_lr


@dataclass
class TTTReport:
    steps: int  # optimizer steps taken
    rows: int  # leave-one-out rows built (rows that did not fit in max_len are not counted)
    seconds: float  # wall time of building rows and training
    first_loss: float | None  # training loss per output token at the first step (None: no step)
    last_loss: float | None  # ... and at the last step (different rows: a noisy but honest signal)
    skipped: str | None  # why TTT did not run for this task (then no adapter was added), else None


def leave_one_out_rows(demos: list[Pair], rows: InContextRows, max_len: int, rng: np.random.Generator,
                       count: int, augment: bool = True) -> list[EncodedRow]:
    """Up to `count` training rows built from the demonstrations alone.

    Row i holds out demonstration i % n as its pseudo-test (so every demonstration is held out equally
    often) and shows the others as context. With fewer than 2 demonstrations there is no context to
    show, so no row can be built: [] (the caller skips TTT for that task). Rows that do not fit in
    max_len even with one context demonstration are dropped. The loss covers the pseudo-test output and
    the context outputs after the first, as in pre-training with train_on_demo_outputs.
    """
    n = len(demos)
    if n < 2:
        return []
    encoded = []
    for i in range(count):
        held = i % n
        example = Example("ttt", 0, demos[:held] + demos[held + 1:], demos[held])
        if augment:
            example = random_augmentation(rng, n - 1).apply(example)
        fitted = rows.fit(example, max_len)
        if fitted is not None:
            encoded.append(rows.encode(fitted, train_on_demo_outputs=True))
    return encoded


def _refuse_existing_adapter(model: nn.Module) -> None:
    # A second adapter cannot be added on top of a first (add_lora finds no plain nn.Linear left), and
    # removing ours afterwards must not take someone else's with it.
    if lora_modules(model):
        raise ValueError("test-time training needs a model without LoRA modules; this one has "
                         f"{len(lora_modules(model))} (e.g. a trained adapter: evaluate TTT on its base)")


def test_time_train(model: nn.Module, demos: list[Pair], layout: InContextRows, cfg: TTTConfig,
                    device: torch.device, autocast_dtype: torch.dtype | None = None) -> TTTReport:
    """Add a fresh LoRA to `model` and train it on the demonstrations' leave-one-out rows.

    Leaves the adapter in place, unmerged, and the model in eval mode, ready to decode. Prefer
    task_adapter, which also takes the adapter out again. Without rows (fewer than 2 demonstrations,
    or none fits) nothing is added and the report says why.
    """
    _refuse_existing_adapter(model)
    started = time.time()
    max_len = cfg.max_row_tokens or model.cfg.max_seq_len
    rng = np.random.default_rng(cfg.seed)
    rows = leave_one_out_rows(demos, layout, max_len, rng, max(1, cfg.steps) * cfg.batch_size, cfg.augment)
    if not rows:
        why = (f"{len(demos)} demonstration(s): leave-one-out needs at least 2" if len(demos) < 2
               else f"no leave-one-out row fits in max_len {max_len}")
        model.eval()
        return TTTReport(0, 0, time.time() - started, None, None, why)

    # Seed the adapter's A matrices without disturbing the caller's random streams.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        add_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets)
    params = lora_parameters(model)
    # No weight decay: a few dozen steps from B = 0 leave nothing for decay to tame.
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=BETAS, weight_decay=0.0)
    warmup = min(4, cfg.steps)
    losses = []
    model.train()
    for step in range(cfg.steps):
        set_lr(optimizer, cfg.lr * min(1.0, (step + 1) / warmup))
        # Consecutive fresh rows; wraps around when some were dropped for length.
        batch = [rows[(step * cfg.batch_size + j) % len(rows)] for j in range(cfg.batch_size)]
        losses.append(optimizer_step(model, optimizer, params, [collate(batch)], 1.0, device, autocast_dtype))
    model.eval()
    return TTTReport(cfg.steps, len(rows), time.time() - started,
                     losses[0] if losses else None, losses[-1] if losses else None, None)


test_time_train.__test__ = False  # its name starts with "test": tell pytest it is not a test when imported


@contextlib.contextmanager
def task_adapter(model: nn.Module, demos: list[Pair], layout: InContextRows, cfg: TTTConfig,
                 device: torch.device, autocast_dtype: torch.dtype | None = None) -> Iterator[TTTReport]:
    """Run test_time_train and yield its report with the adapter active; on leaving (even by an
    exception) remove the adapter and restore requires_grad flags and train/eval mode.

    The adapter is never merged: W + BA - BA is not bitwise W in floating point, and the next task
    must start from exactly the base model. Removing the wrapper modules returns the original
    nn.Linear objects, whose weights the optimizer never touched.
    """
    _refuse_existing_adapter(model)  # before the try: the finally must only ever remove our adapter
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        yield test_time_train(model, demos, layout, cfg, device, autocast_dtype)
    finally:
        remove_lora(model)
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)

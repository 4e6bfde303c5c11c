"""The one fitting loop: training (arc.training.trainer), test-time training and adaptation (arc.inference)
all run it, and differ only in what they hand it.

    for each step (until the steps run out, or the time budget):
        set the learning rate the schedule gives, take one optimiser step on the step's micro-batches
        (arc.training.optim.optimizer_step), stop on a non-finite loss, then call after_step
    and at the end, stop if the trained weights hold NaN, infinity or values too large to compute with

What to train is said with `trainable` (every parameter but the chosen ones frozen for the duration, the
flags put back afterwards); the batches, the schedule and what happens between steps (logging, eval,
checkpoints) are the caller's.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from arc.infra.distributed import SINGLE, World
from arc.infra.errors import DivergenceError
from arc.layouts.rows import Batch
from arc.model.checkpoint import BEYOND, unusable
from arc.training.optim import optimizer_step, set_lr


@dataclass
class FitReport:
    steps: int  # optimiser steps taken
    seconds: float  # wall time of the loop
    first_loss: float | None  # training loss per target token at the first step (None: no step)
    last_loss: float | None  # ... and at the last step (other rows: a noisy but honest signal)


@contextlib.contextmanager
def restored(model: torch.nn.Module) -> Iterator[None]:
    """On leaving the block (even by an exception), every parameter's requires_grad and the model's
    train/eval mode are put back to what they were on entering it."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@contextlib.contextmanager
def trainable(model: torch.nn.Module, params: Iterable[torch.nn.Parameter] | None = None) -> Iterator[list[torch.nn.Parameter]]:
    """Train only `params` (None: every parameter) inside the block, in train mode; yields the trained
    parameters. On leaving, flags and mode are restored."""
    chosen = list(model.parameters()) if params is None else list(params)
    with restored(model):
        model.requires_grad_(False)
        for p in chosen:
            p.requires_grad_(True)
        model.train()
        yield chosen


def fit(
    forward: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    batches: Callable[[int], list[Batch]],
    lr_at: Callable[[int], float],
    steps: Iterable[int],
    grad_clip: float,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    world: World = SINGLE,
    seconds: float = 0.0,
    after_step: Callable[[int, float, float], None] | None = None,
) -> FitReport:
    """Take the optimiser steps in `steps` (step indices, e.g. range(start, last), or a generator deciding as
    it goes): step s trains on the micro-batches batches(s) at learning rate lr_at(s). seconds > 0 also stops
    the loop once that much time has passed (checked before each step). after_step(done, loss, lr) runs
    after every step, done being s + 1. A non-finite loss raises DivergenceError naming the step, before
    after_step could save anything of it; so do trained weights that end the loop unusable (NaN, infinity,
    or too large to compute with), which a finite loss does not rule out."""
    started, losses = time.time(), []
    for step in steps:
        if seconds and time.time() - started > seconds:
            break
        lr = lr_at(step)
        set_lr(optimizer, lr)
        loss = optimizer_step(forward, optimizer, params, batches(step), grad_clip, device, amp_dtype, world)
        if not math.isfinite(loss):
            raise DivergenceError(f"step {step + 1}: the training loss is {loss}: training diverged")
        losses.append(loss)
        if after_step is not None:
            after_step(step + 1, loss, lr)
    if losses and any(unusable(p) for p in params):
        raise DivergenceError(f"step {step + 1}: the trained weights hold NaN or infinity, or values beyond "
                              f"{BEYOND:.1e} (the loss can stay finite: RMSNorm hides a stream too large to square): "
                              "training diverged")
    return FitReport(len(losses), time.time() - started, losses[0] if losses else None, losses[-1] if losses else None)

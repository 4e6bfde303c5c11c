"""The one loop of optimiser steps: training (arc.training.trainer), joint adaptation and test-time training
(arc.inference) all run it, and differ only in what they hand it.

    take_steps: for each step (until the steps run out, or the budget's seconds of training)
        draw the step's micro-batches, set the learning rate the schedule gives, take one optimiser step
        (arc.training.optim.optimizer_step), stop on a non-finite loss, then call after_step
    and at the end, stop if the trained weights hold NaN, infinity or values too large to compute with

The time a budget counts is a TrainingClock's: the seconds inside the steps (drawing the batches, forward,
backward, the optimiser step), not what after_step does between them (logging, evals, checkpoints).

What to train is said with `trainable` (every parameter but the chosen ones frozen for the duration, the
flags put back afterwards). `compile_training_step` compiles the model's blocks for one batch shape before the
first step. `fine_tune` is the whole of a short training run from a checkpoint (adaptation, test-time training):
a Recipe, a budget, batches; the optimiser and schedule are built from the recipe and dropped afterwards.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from arc.infra.distributed import SINGLE, World
from arc.infra.errors import DivergenceError
from arc.infra.runtime import autocast, compile_regions
from arc.layouts.rows import IGNORE, Batch
from arc.model.checkpoint import BEYOND, unusable
from arc.training.optim import MuonAndAdamW, Recipe, Schedule, optimizer_step, set_lr


@dataclass
class StepsReport:
    steps: int  # optimiser steps taken
    seconds: float  # wall time of the loop
    first_loss: float | None  # training loss per target token at the first step (None: no step)
    last_loss: float | None  # ... and at the last step (other rows: a noisy but honest signal)


class TrainingClock:
    """Seconds spent in training steps (drawing the batches, forward, backward, the optimiser step), resumes
    included when it starts from a checkpoint's count: a time budget's progress. Started as a step begins and
    stopped as it ends, so what happens between steps (evals, checkpoint saves) is not counted; a first step that
    compiles the model is."""

    now = staticmethod(time.perf_counter)  # the clock read (tests put a fake one here)

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds  # training time up to the last finished step (the checkpoint's, after a resume)
        self._started: float | None = None

    def start(self) -> None:
        self._started = self.now()

    def stop(self) -> None:
        self.seconds += self.now() - self._started
        self._started = None


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
def trainable(model: torch.nn.Module, params: Iterable[torch.nn.Parameter] | None = None
              ) -> Iterator[list[torch.nn.Parameter]]:
    """Train only `params` (None: every parameter) inside the block, in train mode; yields the trained
    parameters. On leaving, flags and mode are restored."""
    chosen = list(model.parameters()) if params is None else list(params)
    with restored(model):
        model.requires_grad_(False)
        for p in chosen:
            p.requires_grad_(True)
        model.train()
        yield chosen


def take_steps(
    forward: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer | MuonAndAdamW,
    params: list[torch.nn.Parameter],
    batches: Callable[[int], list[Batch]],
    schedule: Schedule,
    steps: Iterable[int],
    grad_clip: float,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    world: World = SINGLE,
    clock: TrainingClock | None = None,
    after_step: Callable[[int, float, float], None] | None = None,
) -> StepsReport:
    """Take the optimiser steps in `steps` (step indices, e.g. range(start, last)) while the schedule's time budget
    lasts (clock: the training time so far, a fresh one by default): step s trains on the micro-batches
    batches(s) at the learning rate schedule.lr(s, training time). after_step(done, loss, lr) runs after every
    step, done being s + 1, outside the clock. A non-finite loss raises DivergenceError naming the step, before
    after_step could save anything of it; so do trained weights that end the loop unusable (NaN, infinity, or
    too large to compute with), which a finite loss does not rule out."""
    clock = clock or TrainingClock()
    started, losses = time.time(), []
    for step in steps:
        if schedule.over(clock.seconds):
            break
        clock.start()
        micro_batches = batches(step)
        lr = schedule.lr(step, clock.seconds)
        set_lr(optimizer, lr)
        loss = optimizer_step(forward, optimizer, params, micro_batches, grad_clip, device, amp_dtype, world)
        clock.stop()
        if not math.isfinite(loss):
            raise DivergenceError(f"step {step + 1}: the training loss is {loss}: training diverged")
        losses.append(loss)
        if after_step is not None:
            after_step(step + 1, loss, lr)
    if losses and any(unusable(p) for p in params):
        raise DivergenceError(f"step {step + 1}: the trained weights hold NaN or infinity, or values beyond "
                              f"{BEYOND:.1e} (the loss can stay finite: RMSNorm hides a stream too large to "
                              "square): training diverged")
    return StepsReport(len(losses), time.time() - started, losses[0] if losses else None,
                       losses[-1] if losses else None)


def compile_training_step(model: torch.nn.Module, batch: Batch, device: torch.device,
                          amp_dtype: torch.dtype | None) -> float:
    """torch.compile the model's blocks (arc.infra.runtime.compile_regions: one graph serves all of them),
    compiled now by a forward and backward on `batch` (a batch of the steps' shape); returns the seconds it
    took. Packed batches all have that one shape: the graph is static and stays the only one. Padded batches
    vary in length: the graph is dynamic. The model's gradients are cleared afterwards."""
    packed = batch.segments is not None
    batch = batch.to(device)

    def warm_up():
        with autocast(device.type, amp_dtype):
            logits = model(batch.inputs, task=batch.task, transform=batch.transform, segments=batch.segments)
        F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE).backward()

    started = time.time()
    compile_regions(list(model.blocks), dynamic=not packed, warm_up=warm_up)
    model.zero_grad(set_to_none=True)
    return time.time() - started


def compiled_shape(batch: Batch) -> str:
    """The compiled step's shape in words, for the line that reports the compile."""
    if batch.segments is None:
        return "dynamic lengths"
    return f"one static shape, {batch.inputs.shape[0]} x {batch.inputs.shape[1]} tokens"


def compile_once(model: torch.nn.Module, batch: Batch, device: torch.device, amp_dtype: torch.dtype | None) -> None:
    """compile_training_step, the first time a model fine-tunes (its blocks stay compiled for the process; a
    batch of another shape, or other trained parameters, adds a graph by itself): a line says how long it took."""
    if getattr(model, "compiled_for_training", False):
        return
    seconds = compile_training_step(model, batch, device, amp_dtype)
    model.compiled_for_training = True
    print(f"compiled the fine-tuning step ({compiled_shape(batch)}) in {seconds:.1f} s", flush=True)


def fine_tune(model: torch.nn.Module, batches: Callable[[int], Batch], recipe: Recipe, steps: int, seconds: float,
              device: torch.device, amp_dtype: torch.dtype | None = None,
              params: list[torch.nn.Parameter] | None = None,
              after_step: Callable[[int, float, float], None] | None = None, compile: bool = False) -> StepsReport:
    """Train `params` of the model (None: every parameter) in place on batches(0), batches(1), ... for `steps`
    steps or `seconds` of training (0: no time limit), whichever ends first, by the recipe (its optimiser and
    its schedule over that budget, both dropped afterwards); compile: on the compiled training step
    (compile_once). Flags and mode are put back; the weights are not (the caller keeps or undoes them)."""
    with trainable(model, params) as trained:
        if compile and steps > 0:
            compile_once(model, batches(0), device, amp_dtype)
        optimizer = recipe.optimizer_for(model)
        schedule = recipe.schedule_for(steps, seconds or None)
        return take_steps(model, optimizer, trained, lambda step: [batches(step)], schedule, range(steps),
                          recipe.grad_clip, device, amp_dtype, after_step=after_step)

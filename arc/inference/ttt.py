"""Test-time training (TTT): before predicting a task, fine-tune on that task's own demonstrations; afterwards
put the model back exactly as it was.

An ARC task is a new little world: its demonstrations show a rule the model may never have seen, or has
only half learnt. The strongest ARC systems (Akyürek et al. 2024, "The Surprising Effectiveness of
Test-Time Training"; the ARChitects; VARC; for a 7M model, full fine-tuning beat LoRA and embedding-only
updates) spend part of their score on this step: the rule is partly written into weights instead of
being inferred in one forward pass.

What moves (TTTConfig.train):
    full        every parameter (a copy of the weights is kept and written back afterwards)
    lora        a fresh low-rank adapter on the projections (removed afterwards: the original nn.Linear
                objects come back, their weights never touched)
    embeddings  the task's row of the task embedding table only (layouts with a task table)

The rows come from the task's demonstrations only, as its layout draws them for a test-time learner
(Layout.demonstration_sampler: the pair layout's demonstration pairs under the training augmentations,
with its test inputs where the checkpoint trained with the input loss; the in-context layout's
leave-one-out rows). The test output is never used. Training stops after `steps` steps or `seconds`
seconds, whichever comes first.

A budget that stops by itself (TTTConfig.stop "loo"): first train on all demonstrations but the last,
measuring the held-out one's loss (teacher-forced, averaged over the layout's views) every few steps;
the step count where it was lowest is the count the real run, on every demonstration, then takes. It
costs up to twice the training; whether it pays is measured in RESULTS.md.

Usage, per task:
    with task_training(model, task, layout, TTTConfig(steps=100), device, row_tokens) as report:
        ...predict the task's test inputs with `model`...
    # here every weight of the model is bitwise what it was before, and so are its modules and flags
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from arc.data.tasks import Example, Task
from arc.inference.config import TTTConfig
from arc.infra.errors import ConfigError, DivergenceError
from arc.layouts.rows import Layout, NoRows
from arc.model.lora import add_lora, lora_modules, lora_parameters, remove_lora
from arc.training.optim import fine_tune_recipe
from arc.training.steps import fine_tune, restored
from arc.training.scoring import output_token_loss

TRAINED = ("full", "lora", "embeddings")


@dataclass
class TTTReport:
    steps: int  # optimizer steps taken
    chosen_steps: int | None  # the step count the leave-one-out probe chose (stop "loo"), else None
    seconds: float  # wall time of building rows and training
    first_loss: float | None  # training loss per output token at the first step (None: no step)
    last_loss: float | None  # ... and at the last step (different rows: a noisy but honest signal)
    skipped: str | None  # why TTT did not run for this task (then nothing was changed), else None


def check_trainable(model: nn.Module, layout: Layout, train: str) -> None:
    """Refuse what this model and layout cannot train at test time, before any work."""
    if train not in TRAINED:
        raise ConfigError(f"--ttt-train {train}: must be one of {', '.join(TRAINED)}")
    if train == "embeddings" and not layout.task_table:
        raise ConfigError(f"--ttt-train embeddings: the {layout.name} layout's model has no task embeddings; "
                          "use --ttt-train full or lora")
    if train == "lora" and lora_modules(model):
        # a second adapter cannot be added on top of a first, and removing ours must not take the other
        raise ConfigError("--ttt-train lora needs a model without LoRA modules; this one has "
                          f"{len(lora_modules(model))} (a trained adapter: use --ttt-train full, or evaluate its base)")


def _parameters(model: nn.Module, cfg: TTTConfig, seed: int, device: torch.device) -> list[nn.Parameter]:
    """The parameters this task trains, adding the adapter first for "lora"."""
    if cfg.train == "lora":
        # seed the adapter's A matrices (B starts at zero) without disturbing the caller's random streams
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            add_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets)
        return lora_parameters(model)
    if cfg.train == "embeddings":
        return [model.embed_task.weight]  # only the task's own row gets a gradient (no weight decay: the rest stay)
    return list(model.parameters())


def _train(model: nn.Module, task: Task, sampler, layout: Layout, cfg: TTTConfig, steps: int, seconds: float,
           device: torch.device, row_tokens: int, seed: int, autocast_dtype, after_step=None, compile: bool = False):
    """Train the model in place on the task's demonstration rows (sampler: Layout.demonstration_sampler's) for
    `steps` steps or `seconds` (0: no limit); the caller undoes it. The batches are the training step's
    (Layout.batches: packed sequences of the row budget for the pair layout, one compiled shape; padded rows
    otherwise). Returns the steps' report."""
    tokens = cfg.max_row_tokens or row_tokens
    batches = layout.batches(sampler, cfg.batch_size, tokens)
    params = _parameters(model, cfg, seed, device)
    try:
        return fine_tune(model, batches, fine_tune_recipe(cfg.lr), steps, seconds, device, autocast_dtype, params,
                         after_step, compile)
    except DivergenceError as error:
        raise DivergenceError(f"test-time training of task {task.id}: {error} (try a lower --ttt-lr)") from None
    except NoRows as error:  # demonstration rows fit too rarely in the token budget
        raise ConfigError(f"test-time training of task {task.id}: {error}: raise --ttt-max-row-tokens "
                          "(or --context-tokens)") from None


@contextlib.contextmanager
def undone(model: nn.Module, cfg: TTTConfig) -> Iterator[None]:
    """Whatever training happens inside the block is undone on leaving it: every weight written back
    bitwise, any adapter removed, every requires_grad flag and the mode restored."""
    # a copy of the weights, written back afterwards (an optimizer step is not undone by another)
    saved = {name: p.detach().clone() for name, p in model.named_parameters()} if cfg.train != "lora" else {}
    with restored(model):
        try:
            yield
        finally:
            if cfg.train == "lora" and lora_modules(model):
                remove_lora(model)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in saved:
                        p.copy_(saved[name])


def loo_steps(model: nn.Module, task: Task, layout: Layout, cfg: TTTConfig, device: torch.device, row_tokens: int,
              seed: int = 0, autocast_dtype=None) -> int:
    """The step count (a multiple of cfg.steps // 10, at most cfg.steps) at which training on every
    demonstration but the last gave the last its lowest loss; cfg.steps when the task has one demonstration.
    The model is left as it was."""
    if len(task.train) < 2:
        return cfg.steps
    rest = Task(task.id, task.train[:-1], task.test)
    held = Example(task.id, 0, rest.train, task.train[-1])
    rows = [layout.encode(view.apply(held)) for view in layout.views(held, layout.default_views, seed)
            if layout.fit(view.apply(held), row_tokens) is not None]
    every = max(1, cfg.steps // 10)
    losses = {0: output_token_loss(model, rows, autocast_dtype)}

    def measure(done: int, loss: float, lr: float) -> None:
        if done % every == 0 or done == cfg.steps:
            losses[done] = output_token_loss(model, rows, autocast_dtype)

    with undone(model, cfg):
        try:
            sampler = layout.demonstration_sampler([rest], cfg.max_row_tokens or row_tokens, seed, cfg.augment)
            _train(model, rest, sampler, layout, cfg, cfg.steps, cfg.seconds, device, row_tokens, seed,
                   autocast_dtype, measure)
        except NoRows:
            return cfg.steps
    return min(losses, key=lambda step: (losses[step], step))


@contextlib.contextmanager
def task_training(model: nn.Module, task: Task, layout: Layout, cfg: TTTConfig, device: torch.device,
                  row_tokens: int, seed: int = 0, autocast_dtype: torch.dtype | None = None,
                  seconds: float | None = None, compile: bool = False) -> Iterator[TTTReport]:
    """Train `model` on the task's demonstrations (seed: its rows and any adapter's initialisation) for cfg.steps
    steps or `seconds` (None: cfg.seconds; 0: no time limit) and yield the report with the trained model in eval
    mode; on leaving (even by an exception) put back every weight bitwise, the module tree (no adapter left) and
    every requires_grad flag and mode. compile: on the compiled training step (arc.training.steps.compile_once).
    What the model and layout can train is the caller's to check first, once (check_trainable)."""
    started = time.time()
    try:
        sampler = layout.demonstration_sampler([task], cfg.max_row_tokens or row_tokens, seed, cfg.augment)
    except NoRows as why:
        yield TTTReport(0, None, time.time() - started, None, None, str(why))
        return
    chosen = None
    if cfg.stop == "loo":
        chosen = loo_steps(model, task, layout, cfg, device, row_tokens, seed, autocast_dtype)
    steps = cfg.steps if chosen is None else chosen
    with undone(model, cfg):
        # (a fresh LoRA per task would change the compiled blocks' modules every task: it trains eagerly)
        report = _train(model, task, sampler, layout, cfg, steps, cfg.seconds if seconds is None else seconds,
                        device, row_tokens, seed, autocast_dtype, compile=compile and cfg.train != "lora")
        model.eval()
        yield TTTReport(report.steps, chosen, time.time() - started, report.first_loss, report.last_loss, None)

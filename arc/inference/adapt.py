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
from arc.inference.config import AdaptConfig
from arc.infra.errors import ConfigError
from arc.layouts.rows import PairRows
from arc.layouts.sampling import PairSampler
from arc.model.transformer import Transformer
from arc.training.optim import BETAS, lr_at, optimizer_step, set_lr


@dataclass
class AdaptReport:
    tasks: int  # tasks that got a new embedding
    steps: int  # optimizer steps taken (fewer than asked when the time ran out)
    seconds: float
    first_loss: float | None  # training loss per output token at the first and last step
    last_loss: float | None


def adapt(model: Transformer, tasks: list[Task], task_index: dict[str, int], rows: PairRows, cfg: AdaptConfig,
          row_tokens: int, device: torch.device, amp_dtype: torch.dtype | None = None) -> AdaptReport:
    """Give every task of `tasks` missing from task_index an embedding row, add it to task_index, and
    train as cfg says. Leaves the model in eval mode with every parameter's requires_grad as it was."""
    new = [t for t in tasks if t.id not in task_index]
    if not new:
        return AdaptReport(0, 0, 0.0, None, None)
    if cfg.steps <= 0:
        raise ConfigError(f"{len(new)} task(s) have no embedding in this checkpoint ({' '.join(t.id for t in new[:8])}): "
                         "adapt to them with --adapt-steps N, or evaluate the tasks it was trained on")
    if cfg.train not in ("embeddings", "full"):
        raise ConfigError(f"--adapt-train {cfg.train!r}: embeddings | full")
    started = time.time()
    first = model.add_tasks(len(new)).start
    task_index.update({t.id: first + i for i, t in enumerate(new)})
    sampler = PairSampler([], [t.without_test_outputs() for t in new], rows, row_tokens, cfg.seed, first_task=first)

    flags = [(p, p.requires_grad) for p in model.parameters()]
    if cfg.train == "embeddings":
        for p in model.parameters():
            p.requires_grad_(False)
        model.embed_task.weight.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    # no weight decay: rows that get no gradient (the trained tasks') must not move at all
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=BETAS, weight_decay=0.0)
    losses = []
    model.train()
    try:
        for step in range(cfg.steps):
            if cfg.seconds and time.time() - started > cfg.seconds:
                break
            set_lr(optimizer, lr_at(step, cfg.lr, max(1, cfg.steps // 10), cfg.steps, 0.1))
            losses.append(optimizer_step(model, optimizer, params, [sampler.batch(step, cfg.batch_size)], 1.0, device, amp_dtype))
            if (step + 1) % 50 == 0:  # a long adaptation says how far it is (one line every 50 steps)
                print(f"adapting: step {step + 1}/{cfg.steps} | loss {losses[-1]:.3f} | {time.time() - started:.0f}s", flush=True)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.eval()
    return AdaptReport(len(new), len(losses), time.time() - started, losses[0] if losses else None,
                       losses[-1] if losses else None)

"""The optimiser: AdamW over parameter groups, the warmup + cosine learning-rate schedule, and the one
optimiser step (accumulate over micro-batches, clip, step) that both training loops take: pre-training
and fine-tuning (arc.training.trainer) and per-task test-time training (arc.inference.ttt).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from arc.infra.distributed import SINGLE, World
from arc.infra.runtime import autocast
from arc.layouts.rows import IGNORE, Batch

BETAS = (0.9, 0.95)  # AdamW's (beta1, beta2) in every loop


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """Fused AdamW over the model's trainable parameters, with weight decay on the matrices only (not on
    norm gains, not on the embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.ndim >= 2 and not name.startswith("embed")
        (decay if is_matrix else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all parameters instead of a chain of small ops per tensor (measured faster on CPU too)
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, fused=True)


def lr_at(step: int, peak: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup to peak, then cosine decay to peak * min_lr_ratio at max_steps."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return peak * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def optimizer_step(
    forward: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    micro_batches: list[Batch],
    grad_clip: float,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    world: World = SINGLE,
) -> float:
    """One optimiser step on micro_batches (arc.layouts.rows.Batch: inputs and targets of (B, T) token ids with
    IGNORE where a position has no target, and each row's task and transform ids; packed batches also
    say which row each token belongs to); returns the step's loss, the mean cross-entropy per target token.

    The loss is summed over the target tokens of every micro-batch and divided once by their total, so
    the step's gradient is a mean per output token however the tokens fall into micro-batches (a mean
    per micro-batch would weigh a token of a short batch more). Each micro-batch is backpropagated on
    its own, so only one micro-batch's activations are held at a time. Then the global gradient norm
    of params is clipped to grad_clip (0: no clipping), the optimizer steps and the gradients are freed.

    Data-parallel (world, arc.infra.distributed; forward wrapped in DDP): micro_batches are this rank's share
    of the global batch; the total is the global batch's target count, the loss is multiplied by the
    world size because DDP averages the ranks' gradients (so the gradient stays the mean per target
    token of the global batch), gradients are all-reduced once, after the last micro-batch, and the
    loss returned is the global batch's.
    """
    n_targets = world.sum(sum(int((batch.targets != IGNORE).sum()) for batch in micro_batches))
    loss_sum = 0.0
    for i, batch in enumerate(micro_batches):
        batch = batch.to(device)
        packed = {} if batch.segments is None else {"segments": batch.segments}  # which row each token is in
        with world.deferred_sync(forward, last=i == len(micro_batches) - 1):
            with autocast(device.type, amp_dtype):
                logits = forward(batch.inputs, task=batch.task, transform=batch.transform, **packed)
            loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE, reduction="sum") / n_targets
            (loss * world.size).backward()  # x 1 without torchrun: exact, the single-process arithmetic is unchanged
        loss_sum += loss.item()
    loss_sum = world.sum(loss_sum)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum

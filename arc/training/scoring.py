"""Teacher-forced scoring of encoded rows: the summed negative log-likelihood of each row's targets.

One forward per batch, no decoding. Callers: the eval loss (output_token_loss: the mean per output
token over held-out test outputs; grouped_loss: the same, and per task, for evaluate.py) and
product-of-experts re-scoring (arc.inference.ensemble.candidate_nll: each candidate answer's NLL under each
augmented view).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from arc.infra.runtime import autocast
from arc.layouts.rows import IGNORE, EncodedRow, collate


@torch.no_grad()
def row_nll(model, rows: list[EncodedRow], batch_size: int = 16,
            autocast_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the NLL (natural log) summed over its loss-mask targets, and how many targets it has;
    two arrays of len(rows), in the order given.

    Rows are batched by similar length: the right padding collate adds comes after each row's tokens,
    and causal attention never lets a position see what follows it, so padding changes no row's result.
    The model is put in eval mode (no dropout) and given back in the mode it was in."""
    nll, counts = np.zeros(len(rows), dtype=np.float64), np.zeros(len(rows), dtype=np.int64)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = collate([rows[i] for i in chunk]).to(device)
            targets = batch.targets
            with autocast(device.type, autocast_dtype):
                logits = model(batch.inputs, task=batch.task, transform=batch.transform)
            per_token = F.cross_entropy(  # (B * T,), zero where the target is IGNORE
                logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none"
            )
            nll[chunk] = per_token.view(targets.shape).double().sum(dim=1).cpu().numpy()
            counts[chunk] = (targets != IGNORE).sum(dim=1).cpu().numpy()
    finally:
        model.train(was_training)
    return nll, counts


def output_token_loss(model, rows: list[EncodedRow], amp_dtype: torch.dtype | None = None,
                      batch_size: int = 8) -> float:
    """Mean cross-entropy per output token over rows (the eval loss), on the model's device."""
    nll, counts = row_nll(model, rows, batch_size, amp_dtype)
    return float(nll.sum() / max(int(counts.sum()), 1))


def grouped_loss(model, rows: list[EncodedRow], groups: list[str], batch_size: int = 8,
                 autocast_dtype: torch.dtype | None = None) -> tuple[float, dict[str, float]]:
    """The mean NLL per target over all rows (exactly output_token_loss of the same rows: one row_nll
    call, summed the same way) and over the rows of each group (groups[i] names row i's group, e.g. its
    task), from the same forward passes."""
    nll, counts = row_nll(model, rows, batch_size, autocast_dtype)
    names = np.array(groups, dtype=object)
    per_group = {g: float(nll[names == g].sum() / max(int(counts[names == g].sum()), 1)) for g in dict.fromkeys(groups)}
    return float(nll.sum() / max(int(counts.sum()), 1)), per_group

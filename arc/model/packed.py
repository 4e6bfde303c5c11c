"""Packed sequences: several rows one after another in one sequence, each computed as if it stood alone.

Training pads nothing when rows are packed (arc.layouts.packing): every batch is B sequences of the same
length L, each holding as many whole rows as fit, so one compiled graph serves every step. What the
model must then know is which row each token belongs to, `segments` (B, L): 0 for the first row of a
sequence, 1 for the next, ... (the padding after the last row is one more segment). From it:

    row_starts      each row's first token, where RoPE positions, grid positions and grid numbers
                    start afresh (arc.model.positions)
    row_positions   each token's place in its row: 1-D RoPE's position
    attention       each query sees the keys of its own row up to itself, never another row's

Attention inside rows, two exact ways:

    row_attention          on CPU: one causal flash attention per row (the aten CPU kernels, forward
                           and backward), so the cost is the sum of each row's length squared; a
                           torch custom op, so torch.compile keeps the graph whole around it
    block_diagonal_mask    elsewhere (GPU): a (B, 1, L, L) mask for one masked SDPA call over each
                           sequence; a GPU computes the blocks outside the rows too, but in one kernel

Why not the mask on CPU: masked attention costs L per token whatever the row's length. Pair-layout rows
average ~330 tokens with a tail to ~1,900, so L must be 2,048; a training forward and backward of the
pair model on (2, 2048) packed batches took 2.7x as long with the mask as row by row (RESULTS.md).
The one exception: attention dropout in training (ModelConfig.dropout), which the row-by-row kernel does
not apply, takes the mask on CPU too (arc.model.transformer).
"""
from __future__ import annotations

import torch
from torch import Tensor


def row_starts(segments: Tensor) -> Tensor:
    """(B, L) bool: True at the first token of each packed row (always at position 0)."""
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    return starts


def row_positions(starts: Tensor) -> Tensor:
    """(B, L): each token's index inside its row, from row_starts."""
    idx = torch.arange(starts.shape[1], device=starts.device).expand_as(starts)
    return idx - torch.where(starts, idx, 0).cummax(1).values


def block_diagonal_mask(segments: Tensor) -> Tensor:
    """(B, 1, L, L) bool: query t sees key s when both are in the same row and s <= t."""
    L = segments.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=segments.device).tril()
    return (segments[:, None, :, None] == segments[:, None, None, :]) & causal


def _rows(segments: Tensor) -> list[tuple[int, int, int]]:
    """(sequence, start, end) of every row in segments (B, L), padding included."""
    B, L = segments.shape
    cuts = (segments[:, 1:] != segments[:, :-1]).nonzero().tolist()  # [b, t]: row boundary after token t
    rows, start, last_b = [], 0, 0
    for b, t in cuts + [[B, 0]]:
        while last_b < b:  # close the rows of the sequences before b
            rows.append((last_b, start, L))
            last_b, start = last_b + 1, 0
        if b < B:
            rows.append((b, start, t + 1))
            start = t + 1
    return rows


@torch.library.custom_op("arc::row_attention", mutates_args=())
def _row_attention(q: Tensor, k: Tensor, v: Tensor, segments: Tensor) -> tuple[Tensor, Tensor]:
    """Causal attention inside each row: q, k, v (B, H, L, D) -> the output (B, H, L, D) and the
    log-sum-exp of each query's scores (B, H, L), which the backward needs."""
    out, lse = torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)
    for b, s, e in _rows(segments):
        row = (slice(b, b + 1), slice(None), slice(s, e))  # (1, H, n, D): one row's queries, keys, values
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        out[row], lse[row] = flash(q[row], k[row], v[row], 0.0, True)
    return out, lse


@_row_attention.register_fake
def _(q, k, v, segments):  # the shapes, for torch.compile's tracing
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("arc::row_attention_backward", mutates_args=())
def _row_attention_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                            segments: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    for b, s, e in _rows(segments):
        row = (slice(b, b + 1), slice(None), slice(s, e))
        dq[row], dk[row], dv[row] = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad[row].contiguous(), q[row], k[row], v[row], out[row], lse[row], 0.0, True)
    return dq, dk, dv


@_row_attention_backward.register_fake
def _(grad, q, k, v, out, lse, segments):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _save(ctx, inputs, output):
    q, k, v, segments = inputs
    ctx.save_for_backward(q, k, v, *output, segments)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, segments = ctx.saved_tensors
    return *_row_attention_backward(grad_out, q, k, v, out, lse, segments), None


_row_attention.register_autograd(_backward, setup_context=_save)


def row_attention(q: Tensor, k: Tensor, v: Tensor, segments: Tensor) -> Tensor:
    """Causal attention of q, k, v (B, H, L, D) inside each row of segments (B, L), on CPU. Grouped-query
    keys and values (fewer heads than q) are repeated to q's heads first."""
    if k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
    return _row_attention(q, k.contiguous(), v.contiguous(), segments)[0]

"""The KV cache: keys and values of every layer preallocated to their capacity (gpt-fast style), with the
per-slot tables decoding reads (RoPE position, left padding, grid state, each row's task and transform),
built once so that a decoding step only slices them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from arc.model.config import ModelConfig


# A decoding step (one query per row) attends over the filled slots rounded up to a multiple of SPAN, those
# past the filled ones masked, so its attention matmuls take one of capacity / SPAN shapes instead of a new
# one at every step. On CPU, oneDNN compiles and keeps a kernel per matmul shape (about 1 MB each): a shape
# per step made evaluate.py hold 2 GB of them for the 3.6 MB shipped model, and compile two at every step
# (bench/eval_memory.py, RESULTS.md). The masked slots add at most SPAN - 1 keys to a step.
SPAN = 64


class KVCache:
    """Keys and values of every layer, preallocated as (B, kv_heads, capacity, head_dim), and what attention
    needs to read them: each slot's RoPE position and whether it holds a real token or left padding.

    `length` (slots filled, the same for every row) is a plain int that the caller may set back to
    truncate the cache (depth-first search backtracks that way)."""

    def __init__(self, cfg: ModelConfig, batch: int, capacity: int, device, dtype, pad: torch.Tensor | None = None,
                 task: torch.Tensor | None = None, transform: torch.Tensor | None = None):
        shape = (batch, cfg.kv_heads, capacity, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.capacity = capacity
        self.length = 0
        # left padding of each row: slots [0, pad[b]) hold padding
        self.pad = torch.zeros(batch, dtype=torch.long, device=device) if pad is None else pad.to(device)
        self.max_pad = int(self.pad.max()) if batch else 0
        # per-slot tables, built once so that a decoding step only slices them (views, no allocation):
        self.slots = torch.arange(capacity, device=device)
        # the RoPE position of each slot (B, capacity): its index minus the row's padding (0 on padding);
        # clamped to the RoPE table, which only finished rows (still stepping with the batch) can pass
        self.pos = (self.slots[None, :] - self.pad[:, None]).clamp(0, cfg.max_seq_len - 1)
        # whether each slot holds a real token: (B, 1, 1, capacity), broadcast over heads and queries
        self.real = (self.slots[None, :] >= self.pad[:, None])[:, None, None]
        # grid state before each slot (B, capacity + 1, 3): (row, col, grid number), for models with grid
        # positions or 3-D RoPE; slot s's entry is written when slot s - 1 is filled, so truncating
        # `length` leaves the right state behind
        self.grid_state = torch.zeros(batch, capacity + 1, 3, dtype=torch.long, device=device)
        # each row's task and D8 transform (pair layout): every token fed through the cache gets their embeddings
        self.task = None if task is None else task.to(device)
        self.transform = None if transform is None else transform.to(device)

    def read_end(self, end: int, t: int) -> int:
        """The slots [0, read_end) that t new queries, the last at slot end - 1, attend over: end itself, or
        for one query (a decoding step) end rounded up to a multiple of SPAN within the capacity, the slots
        past end masked (see SPAN)."""
        return end if t > 1 else min(self.capacity, -(-end // SPAN) * SPAN)

    def mask(self, t: int) -> torch.Tensor | None:
        """Which slots each of the next t queries may see: (B, 1, t, read_end) bool, or None where
        that is plain causal attention (no padding, and one query or an empty cache, reading no unfilled slot)."""
        end = self.length + t
        stop = self.read_end(end, t)
        if self.max_pad == 0 and stop == end and (t == 1 or self.length == 0):
            return None
        if t == 1 and self.length >= self.max_pad:  # one real query: every filled slot that is not padding
            return self.real[..., :stop] if stop == end else self.real[..., :stop] & (self.slots[:stop] < end)
        q = self.slots[self.length : end, None]  # (t, 1)
        k = self.slots[None, :stop]  # (1, S)
        # a padding query sees only itself, so its softmax is never over an empty set
        return ((k <= q) & self.real[..., :stop]) | (k == q)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, at: int | torch.Tensor):
        """Write k, v (B, H, T, D) into the slots from `at` on; return the keys and values to attend to.
        at an int: the slots [0, read_end(at + T, T)), a view (mask(T) hides those not filled). at a
        one-element tensor (Transformer.decode_step,
        T = 1): the whole cache, the same shapes at every step; the caller masks the slots not filled."""
        if isinstance(at, int):
            end = at + k.shape[2]
            self.k[layer][:, :, at:end] = k
            self.v[layer][:, :, at:end] = v
            stop = self.read_end(end, k.shape[2])
            return self.k[layer][:, :, :stop], self.v[layer][:, :, :stop]
        self.k[layer].index_copy_(2, at, k)
        self.v[layer].index_copy_(2, at, v)
        return self.k[layer], self.v[layer]

"""A Llama-style decoder-only transformer, written out in full, with a preallocated KV cache.

Token embedding (+ optional grid position embeddings) -> n_layers x [RMSNorm -> causal multi-head
attention with RoPE -> residual, RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> output head.
No biases anywhere.

Positions, two independent choices (RoPE itself is arc.model.rope). Grid positions
(ModelConfig.grid_positions): RoPE gives each token its place in the 1-D sequence, but an ARC rule is about
2-D places: "the cell below", "the cell at the same row and column of the input". With grid positions each
cell also gets a learned embedding of its row and one of its column inside its grid, computed from the
tokens themselves (row ends and markers), so a copy is a lookup by equal (row, col) instead of a count of
row ends. Off, the model is exactly a Llama (bench/speed.py checks it against Hugging Face's). RoPE
(ModelConfig.rope): "1d" rotates by the place in the sequence, as Llama does; "3d" rotates three slices of
each head by the token's column, row and grid number instead (mdlARC's scheme), so attention scores depend
on 2-D offsets and on which grid a cell is in, never on how far apart two cells are in the flattened
sequence.

Task and transform embeddings (ModelConfig.n_tasks, transform_embedding; the pair layout, arc.layouts.pair):
one learned vector per task and one per D8 transform, added to every token of a row. A row then holds
one (input, output) pair and the rule comes from the task's vector rather than from demonstrations in
the context; `add_tasks` grows the table for tasks a checkpoint has not seen.

One forward serves training and decoding:
    model(tokens)                  training / scoring: full causal attention over (B, T)
    model(tokens, cache=cache)     decoding: attends to what the cache holds, appends T new slots
and a decoding step with fixed shapes, which torch.compile turns into one graph (arc.inference.decode):
    model.decode_step(tokens, cache, at)    one token per row, written at cache slot `at` (a tensor)

The cache (arc.model.kvcache) is preallocated to its capacity (gpt-fast style), with per-slot tables (RoPE position,
padding, grid position state) built once, so a decoding step only slices it. Batched prompts of different lengths are
left-padded; the cache records each row's padding, so padded slots are never attended to and positions
start at 0 at each row's first real token. The cache's `length` can be set back to truncate it (used by
depth-first search to backtrack).

Pretrained Llamas (arc.model.hf imports them): grouped-query attention (ModelConfig.n_kv_heads: fewer key/value
heads than query heads, each shared by a group), an explicit head width (head_size) and Llama 3.x's
"llama3" RoPE frequency scaling (rope_scaling). Their defaults leave the model as it always was.
Activation checkpointing (Transformer.activation_checkpointing, set by the trainer) recomputes each
block's activations in the backward pass instead of keeping them: less memory, one more forward.

Dropout (ModelConfig.dropout, 0 by default): in train mode only, on the attention weights (SDPA's
dropout_p) and on each attention and MLP output before it joins the residual stream (GPT-2's places). In
eval mode (scoring, decoding, evaluation) the model computes exactly what a model without dropout does.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from arc.model.config import ModelConfig
from arc.model.kvcache import KVCache
from arc.model.packed import block_diagonal_mask, row_attention, row_positions, row_starts
from arc.model.positions import GRID_INDEXES, grid_numbers, grid_positions
from arc.model.rope import apply_rope, rope3d_angles, rope_table


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in fp32 for stability under bf16 autocast, then return to the input dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        self.dropout = cfg.dropout  # on the attention weights, in train mode only
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, mask: torch.Tensor | None, cache: KVCache | None = None, layer: int = 0, at=None,
                segments: torch.Tensor | None = None):
        """mask: which keys each query sees (bool, broadcastable to (B, H, T, S)); None means causal
        attention, which needs no mask tensor (is_causal) when the T queries are the last T keys.
        segments (B, T): packed rows (arc.model.packed); without a mask (CPU) attention then runs row by
        row, else mask is their block-diagonal mask. With grouped-query attention, query head h reads key/value
        head h // (n_heads // n_kv_heads)."""
        B, T, C = x.shape
        # (B, T, C) -> (B, T, H, D) -> (B, H, T, D); keys and values have n_kv_heads heads
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v, at)  # now every key so far: (B, H, S, D)
        if segments is not None and mask is None:
            y = row_attention(q, k, v, segments)  # each packed row's own causal attention
        elif T == 1:
            # one query (decoding): two small matmuls, measured 3-10% faster per step than SDPA here.
            # A group's queries stand in for the query axis, (B, H, 1, D) -> (B, H_kv, H / H_kv, D), so
            # the shared keys are read once per group, never copied (without groups: the same shape)
            q = q.reshape(B, self.n_kv_heads, -1, self.head_dim)
            scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5  # (B, H_kv, H / H_kv, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            y = (scores.softmax(-1).type_as(v) @ v).reshape(B, self.n_heads, 1, self.head_dim)
        else:
            # is_causal instead of an equivalent mask tensor: SDPA then skips the blocks above the diagonal
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               dropout_p=self.dropout if self.training else 0.0,
                                               enable_gqa=self.n_kv_heads != self.n_heads)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))  # (B, H, T, D) -> (B, T, H * D)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.d_model, cfg.mlp_width, bias=False)
        self.w_up = nn.Linear(cfg.d_model, cfg.mlp_width, bias=False)
        self.w_down = nn.Linear(cfg.mlp_width, cfg.d_model, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)
        # on each branch's output before it joins the residual stream; nn.Dropout is the identity in eval mode
        # (and nn.Identity when off, so a model without dropout has no extra module or op)
        self.residual_dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x, cos, sin, mask, cache=None, layer=0, at=None, segments=None):
        x = x + self.residual_dropout(self.attn(self.attn_norm(x), cos, sin, mask, cache, layer, at, segments))
        return x + self.residual_dropout(self.mlp(self.mlp_norm(x)))


def per_token(vectors: torch.Tensor) -> torch.Tensor:
    """A row's embedding (B, C) as (B, 1, C), the same vector on every token; per-token ones (B, T, C),
    from packed rows, as they are."""
    return vectors[:, None] if vectors.ndim == 2 else vectors


class Transformer(nn.Module):
    # Training only: recompute each block's activations in the backward pass instead of keeping them
    # (torch.utils.checkpoint), for long contexts and large models. Set by the trainer
    # (TrainConfig.activation_checkpointing); not part of ModelConfig, since it changes no weight or output.
    activation_checkpointing: bool = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.n_heads % cfg.kv_heads:
            raise ValueError(f"n_heads {cfg.n_heads} is not a multiple of n_kv_heads {cfg.kv_heads}")
        if cfg.rope_scaling is not None and cfg.rope != "1d":
            raise ValueError("rope_scaling (Llama 3.x) scales 1-D RoPE only, not rope 3d")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.grid_positions:
            # a cell's row and column, so that attention can find the cell at the same place in another
            # grid (copying, the commonest ARC operation) without counting row ends along the 1-D sequence
            self.embed_row = nn.Embedding(GRID_INDEXES, cfg.d_model)
            self.embed_col = nn.Embedding(GRID_INDEXES, cfg.d_model)
        if cfg.n_tasks:
            self.embed_task = nn.Embedding(cfg.n_tasks, cfg.d_model)
        if cfg.transform_embedding:
            self.embed_transform = nn.Embedding(8, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rope_table(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        # residual-branch outputs start small so the stream's variance does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith(("wo.weight", "w_down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def new_cache(self, batch: int, capacity: int | None = None, pad: torch.Tensor | None = None, dtype=None,
                  task: torch.Tensor | None = None, transform: torch.Tensor | None = None) -> KVCache:
        device = self.embed.weight.device
        return KVCache(self.cfg, batch, capacity or self.cfg.max_seq_len, device, dtype or self.embed.weight.dtype, pad,
                       task, transform)

    def embed_tokens(self, tokens: torch.Tensor, state: torch.Tensor, seq_pos: torch.Tensor | None,
                     task: torch.Tensor | None, transform: torch.Tensor | None, starts: torch.Tensor | None = None):
        """What the blocks need for tokens (B, T): the input vectors (B, T, C), RoPE's cos and sin
        (broadcastable to (B, 1, T, D/2)), and the grid state after each token (B, T, 3), or None for a
        model that uses neither grid positions nor 3-D RoPE.

        state (B, 3): the (row, col, grid number) state before the first token; seq_pos (B, T): each
        token's sequence position (None: 0..T-1); task, transform: each row's ids (pair layout), (B,),
        or (B, T) per token for packed rows; starts (B, T) bool: the first token of each packed row,
        where grid positions and grid numbers start afresh (None: one row per sequence)."""
        x = self.embed(tokens)
        after = None
        if self.cfg.grid_positions or self.cfg.rope == "3d":
            row, col, after = grid_positions(tokens, state[:, :2], starts)
            grid = grid_numbers(tokens, state[:, 2], starts)
            after = torch.cat([after, grid[..., None]], dim=-1)
        if self.cfg.grid_positions:
            x = x + self.embed_row(row) + self.embed_col(col)
        if self.cfg.n_tasks:
            if task is None:
                raise ValueError("this model has task embeddings: pass each row's task id")
            x = x + per_token(self.embed_task(task))  # the row's vector on every token of the row
        if self.cfg.transform_embedding:
            if transform is None:
                raise ValueError("this model has transform embeddings: pass each row's D8 transform")
            x = x + per_token(self.embed_transform(transform))
        if self.cfg.rope == "3d":
            angles = rope3d_angles(col, row, grid, self.cfg)[:, None]  # (B, 1, T, D/2)
            return x, angles.cos(), angles.sin(), after
        if seq_pos is None:
            T = tokens.shape[1]
            return x, self.rope_cos[None, None, :T], self.rope_sin[None, None, :T], after  # (1, 1, T, D/2)
        return x, self.rope_cos[seq_pos][:, None], self.rope_sin[seq_pos][:, None], after  # (B, 1, T, D/2)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None, task: torch.Tensor | None = None,
                transform: torch.Tensor | None = None, segments: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, vocab) in fp32. task, transform: each row's task and D8 transform
        for models with those embeddings, (B,), or (B, T) for packed rows (with a cache, the cache's are used).

        segments (B, T), training and scoring only: several rows packed in each sequence
        (arc.model.packed), segments[b, t] the index of the row token t belongs to, counting up from 0
        along the sequence. Each row is then computed exactly as if it stood alone: attention stays
        inside it and its positions (RoPE's, the grid's) start at 0."""
        B, T = tokens.shape
        if cache is None:
            if T > self.cfg.max_seq_len:
                raise ValueError(f"sequence of {T} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
            mask, at, starts, seq_pos = None, None, None, None
            if segments is not None:
                starts = row_starts(segments)
                seq_pos = row_positions(starts)
                # on CPU attention goes row by row (no mask), unless attention dropout is on: the row-by-row
                # kernel has none, so the mask and SDPA then (slower, but the same dropout as unpacked rows)
                if tokens.device.type != "cpu" or (self.training and self.cfg.dropout > 0):
                    mask = block_diagonal_mask(segments)
            x, cos, sin, _ = self.embed_tokens(tokens, tokens.new_zeros(B, 3), seq_pos, task, transform, starts)
        else:
            at = cache.length
            if at + T > cache.capacity:
                raise ValueError(f"cache overflow: {at} + {T} > {cache.capacity}")
            mask = cache.mask(T)
            x, cos, sin, state = self.embed_tokens(tokens, cache.grid_state[:, at], cache.pos[:, at : at + T],
                                                   cache.task, cache.transform)
            if state is not None:
                cache.grid_state[:, at + 1 : at + T + 1] = state
        recompute = self.activation_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if recompute:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, mask, None, i, None, segments,
                                                      use_reentrant=False)
            else:
                x = block(x, cos, sin, mask, cache, i, at, segments)
        if cache is not None:
            cache.length += T
        return self.head(self.norm(x)).float()

    def decode_step(self, tokens: torch.Tensor, cache: KVCache, at: torch.Tensor) -> torch.Tensor:
        """One new token per row, tokens (B, 1), written at cache slot `at` (a one-element long tensor,
        past every row's padding) -> logits (B, vocab) in fp32. The caller advances `at` and cache.length.

        What forward(tokens, cache) computes for one token, written for torch.compile (arc.inference.decode): it
        attends over the whole preallocated cache with the slots after `at` masked out, and takes the slot
        as a tensor, so every step has the same shapes and no Python number that changes; one compiled
        graph then serves every step. (Eager, forward is cheaper: it attends to the filled slots only.)"""
        mask = cache.real & (cache.slots <= at)  # (B, 1, 1, capacity): filled and not padding
        x, cos, sin, state = self.embed_tokens(tokens, cache.grid_state.index_select(1, at)[:, 0],
                                               cache.pos.index_select(1, at), cache.task, cache.transform)
        if state is not None:
            cache.grid_state.index_copy_(1, at + 1, state)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, cache, i, at)
        return self.head(self.norm(x[:, -1])).float()

    def add_tasks(self, n: int) -> range:
        """Grow the task embedding table by n rows, each started at the mean of the trained rows (a
        "typical task"), and return their ids. Used to predict tasks a checkpoint was not trained on:
        their rows are then trained on their demonstrations (arc.inference.adapt)."""
        if not self.cfg.n_tasks:
            raise ValueError("the model has no task embeddings")
        old = self.embed_task.weight.data
        grown = nn.Embedding(self.cfg.n_tasks + n, self.cfg.d_model, device=old.device, dtype=old.dtype)
        with torch.no_grad():
            grown.weight[: self.cfg.n_tasks] = old
            grown.weight[self.cfg.n_tasks :] = old.mean(0)
        self.embed_task = grown
        first, self.cfg = self.cfg.n_tasks, replace(self.cfg, n_tasks=self.cfg.n_tasks + n)
        return range(first, self.cfg.n_tasks)

    def remap_tasks(self, rows: list[int | None]) -> None:
        """Replace the task embedding table by one whose row i is the old row rows[i], or, where rows[i] is None,
        the mean of the old rows (a task the model never trained on, as add_tasks starts it): fine-tuning a
        checkpoint on another set of tasks (train.py --init with another --eval-set or data)."""
        if not self.cfg.n_tasks:
            raise ValueError("the model has no task embeddings")
        old = self.embed_task.weight.data
        table = nn.Embedding(len(rows), self.cfg.d_model, device=old.device, dtype=old.dtype)
        with torch.no_grad():
            for i, row in enumerate(rows):
                table.weight[i] = old.mean(0) if row is None else old[row]
        self.embed_task, self.cfg = table, replace(self.cfg, n_tasks=len(rows))

    def add_grid_positions(self) -> None:
        """Give a model trained without grid positions its row/column embeddings, initialised to zero, so
        that it computes exactly what it did until training moves them (fine-tuning a plain checkpoint)."""
        if self.cfg.grid_positions:
            raise ValueError("the model already has grid position embeddings")
        self.cfg = replace(self.cfg, grid_positions=True)
        weight = self.embed.weight
        self.embed_row = nn.Embedding(GRID_INDEXES, self.cfg.d_model, device=weight.device, dtype=weight.dtype)
        self.embed_col = nn.Embedding(GRID_INDEXES, self.cfg.d_model, device=weight.device, dtype=weight.dtype)
        nn.init.zeros_(self.embed_row.weight)
        nn.init.zeros_(self.embed_col.weight)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

"""A Llama-style decoder-only transformer, written out in full, with a preallocated KV cache.

Token embedding -> n_layers x [RMSNorm -> causal multi-head attention with RoPE -> residual,
RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> output head. No biases anywhere.

One forward serves training and decoding:
    model(tokens)                  training / scoring: full causal attention over (B, T)
    model(tokens, cache=cache)     decoding: attends to what the cache holds, appends T new slots

The cache is preallocated to its maximum length (gpt-fast style) so decoding allocates nothing per
token. Batched prompts of different lengths are left-padded; the cache records each row's padding,
so padded slots are never attended to and positions start at 0 at each row's first real token.
The cache's `length` can be set back to truncate it (used by depth-first search to backtrack).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int = 16  # the grid vocabulary (arc.tokenizer)
    d_model: int = 128  # residual stream width
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads; head_dim = d_model // n_heads
    mlp_hidden: int = 0  # SwiGLU hidden width; 0 means 8/3 * d_model rounded up to a multiple of 64
    max_len: int = 2048  # longest sequence (sets the RoPE table and the default cache size)
    rope_theta: float = 10000.0  # RoPE base frequency
    norm_eps: float = 1e-5  # RMSNorm epsilon

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 64 * math.ceil(8 * self.d_model / 3 / 64)


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


def rope_table(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency, each (max_len, head_dim // 2)."""
    freqs = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
    angles = torch.outer(torch.arange(cfg.max_len).float(), freqs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels (first half, second half) of x (B, H, T, D) by position angles.
    cos/sin are (B or 1, 1, T, D/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class KVCache:
    """Keys and values of every layer, preallocated as (B, n_heads, max_len, head_dim)."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, device, dtype, pad: torch.Tensor | None = None):
        shape = (batch, cfg.n_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.max_len = max_len
        self.length = 0  # slots filled so far (the same for every row)
        # left padding of each row: slots [0, pad[b]) hold padding
        self.pad = torch.zeros(batch, dtype=torch.long, device=device) if pad is None else pad.to(device)

    def positions(self, t: int) -> torch.Tensor:
        """RoPE positions (B, t) of the next t slots: slot index minus the row's padding."""
        slots = torch.arange(self.length, self.length + t, device=self.pad.device)
        return (slots[None, :] - self.pad[:, None]).clamp(min=0)

    def mask(self, t: int) -> torch.Tensor:
        """Which cached slots each of the next t queries may see: (B, 1, t, length + t) bool."""
        q = torch.arange(self.length, self.length + t, device=self.pad.device)[:, None]  # (t, 1)
        k = torch.arange(self.length + t, device=self.pad.device)[None, :]  # (1, S)
        causal = k <= q  # (t, S)
        real = k[None] >= self.pad[:, None, None]  # (B, 1, S): not a padding slot
        # a padding query sees only itself, so its softmax is never over an empty set
        return ((causal[None] & real) | (k == q)[None])[:, None]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x, cos, sin, layer: int, cache: KVCache | None, mask: torch.Tensor | None):
        B, T, C = x.shape
        # (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        else:
            end = cache.length + T
            cache.k[layer][:, :, cache.length : end] = k
            cache.v[layer][:, :, cache.length : end] = v
            keys, values = cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]
            if T == 1:
                # one new query (decoding): two small matmuls; torch's CPU flash kernel is built for long
                # query blocks and was measured ~50x slower here
                scores = (q @ keys.transpose(-2, -1)) * self.head_dim**-0.5  # (B, H, 1, end)
                y = scores.masked_fill(~mask, float("-inf")).softmax(-1).type_as(values) @ values
            else:
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, C))  # (B, H, T, D) -> (B, T, C)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.d_model, cfg.hidden, bias=False)
        self.w_up = nn.Linear(cfg.d_model, cfg.hidden, bias=False)
        self.w_down = nn.Linear(cfg.hidden, cfg.d_model, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, layer, cache, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, layer, cache, mask)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
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

    def new_cache(self, batch: int, max_len: int | None = None, pad: torch.Tensor | None = None, dtype=None) -> KVCache:
        device = self.embed.weight.device
        return KVCache(self.cfg, batch, max_len or self.cfg.max_len, device, dtype or self.embed.weight.dtype, pad)

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """tokens (B, T) -> logits (B, T, vocab) in fp32."""
        B, T = tokens.shape
        if cache is None:
            if T > self.cfg.max_len:
                raise ValueError(f"sequence of {T} tokens exceeds max_len {self.cfg.max_len}")
            cos, sin = self.rope_cos[None, None, :T], self.rope_sin[None, None, :T]  # (1, 1, T, D/2)
            mask = None
        else:
            if cache.length + T > cache.max_len:
                raise ValueError(f"cache overflow: {cache.length} + {T} > {cache.max_len}")
            # rows that already finished keep stepping with the batch; clamp their (ignored) positions
            pos = cache.positions(T).clamp(max=self.cfg.max_len - 1)  # (B, T)
            cos, sin = self.rope_cos[pos][:, None], self.rope_sin[pos][:, None]  # (B, 1, T, D/2)
            mask = cache.mask(T)
        x = self.embed(tokens)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, i, cache, mask)
        if cache is not None:
            cache.length += T
        return self.head(self.norm(x)).float()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

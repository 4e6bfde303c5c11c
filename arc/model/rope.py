"""Rotary position embeddings (RoPE): each attention head's channels are rotated in pairs by angles that
grow with a token's position, so a query-key score depends on how far apart the two tokens are.

Two schemes (ModelConfig.rope):
    1d  the place in the sequence, as Llama does (rope_table), optionally with Llama 3.x's "llama3"
        frequency scaling for imported checkpoints (llama3_frequencies)
    3d  the token's column, row and grid number (arc.model.positions), each rotating its own slice of the head
        (rope3d_angles), after mdlARC: scores then depend on 2-D offsets and on which grid a cell is in,
        never on how far apart two cells lie in the flattened sequence
Both end in apply_rope.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from arc.model.config import ModelConfig


def llama3_frequencies(freqs: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Llama 3.x's RoPE frequency scaling (as Meta's reference code and Hugging Face's "llama3" rope type
    compute it): frequencies whose wavelength is longer than original_max_position_embeddings /
    low_freq_factor are divided by factor, those shorter than ... / high_freq_factor are kept, and the
    ones between are interpolated smoothly."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / freqs
    scaled = torch.where(wavelen > old_len / low, freqs / factor, freqs)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


def rope_table(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency, each (max_seq_len, head_dim // 2)."""
    freqs = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
    if cfg.rope_scaling is not None:
        freqs = llama3_frequencies(freqs, cfg.rope_scaling)
    angles = torch.outer(torch.arange(cfg.max_seq_len).float(), freqs)
    return angles.cos(), angles.sin()


def rope3d_angles(col: torch.Tensor, row: torch.Tensor, grid: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """3-D RoPE angles (B, T, head_dim // 2): the head's rotation pairs are split in three slices,
    rotated by the token's column, row and grid number, each slice with its own frequency ladder."""
    pairs = cfg.head_dim // 2
    sizes = (pairs // 3, pairs // 3, pairs - 2 * (pairs // 3))
    parts = []
    for coordinate, n in zip((col, row, grid), sizes):
        freqs = 1.0 / (cfg.rope_theta ** (torch.arange(n, device=col.device).float() / n))
        parts.append(coordinate.float()[..., None] * freqs)  # (B, T, n)
    return torch.cat(parts, dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels (first half, second half) of x (B, H, T, D) by position angles.
    cos/sin are (B or 1, 1, T, D/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)

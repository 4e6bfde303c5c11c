"""ModelConfig and LoRAConfig: the shape of a transformer (arc.model.transformer) and its position scheme; saved in every
checkpoint's config.json under "model", so a checkpoint rebuilds exactly the model that wrote it;
LoRAConfig says which of its projections get low-rank adapters (arc.model.lora).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    vocab_size: int = field(default=16, metadata={"flag": False})  # the grid vocabulary (arc.data.tokenizer)
    d_model: int = 128  # residual stream width
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads; head_dim = d_model // n_heads
    mlp_hidden: int = 0  # SwiGLU hidden width; 0 means 8/3 * d_model rounded up to a multiple of 64
    max_seq_len: int = 2048  # longest sequence the model takes (its 1-D RoPE table and the default cache capacity)
    rope_theta: float = 10000.0  # RoPE base frequency
    norm_eps: float = 1e-5  # RMSNorm epsilon
    grid_positions: bool = False  # add learned row and column embeddings of each cell (arc.data.tokenizer layout); False: plain Llama
    rope: str = "1d"  # 1d: rotate by the sequence position (Llama) | 3d: by (column, row, grid number) of each token
    n_tasks: int = field(default=0, metadata={"flag": False})  # rows of the learned task embedding table (0: none); set from the data
    transform_embedding: bool = field(default=False, metadata={"flag": False})  # a learned embedding of the row's D8 transform (0..7) on every token
    n_kv_heads: int = 0  # key/value heads (grouped-query attention: each serves n_heads // n_kv_heads query heads); 0: n_heads
    head_size: int = 0  # width of each attention head; 0: d_model // n_heads (pretrained checkpoints may set it apart)
    rope_scaling: dict | None = field(default=None, metadata={"flag": False})  # Llama 3.x "llama3" RoPE frequency scaling: {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}; None: plain RoPE

    @property
    def head_dim(self) -> int:
        return self.head_size or self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def mlp_width(self) -> int:
        return self.mlp_hidden or 64 * math.ceil(8 * self.d_model / 3 / 64)


# The model's attention projections and SwiGLU MLP projections.
DEFAULT_TARGETS: tuple[str, ...] = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


@dataclass
class LoRAConfig:
    rank: int = 0  # adapter rank (0: no adapter)
    alpha: float = 32.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # dropout on the adapter input
    targets: tuple[str, ...] = DEFAULT_TARGETS  # projections that get an adapter
    train_embeddings: bool = False  # also train the token embedding and the output head in full (saved with the adapter), as the walkthrough does

    @property
    def full_parameters(self) -> tuple[str, ...]:
        """The parameters trained in full beside the adapters."""
        return ("embed.weight", "head.weight") if self.train_embeddings else ()

"""ModelConfig and LoRAConfig: the shape of a transformer (arc.model.transformer) and its position scheme; saved in
every checkpoint's config.json under "model", so a checkpoint rebuilds exactly the model that wrote it;
LoRAConfig says which of its projections get low-rank adapters (arc.model.lora).

Each field carries its rule (arc.infra.config.option); relations between fields are each config's
`problems` method. The defaults are train.py's model (3-D RoPE); a plain Llama says rope="1d".
The same rules check the flags of a fresh model and the "model" section of every checkpoint read
(arc.model.schema): a checkpoint cannot describe a model the flags could not. The upper bounds are far
above any model this project can train (Llama 3.1 405B: d_model 16384, 126 layers, 128 heads, MLP 53248,
context 131072); what a given machine can hold is checked apart, against its memory (arc.model.schema).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from arc.data.tokenizer import VOCAB_SIZE
from arc.infra.config import choice, ignored, integer, number, option, optional

MIN_SEQ_LEN = 8  # the shortest row worth a context: "I <1x1 grid> O <1x1 grid> E" is 7 tokens
MAX_SEQ_LEN = 1 << 17  # the longest context a model may declare (Llama 3.1's 131072)
MAX_TASKS = 1 << 20  # rows of a task embedding table (ARC-AGI-1 and -2 together are 2,520 tasks)
LLAMA3_SCALING = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def rope_scaling(value) -> str | None:
    """Llama 3.x's RoPE scaling: positive finite factors, the high frequency factor above the low one
    (the scaling interpolates between them), a positive original context."""
    llama3 = isinstance(value, dict) and value.get("rope_type", "llama3") == "llama3"
    if not llama3 or set(value) - {"rope_type", *LLAMA3_SCALING}:
        return f"must be an object of rope_type llama3 and {', '.join(LLAMA3_SCALING)}"
    numbers = [value.get(key) for key in LLAMA3_SCALING]
    positive = all(number(0, above=True)(v) is None for v in numbers)
    if not positive or type(numbers[3]) is not int or not numbers[1] < numbers[2]:
        return ("needs finite factors > 0 with low_freq_factor < high_freq_factor, and an integer "
                "original_max_position_embeddings")
    return None


@dataclass
class ModelConfig:
    vocab_size: int = option(VOCAB_SIZE, integer(VOCAB_SIZE, VOCAB_SIZE), flag=False,
                             help="the grid vocabulary (arc.data.tokenizer)")
    d_model: int = option(128, integer(1, 1 << 16), help="residual stream width")
    n_layers: int = option(4, integer(1, 1024), help="transformer blocks")
    n_heads: int = option(4, integer(1, 1024), help="attention heads; head_dim = d_model // n_heads")
    mlp_hidden: int = option(0, integer(0, 1 << 20),
                             help="SwiGLU hidden width; 0 means 8/3 * d_model rounded up to a multiple of 64")
    max_seq_len: int = option(2048, integer(MIN_SEQ_LEN, MAX_SEQ_LEN),
                              help="longest sequence the model takes (its 1-D RoPE table and the default cache "
                                   "capacity)")
    rope_theta: float = option(10000.0, number(0, above=True), help="RoPE base frequency")
    norm_eps: float = option(1e-5, number(0, above=True), help="RMSNorm epsilon")
    grid_positions: bool = option(False,
                                  help="add learned row and column embeddings of each cell (arc.data.tokenizer "
                                       "layout); False: plain Llama")
    rope: str = option("3d", choice("1d", "3d"),
                       help="1d: rotate by the sequence position (Llama) | 3d: by (column, row, grid number) of each "
                            "token")
    n_tasks: int = option(0, integer(0, MAX_TASKS), flag=False,
                          help="rows of the learned task embedding table (0: none); set from the data")
    transform_embedding: bool = option(False, flag=False,
                                       help="a learned embedding of the row's D8 transform (0..7) on every token")
    n_kv_heads: int = option(0, integer(0, 1024),
                             help="key/value heads (grouped-query attention: each serves n_heads // n_kv_heads query "
                                  "heads); 0: n_heads")
    head_size: int = option(0, integer(0, 1 << 12),
                            help="width of each attention head; 0: d_model // n_heads (pretrained checkpoints may set "
                                 "it apart)")
    dropout: float = option(0.0, number(0, 1, below=True),
                            help="while training, dropout on the attention weights and on each block's attention and "
                                 "MLP outputs (0: none; off in eval, decoding and scoring)")
    rope_scaling: dict | None = option(None, optional(rope_scaling), flag=False,
                                       help='Llama 3.x "llama3" RoPE frequency scaling: {"factor", "low_freq_factor", '
                                            '"high_freq_factor", "original_max_position_embeddings"}; None: plain '
                                            "RoPE")

    def problems(self, flag) -> list[str]:
        """The head widths that cannot work (each head's channels come in RoPE's rotated pairs), key/value
        heads that do not divide the query heads, a RoPE scaling of the wrong scheme."""
        if not all(type(v) is int and v >= 1 for v in (self.d_model, self.n_heads)):
            return []  # already refused by their own rules
        found = []
        if type(self.n_kv_heads) is int and self.n_kv_heads >= 1 and self.n_heads % self.n_kv_heads:
            found.append(f"{flag('n_heads')} {self.n_heads} {flag('n_kv_heads')} {self.n_kv_heads}: n_heads must be a "
                         f"multiple of n_kv_heads (each key/value head serves n_heads / n_kv_heads query heads)")
        if self.rope_scaling is not None and self.rope != "1d":
            found.append(f"{flag('rope_scaling')} {flag('rope')} {self.rope}: Llama 3.x's RoPE scaling scales 1-D "
                         "RoPE only")
        return found + self._head_problems(flag)

    def _head_problems(self, flag) -> list[str]:
        if self.head_size:  # an explicit head width (a pretrained Llama's head_dim): d_model need not divide
            heads = f"{flag('head_size')} {self.head_size}"
        else:
            heads = f"{flag('d_model')} {self.d_model} {flag('n_heads')} {self.n_heads}"
            if self.d_model % self.n_heads:
                return [f"{heads}: d_model must be a multiple of n_heads (each head gets d_model / n_heads channels)"]
        if self.head_dim % 2:
            return [f"{heads}: the head width d_model / n_heads = {self.head_dim} must be even (RoPE rotates pairs "
                    "of channels)"]
        if self.rope == "3d" and self.head_dim < 6:
            return [f"{heads} {flag('rope')} 3d: the head width {self.head_dim} must be >= 6 "
                    f"(3-D RoPE splits its channel pairs in three)"]
        return []

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


def lora_targets(value) -> str | None:
    if not value or any(t not in DEFAULT_TARGETS for t in value):
        return f"must be a non-empty comma-separated subset of {','.join(DEFAULT_TARGETS)}"
    return None


@dataclass
class LoRAConfig:
    rank: int = option(0, integer(0, 1024), help="adapter rank (0: no adapter)")
    alpha: float = option(32.0, number(0, above=True), help="the update is scaled by alpha / rank")
    dropout: float = option(0.0, number(0, 1, below=True), help="dropout on the adapter input")
    targets: tuple[str, ...] = option(DEFAULT_TARGETS, lora_targets, help="projections that get an adapter")
    train_embeddings: bool = option(False,
                                    help="also train the token embedding and the output head in full (saved with the "
                                         "adapter), as the walkthrough does")

    def problems(self, flag) -> list[str]:
        """Without an adapter (rank 0) its other settings would do nothing: refused when set."""
        if self.rank != 0:
            return []
        return ignored(self, flag, ("alpha", "dropout", "targets", "train_embeddings"),
                       f"applies to a LoRA adapter only (this run: {flag('rank')} 0)")

    @property
    def full_parameters(self) -> tuple[str, ...]:
        """The parameters trained in full beside the adapters."""
        return ("embed.weight", "head.weight") if self.train_embeddings else ()

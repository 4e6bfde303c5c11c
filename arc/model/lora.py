"""Low-rank adapters (LoRA): LoRALinear and the functions that add, merge, save and load them.

In the manner of torchtune's LoRALinear. A frozen linear layer W is wrapped and learns only a low-rank update:
    y = W x + (alpha / rank) * B A x,    A: (rank, in), B: (out, rank)
B starts at zero, so a freshly adapted model computes exactly what the base model does. For inference the
update can be folded into W (`merge`), which removes the adapter's cost for good (the evaluation merges once
loaded). Merging is always explicit: nothing merges behind the caller's back (e.g. on .eval()); `fold_lora`
merges and drops the wrappers (a fine-tune that starts from a LoRA run).

Because LoRALinear wraps the base layer, a wrapped layer's weight moves from `<path>.weight` to
`<path>.base.weight`: load base checkpoints before `add_lora`; an adapter is saved as `lora_state_dict`
(arc.model.checkpoint writes it as adapter.safetensors) and read back with `load_adapter`.

Some parameters can be trained in full beside the adapters (add_lora's `full`): the walkthrough trains
the token embedding and the output head that way, since a pretrained model's rows for our 16 tokens
were never trained on ARC's meaning of them. An adapter file then holds those tensors whole, beside A and B.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

from arc.model.config import DEFAULT_TARGETS


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update scaled by alpha / rank."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.base.requires_grad_(False)
        self.rank = rank
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        # A gets nn.Linear's own init; B = 0 makes the update start at exactly zero.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The update this adapter adds to base.weight: scale * B @ A."""
        return self.scale * (self.lora_b @ self.lora_a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        # Cast to the input's dtype so a bf16 activation never gets promoted by fp32 adapter weights.
        a, b = self.lora_a.to(x.dtype), self.lora_b.to(x.dtype)
        return out + F.linear(F.linear(self.dropout(x), a), b) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into base.weight; a second call does nothing."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale}, merged={self.merged}"


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def add_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    targets: tuple[str, ...] = DEFAULT_TARGETS,
    full: tuple[str, ...] = (),
) -> list[str]:
    """Wrap every nn.Linear whose attribute name is in `targets`; freeze everything but the adapters and
    the parameters named in `full` (e.g. "embed.weight"), which are trained whole and saved with them.

    Returns the paths of the wrapped modules (e.g. "blocks.0.attn.wq").
    """
    found = [
        (path, m) for path, m in model.named_modules()
        if isinstance(m, nn.Linear) and path.rpartition(".")[2] in targets
    ]
    if not found:
        raise ValueError(
            f"add_lora: no nn.Linear named any of {targets} in {type(model).__name__} "
            f"(already wrapped: {len(lora_modules(model))} LoRALinear modules)"
        )
    params = dict(model.named_parameters())
    unknown = [name for name in full if name not in params]
    if unknown:
        raise ValueError(f"add_lora: no parameter named {unknown} to train in full (not a target's weight either)")
    for path, linear in found:  # replaced after the walk, so named_modules never sees a half-edited tree
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, LoRALinear(linear, rank, alpha, dropout))
    model.requires_grad_(False)
    for param in lora_parameters(model) + [params[name] for name in full]:
        param.requires_grad_(True)
    return [path for path, _ in found]


def remove_lora(model: nn.Module) -> None:
    """Undo add_lora: put every LoRALinear's wrapped `base` nn.Linear back in its place, dropping the adapter.

    Refuses a merged adapter: its base.weight holds the update, which removing the wrapper would keep. The
    bases keep requires_grad=False (add_lora froze them); restore flags yourself.
    """
    modules = lora_modules(model)
    merged = [path for path, m in modules.items() if m.merged]
    if merged:
        raise ValueError(f"remove_lora: {len(merged)} adapter(s) are merged into their base weights "
                         f"(e.g. {merged[0]}): removing them would keep their update")
    if "" in modules:
        raise ValueError("remove_lora: the model itself is a LoRALinear; use its .base instead")
    for path, m in modules.items():
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, m.base)


def fold_lora(model: nn.Module) -> None:
    """Make a model with adapters a plain one computing the same: each adapter merged into its base weight
    and its LoRALinear replaced by that nn.Linear, every parameter trainable again. What a fine-tune that
    starts from a LoRA run trains (in full, or under a new adapter: adapters do not stack)."""
    merge_lora(model)
    for path, m in lora_modules(model).items():
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, m.base)
    model.requires_grad_(True)


def merge_lora(model: nn.Module) -> None:
    for m in lora_modules(model).values():
        m.merge()


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters: what the optimizer should be given."""
    return [p for m in lora_modules(model).values() for p in (m.lora_a, m.lora_b)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a fine-tune with adapters trained: the adapter weights, keyed "<module path>.lora_a" /
    ".lora_b", and every other parameter still trainable (add_lora's `full`), under its own name
    (detached, sharing storage)."""
    out = {}
    for path, m in lora_modules(model).items():
        out[f"{path}.lora_a"] = m.lora_a.detach()
        out[f"{path}.lora_b"] = m.lora_b.detach()
    if out:
        adapter = {id(p) for p in lora_parameters(model)}
        full = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad and id(p) not in adapter}
        out.update(full)
    return out


def load_adapter(model: nn.Module, path: str) -> dict[str, str]:
    """Load an adapter file (lora_state_dict's tensors, written by arc.model.checkpoint) into a model already
    passed through add_lora (with the same `full`: those parameters are restored too).

    Strict: the file must hold exactly the model's adapter keys, with matching shapes. Returns the metadata.
    """
    modules = lora_modules(model)
    if any(m.merged for m in modules.values()):
        raise ValueError(f"load_adapter({path}): the model's adapters are merged, its weights hold the old adapter")
    tensors = load_file(path)
    own = lora_state_dict(model)
    missing, unexpected = sorted(own.keys() - tensors.keys()), sorted(tensors.keys() - own.keys())
    if missing or unexpected:
        raise ValueError(f"load_adapter({path}): missing keys {missing}, unexpected keys {unexpected}")
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in tensors.items() if v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"load_adapter({path}): shape mismatch (different rank?) {wrong}")
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v)  # own[k] shares storage with the parameter, and copy_ handles device and dtype
    with safe_open(path, framework="pt") as f:
        return f.metadata() or {}


def cast_frozen(model: nn.Module, dtype: torch.dtype) -> None:
    """Hold every frozen parameter (the base weights under the adapters) in dtype, e.g. bf16 to halve a 1B
    model's memory; trained parameters (adapters, `full` ones) keep their precision, so AdamW's small
    updates are not rounded away. A bf16 base then needs autocast to run (the trainer checks)."""
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(dtype)

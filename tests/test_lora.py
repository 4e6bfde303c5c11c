"""Known answers for arc.model.lora on a toy model whose layer names mirror the real transformer's."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from arc.model.lora import (
    LoRALinear,
    add_lora,
    cast_frozen,
    load_adapter,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    remove_lora,
)

D = 16


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(D, D, bias=False) for _ in range(4))

    def forward(self, x):
        att = torch.softmax(self.wq(x) @ self.wk(x).transpose(-1, -2) / D**0.5, dim=-1)
        return self.wo(att @ self.wv(x))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.w_gate, self.w_up = nn.Linear(D, 2 * D, bias=False), nn.Linear(D, 2 * D, bias=False)
        self.w_down = nn.Linear(2 * D, D, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.mlp = Attention(), MLP()

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, D)
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.head = nn.Linear(D, 10, bias=False)  # not a target: must stay a plain frozen Linear

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def make(rank: int = 4, seed: int = 0) -> tuple[Toy, Toy]:
    """A base model and a LoRA'd deep copy of it."""
    torch.manual_seed(seed)
    base = Toy()
    lora = copy.deepcopy(base)
    add_lora(lora, rank=rank, alpha=8.0)
    return base, lora


def randomise_b(model: nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


TOKENS = torch.randint(0, 10, (2, 7), generator=torch.Generator().manual_seed(0))


def test_add_lora_paths_and_freezing():
    base, lora = make()
    paths = add_lora(copy.deepcopy(base), rank=2, alpha=2.0)
    assert len(paths) == 14 and "blocks.1.mlp.w_down" in paths and "head" not in paths
    assert isinstance(lora.blocks[0].attn.wq, LoRALinear) and type(lora.head) is nn.Linear
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable == {f"{p}.lora_{ab}" for p in paths for ab in "ab"}
    assert all(torch.equal(m.lora_b, torch.zeros_like(m.lora_b)) for m in lora.modules() if isinstance(m, LoRALinear))


def test_no_match_raises():
    with pytest.raises(ValueError, match="no nn.Linear"):
        add_lora(Toy(), rank=2, alpha=2.0, targets=("nope",))


def test_zero_b_is_exactly_base():
    base, lora = make()
    assert torch.equal(lora(TOKENS), base(TOKENS))


def test_merge():
    base, lora = make()
    randomise_b(lora)
    unmerged = lora(TOKENS)
    assert not torch.allclose(unmerged, base(TOKENS))
    merge_lora(lora)
    merged_weights = [t.clone() for t in lora.state_dict().values()]
    assert torch.allclose(lora(TOKENS), unmerged, atol=1e-5)
    merge_lora(lora)  # idempotent
    assert all(torch.equal(a, b) for a, b in zip(merged_weights, lora.state_dict().values()))


def test_eval_does_not_merge():
    _, lora = make()
    lora.eval()
    assert not any(m.merged for m in lora.modules() if isinstance(m, LoRALinear))


def test_adamw_step_trains_only_adapters():
    base, lora = make()
    frozen = {n: p.clone() for n, p in lora.named_parameters() if not p.requires_grad}
    before = {n: p.clone() for n, p in lora.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(lora_parameters(lora), lr=1e-2)
    loss = F.cross_entropy(lora(TOKENS).flatten(0, 1), TOKENS.flatten())
    loss.backward()
    opt.step()
    for n, p in lora.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]) and p.grad is None, n
        else:
            assert not torch.equal(p, before[n]), n
    assert lora.blocks[0].mlp.w_up.lora_b.abs().sum() > 0  # B moved off zero


def test_bf16_input_stays_bf16():
    layer = LoRALinear(nn.Linear(D, D, bias=False).to(torch.bfloat16), rank=2, alpha=4.0)
    assert layer(torch.randn(3, D, dtype=torch.bfloat16)).dtype == torch.bfloat16


def save_adapter(model, path: str, metadata: dict[str, str]) -> None:
    """An adapter file as arc.model.checkpoint writes one: lora_state_dict's tensors."""
    save_file({k: v.contiguous() for k, v in lora_state_dict(model).items()}, path, metadata=metadata)


def test_save_load_roundtrip(tmp_path):
    _, lora = make()
    randomise_b(lora)
    path = str(tmp_path / "adapter.safetensors")
    save_adapter(lora, path, {"rank": "4", "note": "test"})
    _, fresh = make()
    assert not torch.allclose(fresh(TOKENS), lora(TOKENS))
    assert load_adapter(fresh, path) == {"rank": "4", "note": "test"}
    assert torch.equal(fresh(TOKENS), lora(TOKENS))
    assert set(lora_state_dict(fresh)) == set(lora_state_dict(lora))


def test_load_missing_key_raises(tmp_path):
    _, lora = make()
    state = {k: v.contiguous() for k, v in lora_state_dict(lora).items()}
    del state["blocks.0.attn.wq.lora_b"]
    path = str(tmp_path / "partial.safetensors")
    save_file(state, path)
    with pytest.raises(ValueError, match=r"partial\.safetensors.*blocks\.0\.attn\.wq\.lora_b"):
        load_adapter(lora, path)


def test_load_wrong_rank_raises(tmp_path):
    _, lora = make(rank=4)
    path = str(tmp_path / "r4.safetensors")
    save_adapter(lora, path, {})
    _, other = make(rank=2)
    with pytest.raises(ValueError, match="shape"):
        load_adapter(other, path)


def test_real_model_step0_equals_base():
    model_mod = pytest.importorskip("arc.model.transformer")
    torch.manual_seed(0)
    cfg = model_mod.ModelConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=4, max_seq_len=64, rope="1d")
    base = model_mod.Transformer(cfg)
    lora = copy.deepcopy(base)
    paths = add_lora(lora, rank=4, alpha=8.0)
    assert len(paths) == 7 * cfg.n_layers
    tokens = torch.randint(0, 16, (2, 12))
    assert torch.equal(lora(tokens), base(tokens))


def test_remove_lora_restores_plain_linears():
    base, lora = make()
    randomise_b(lora)
    wrapped = lora.blocks[1].mlp.w_down.base
    remove_lora(lora)
    assert not any(isinstance(m, LoRALinear) for m in lora.modules())
    assert lora.blocks[1].mlp.w_down is wrapped  # the very same nn.Linear object is back in place
    assert lora.state_dict().keys() == base.state_dict().keys()
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in lora.state_dict().items())
    assert torch.equal(lora(TOKENS), base(TOKENS))
    remove_lora(lora)  # nothing left to remove: a no-op


def test_remove_lora_refuses_merged():
    _, lora = make()
    randomise_b(lora)
    merge_lora(lora)
    with pytest.raises(ValueError, match="merged.*keep their update"):
        remove_lora(lora)
    assert isinstance(lora.blocks[0].attn.wq, LoRALinear)  # refused before changing anything


def test_full_parameters_train_beside_the_adapters_and_travel_with_them(tmp_path):
    """add_lora(full=...): those parameters stay trainable, an optimiser step moves them, the adapter file
    holds them whole, and loading it (with the same `full`) restores them; everything else is frozen."""
    torch.manual_seed(0)
    base = Toy()
    lora = copy.deepcopy(base)
    add_lora(lora, rank=4, alpha=8.0, full=("embed.weight", "head.weight"))
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert {"embed.weight", "head.weight"} < trainable and len(trainable) == 2 + 2 * 14
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    F.cross_entropy(lora(TOKENS).flatten(0, 1), TOKENS.flatten()).backward()
    optimizer.step()
    assert not torch.equal(lora.embed.weight, base.embed.weight) and not torch.equal(lora.head.weight, base.head.weight)
    assert torch.equal(lora.blocks[0].attn.wq.base.weight, base.blocks[0].attn.wq.weight)  # the base is frozen

    path = str(tmp_path / "adapter.safetensors")
    save_adapter(lora, path, {})
    assert set(lora_state_dict(lora)) == {f"{p}.lora_{ab}" for p in lora_paths(lora) for ab in "ab"} | {"embed.weight", "head.weight"}
    fresh = copy.deepcopy(base)
    add_lora(fresh, rank=4, alpha=8.0, full=("embed.weight", "head.weight"))
    load_adapter(fresh, path)
    assert torch.equal(fresh(TOKENS), lora(TOKENS))
    plain = copy.deepcopy(base)
    add_lora(plain, rank=4, alpha=8.0)  # without `full`: the file's whole tensors are unexpected
    with pytest.raises(ValueError, match="unexpected keys.*embed.weight"):
        load_adapter(plain, path)
    with pytest.raises(ValueError, match="no parameter named"):
        add_lora(copy.deepcopy(base), rank=4, alpha=8.0, full=("embedding.weight",))


def lora_paths(model) -> list[str]:
    return [path for path, m in model.named_modules() if isinstance(m, LoRALinear)]


def test_cast_frozen_keeps_trained_parameters_in_fp32():
    torch.manual_seed(0)
    lora = Toy()
    add_lora(lora, rank=4, alpha=8.0, full=("head.weight",))
    cast_frozen(lora, torch.bfloat16)
    dtypes = {n: p.dtype for n, p in lora.named_parameters()}
    assert dtypes["blocks.0.attn.wq.base.weight"] == dtypes["embed.weight"] == torch.bfloat16
    assert dtypes["blocks.0.attn.wq.lora_a"] == dtypes["head.weight"] == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lora(TOKENS).float().sum().backward()  # runs under autocast, gradients reach the fp32 parameters
    assert lora.head.weight.grad.dtype == torch.float32 and lora.blocks[0].attn.wq.lora_a.grad is not None

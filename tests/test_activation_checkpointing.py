"""Activation checkpointing (Transformer.activation_checkpointing, --activation-checkpointing): in training,
each block runs again in the backward pass instead of keeping its activations, and the gradients are the
ones computed without it; evaluation and decoding are untouched."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY
from safetensors.torch import load_file

from arc.model.checkpoint import checkpoint_dir
from arc.model.transformer import Block, Transformer
from arc.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")

# grid positions and 3-D RoPE: every per-token input a block takes (cos, sin from the grid state)
CFG = replace(TINY, grid_positions=True, rope="3d")


def gradients(checkpointing: bool) -> dict:
    torch.manual_seed(0)
    model = Transformer(CFG).train()
    model.activation_checkpointing = checkpointing
    tokens = torch.randint(0, 15, (2, 24), generator=torch.Generator().manual_seed(1))
    logits = model(tokens)
    F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_checkpointed_blocks_run_twice_and_give_the_same_gradients(monkeypatch):
    runs = []
    forward = Block.forward
    monkeypatch.setattr(Block, "forward", lambda self, *args, **kwargs: runs.append(1) or forward(self, *args, **kwargs))
    plain = gradients(False)
    plain_runs = len(runs)
    checkpointed = gradients(True)
    assert plain_runs == TINY.n_layers and len(runs) - plain_runs == 2 * TINY.n_layers  # forward, then recompute
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=0, msg=name)


def test_eval_and_cache_forwards_ignore_the_flag():
    torch.manual_seed(0)
    model = Transformer(CFG).eval()
    tokens = torch.randint(0, 15, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(tokens)
        model.activation_checkpointing = True
        assert torch.equal(model(tokens), plain)
        cached = model(tokens, cache=model.new_cache(2, capacity=16))
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-5)


def test_training_with_the_flag_gives_the_same_weights(tiny_train_config):
    plain = train(tiny_train_config("plain", max_steps=2))
    checkpointed = train(tiny_train_config("checkpointed", max_steps=2, activation_checkpointing=True))
    a, b = load_file(str(checkpoint_dir(plain) / "model.safetensors")), load_file(str(checkpoint_dir(checkpointed) / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0, msg=name)

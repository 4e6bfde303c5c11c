"""arc.training.optim: the schedule's known values, which parameters are decayed, and the optimiser step: a mean
per target token across micro-batches, clipping to the given norm, gradients freed afterwards."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import TINY

from arc.layouts.rows import IGNORE, Batch
from arc.model.transformer import Transformer
from arc.training.optim import lr_at, make_optimizer, optimizer_step

CPU = torch.device("cpu")


def test_lr_schedule_known_values():
    assert [lr_at(s, 1.0, 4, 14, 0.1) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(9, 1.0, 4, 14, 0.1) == pytest.approx(0.55)  # halfway through the cosine: (1 + 0.1) / 2
    assert lr_at(14, 1.0, 4, 14, 0.1) == pytest.approx(0.1)
    assert lr_at(100, 1.0, 4, 14, 0.1) == pytest.approx(0.1)


def test_decay_on_trainable_matrices_only():
    model = Transformer(TINY)
    model.head.weight.requires_grad_(False)
    decay, no_decay = make_optimizer(model, lr=1e-3, weight_decay=0.1).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, undecayed = {names[id(p)] for p in decay["params"]}, {names[id(p)] for p in no_decay["params"]}
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert "blocks.0.attn.wq.weight" in decayed and "head.weight" not in decayed | undecayed  # frozen: left out
    assert {"embed.weight", "norm.weight", "blocks.0.attn_norm.weight"} <= undecayed
    assert all(p.ndim >= 2 for p in decay["params"]) and not any(n.startswith("embed") for n in decayed)


class Lookup(nn.Embedding):
    """logits = a row of a table per input token: the simplest forward with a gradient."""

    def forward(self, tokens, task=None, transform=None):
        return super().forward(tokens)


def lookup_model() -> Lookup:
    torch.manual_seed(0)
    return Lookup(5, 5)


def batches(inputs, targets) -> list[Batch]:
    return [Batch(i, t, torch.zeros(len(i), dtype=torch.long), torch.zeros(len(i), dtype=torch.long))
            for i, t in zip(inputs, targets)]


# two micro-batches with different numbers of target tokens (3 and 1)
INPUTS = torch.tensor([[0, 1, 2], [3, 4, 0]]), torch.tensor([[1, 2, 3]])
TARGETS = torch.tensor([[1, 2, IGNORE], [4, IGNORE, IGNORE]]), torch.tensor([[IGNORE, IGNORE, 0]])


def test_loss_is_the_mean_per_target_token_over_all_micro_batches():
    model = lookup_model()
    logits = torch.cat([model(i).flatten(0, 1) for i in INPUTS]).detach()
    expected = F.cross_entropy(logits, torch.cat([t.flatten() for t in TARGETS]), ignore_index=IGNORE)
    before = model.weight.detach().clone()
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    loss = optimizer_step(model, sgd, list(model.parameters()), batches(INPUTS, TARGETS), 0.0, CPU, None)
    assert loss == pytest.approx(float(expected))
    assert model.weight.grad is None  # freed after the step

    # the same step as one batch of all rows: the same update (a mean per token, not per micro-batch)
    one = lookup_model()
    batch = batches([torch.cat([INPUTS[0], INPUTS[1]])], [torch.cat([TARGETS[0], TARGETS[1]])])
    optimizer_step(one, torch.optim.SGD(one.parameters(), lr=1.0), list(one.parameters()), batch, 0.0, CPU, None)
    torch.testing.assert_close(model.weight, one.weight)
    assert not torch.equal(model.weight, before)


def test_gradient_clipped_to_the_given_norm():
    model = lookup_model()
    before = model.weight.detach().clone()
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    optimizer_step(model, sgd, list(model.parameters()), batches(INPUTS, TARGETS), 1e-3, CPU, None)
    # SGD with lr 1 moves by the gradient; clip_grad_norm_ scales to max_norm / (norm + 1e-6)
    assert float((before - model.weight.detach()).norm()) == pytest.approx(1e-3, rel=1e-4)

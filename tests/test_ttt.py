"""arc.inference.ttt: leave-one-out rows (the in-context layout's demonstration sampler) use only the demonstrations, the adapter always comes off leaving the base
model bitwise unchanged, and a few dozen steps really lower the loss on a tiny model."""
import contextlib

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import TINY

from arc.data.augment import Augmentation
from arc.data.tasks import Pair, Task
from arc.data.tokenizer import SYMBOLS, GridTokenizer, grid_length
from arc.inference import ttt
from arc.layouts.in_context import InContextLayout
from arc.infra.errors import ConfigError
from arc.layouts.rows import NoRows
from arc.model.config import DEFAULT_TARGETS
from arc.model.lora import add_lora, lora_modules
from arc.model.transformer import Transformer
from arc.training.scoring import output_token_loss

ROWS = InContextLayout(GridTokenizer())
CPU = torch.device("cpu")


def swap_12(grid: np.ndarray) -> np.ndarray:
    out = grid.copy()
    out[grid == 1], out[grid == 2] = 2, 1
    return out


def swap_task(seed: int, n_train: int = 3, nines: bool = False) -> Task:
    """Colour swap 1 <-> 2 on random 3x3 grids of colours 0..2; with `nines` the test input is all 9s,
    a colour no demonstration uses."""
    rng = np.random.default_rng(seed)
    grids = [rng.integers(0, 3, size=(3, 3)).astype(np.uint8) for _ in range(n_train + 1)]
    test_input = np.full((3, 3), 9, dtype=np.uint8) if nines else grids[-1]
    return Task("swap", [Pair(g, swap_12(g)) for g in grids[:n_train]], [Pair(test_input, swap_12(test_input))])


def grid_of(text: str) -> np.ndarray:
    return np.array([[int(c) for c in line] for line in text.split("\n")[:-1]], dtype=np.uint8)


def pairs_of(ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode a row 'B I..O..E I..O..E ...' back into its (input, output) grids; the last is the test."""
    text = "".join(SYMBOLS[i] for i in ids)
    assert text[0] == "B" and text[-1] == "E"
    return [tuple(grid_of(g) for g in chunk[1:].split("O")) for chunk in text[1:-1].split("E")]


def test_rows_without_augmentation_hold_out_one_demo_each():
    task = swap_task(0, nines=True)
    sampler = ROWS.demonstration_sampler([task], 128, seed=0, augment=False)
    rows, held_out = [sampler.row(i) for i in range(12)], set()
    for row in rows:
        assert 9 not in row.ids  # the task's test input (all 9s) is never shown
        pairs = pairs_of(row.ids)
        [held] = [j for j, p in enumerate(task.train) if np.array_equal(pairs[-1][0], p.input)]
        held_out.add(held)
        others = [p for j, p in enumerate(task.train) if j != held]
        assert np.array_equal(pairs[-1][0], task.train[held].input)
        assert np.array_equal(pairs[-1][1], task.train[held].output)
        assert all(np.array_equal(a, p.input) and np.array_equal(b, p.output) for (a, b), p in zip(pairs[:-1], others))
        # loss on the pseudo-test output and on the context outputs after the first (each + its 'E')
        assert row.loss_mask.sum() == sum(grid_length(b) + 1 for _, b in pairs[1:])
    assert held_out == {0, 1, 2}  # each demonstration serves as the pseudo-test


def test_augmented_rows_are_symmetries_of_a_demo():
    task = swap_task(1)
    sampler = ROWS.demonstration_sampler([task], 128, seed=0)
    rows = [sampler.row(i) for i in range(8)]
    assert len({r.ids.tobytes() for r in rows}) > 1  # fresh augmentation per row

    def matches(pair: Pair, got_in: np.ndarray, got_out: np.ndarray) -> bool:
        """Is (got_in, got_out) the pair under some D8 transform and a colour renaming that keeps 0?"""
        for k in range(8):
            d8 = Augmentation(k, tuple(range(10)), ())
            a, b = d8.apply_grid(pair.input), d8.apply_grid(pair.output)
            if a.shape != got_in.shape or b.shape != got_out.shape:
                continue
            src, dst = np.concatenate([a.ravel(), b.ravel()]), np.concatenate([got_in.ravel(), got_out.ravel()])
            mapping = dict(zip(src.tolist(), dst.tolist()))
            if mapping.get(0, 0) == 0 and all(mapping[s] == d for s, d in zip(src.tolist(), dst.tolist())) \
                    and len(set(mapping.values())) == len(mapping):
                return True
        return False

    for row in rows:
        got_in, got_out = pairs_of(row.ids)[-1]
        assert any(matches(p, got_in, got_out) for p in task.train)


def test_one_demo_gives_no_rows_and_skips():
    task = swap_task(0, n_train=1)
    with pytest.raises(NoRows, match="at least 2"):
        ROWS.demonstration_sampler([task], 128, seed=0)
    torch.manual_seed(0)
    model = Transformer(TINY)
    with ttt.task_training(model, task, ROWS, ttt.TTTConfig(steps=2, train="lora"), CPU, 128) as report:
        assert report.skipped and "at least 2" in report.skipped and report.steps == 0
        assert not lora_modules(model)


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "linears": {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)},
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": model.training,
    }


def assert_restored(model: nn.Module, before: dict) -> None:
    assert not lora_modules(model)
    assert {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)} == before["linears"]  # same objects
    state = model.state_dict()
    assert state.keys() == before["state"].keys()
    assert all(torch.equal(state[k], v) for k, v in before["state"].items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before["flags"]
    assert model.training == before["training"]


@pytest.mark.parametrize("train", ["lora", "full"])
@pytest.mark.parametrize("fail", [False, True])
def test_task_training_leaves_the_model_bitwise_unchanged(train, fail, one_thread):
    torch.manual_seed(0)
    model = Transformer(TINY).train()
    model.embed.requires_grad_(False)  # a mix of flags, which must come back exactly
    before = snapshot(model)
    task = swap_task(2)
    with pytest.raises(RuntimeError, match="inside") if fail else contextlib.nullcontext():
        with ttt.task_training(model, task, ROWS, ttt.TTTConfig(steps=3, lr=1e-2, train=train), CPU, 128) as report:
            assert report.skipped is None and report.steps == 3 and not model.training
            if train == "lora":
                assert len(lora_modules(model)) == len(DEFAULT_TARGETS) * TINY.n_layers
                assert not any(m.merged for m in lora_modules(model).values())
            else:
                assert not torch.equal(model.head.weight, before["state"]["head.weight"])  # it did move
            if fail:
                raise RuntimeError("failure inside the with-block")
    assert_restored(model, before)


def test_lora_training_refuses_a_model_that_already_has_an_adapter():
    model = Transformer(TINY)
    add_lora(model, rank=2, alpha=4.0)
    with pytest.raises(ConfigError, match="without LoRA"):  # checked once by the caller (evaluate), before any task
        ttt.check_trainable(model, ROWS, "lora")
    assert len(lora_modules(model)) == len(DEFAULT_TARGETS) * TINY.n_layers  # the existing adapter is kept
    with pytest.raises(ConfigError, match="no task embeddings"):
        ttt.check_trainable(Transformer(TINY), ROWS, "embeddings")


def test_ttt_lowers_the_loss(one_thread):
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    # This project initialises the head at std 0.02, so a fresh model's logits stay within about +-0.7 and
    # LoRA (which does not touch the head) cannot make them confident. A trained model's head is larger;
    # the usual 1/sqrt(d_model) scale stands in for that. In 32 steps the tiny model learns the outputs'
    # statistics (colours, row ends, shape), not the swap rule itself: this tests the mechanism.
    nn.init.normal_(model.head.weight, std=TINY.d_model ** -0.5)
    task = swap_task(0)
    test_row = ROWS.encode(task.examples()[0])  # the real test pair: never trained on
    tokens = torch.from_numpy(test_row.ids)[None]
    with torch.no_grad():
        base_logits = model(tokens)
    base_test_loss = output_token_loss(model, [test_row])
    with ttt.task_training(model, task, ROWS, ttt.TTTConfig(steps=32, lr=3e-3, train="lora", batch_size=4), CPU, 128) as report:
        assert report.steps == 32
        assert report.last_loss < 0.7 * report.first_loss, report
        with torch.no_grad():
            assert not torch.allclose(model(tokens), base_logits)
        # ... and it carries over to the held-out test output, which only the demonstrations informed
        assert output_token_loss(model, [test_row]) < 0.85 * base_test_loss
    with torch.no_grad():
        assert torch.equal(model(tokens), base_logits)


def test_leave_one_out_picks_a_step_count_and_leaves_the_model_unchanged(one_thread):
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    before = snapshot(model)
    cfg = ttt.TTTConfig(steps=20, lr=3e-3, train="full", stop="loo")
    chosen = ttt.loo_steps(model, swap_task(0), ROWS, cfg, CPU, 128)
    assert chosen in range(0, 21, 2)  # measured every steps // 10 = 2 steps, 0 included
    assert_restored(model, before)
    with ttt.task_training(model, swap_task(0), ROWS, cfg, CPU, 128) as report:
        assert report.chosen_steps == chosen and report.steps == chosen
    assert_restored(model, before)
    assert ttt.loo_steps(model, swap_task(0, n_train=1), ROWS, cfg, CPU, 128) == 20  # nothing to hold out

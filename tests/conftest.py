"""Shared tiny fixtures: a tiny seeded model, a rigged "bigram" model, small task folders and a tiny
training config. Everything is written under pytest's tmp_path."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from arc import checkpoint
from arc.model import ModelConfig, Transformer
from arc.tokenizer import VOCAB_SIZE
from arc.trainer import TrainConfig

TINY = ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=128)


def random_task(rng: np.random.Generator, n_train: int = 2, n_test: int = 1, side: int = 3) -> dict:
    """A task in the JSON layout, with random grids of 1..side cells per side (output: the input flipped)."""
    def pair():
        h, w = (int(x) for x in rng.integers(1, side + 1, size=2))
        grid = rng.integers(0, 10, size=(h, w))
        return {"input": grid.tolist(), "output": grid[:, ::-1].tolist()}
    return {"train": [pair() for _ in range(n_train)], "test": [pair() for _ in range(n_test)]}


def write_tasks(folder, tasks: dict) -> str:
    """Write {task_id: task JSON} as <folder>/<task_id>.json; returns the folder as a string."""
    folder.mkdir(parents=True, exist_ok=True)
    for task_id, task in tasks.items():
        (folder / f"{task_id}.json").write_text(json.dumps(task))
    return str(folder)


@pytest.fixture
def tiny_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(TINY).eval()


def bigram_model(next_token: dict[int, int]) -> Transformer:
    """A model whose greedy choice is a fixed function of the current token: next_token[t], else t.

    Attention and MLP outputs are zeroed (wo = w_down = 0), so the residual stream is the token's
    embedding: one-hot on channel t. The head maps channel t to logit next_token[t] (10 vs 0 elsewhere).
    """
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("wo.weight", "w_down.weight")):
                p.zero_()
        model.embed.weight.copy_(torch.eye(VOCAB_SIZE, TINY.d_model))
        model.head.weight.zero_()
        for t in range(VOCAB_SIZE):
            model.head.weight[next_token.get(t, t), t] = 10.0
    return model


@pytest.fixture
def task_dirs(tmp_path) -> tuple[str, str]:
    """A training folder of 3 small tasks and a held-out folder of 1 task (used with eval_set="all")."""
    rng = np.random.default_rng(0)
    train_dir = write_tasks(tmp_path / "train_tasks", {f"t{i}": random_task(rng) for i in range(3)})
    eval_dir = write_tasks(tmp_path / "eval_tasks", {"heldout0": random_task(rng)})
    return train_dir, eval_dir


@pytest.fixture
def tiny_train_config(tmp_path, task_dirs):
    """Factory: a tiny CPU/fp32 TrainConfig writing to tmp_path/<out>, with overrides. torch.compile is
    off: compiling costs far more than the few steps a test runs."""
    train_dir, eval_dir = task_dirs

    def make(out: str, **overrides) -> TrainConfig:
        base = TrainConfig(
            layout="in_context", data=train_dir, eval_data=eval_dir, eval_set="all", model=TINY,
            max_steps=6, batch_size=2, warmup_steps=2, precision="fp32", compile=False, device="cpu",
            log_every=1000, eval_every=1000, save_every=1000, out=str(tmp_path / out), seed=0,
        )
        return replace(base, **overrides)

    return make


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not fight over the cores with other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def failing_at(monkeypatch, point: str, n: int, error: BaseException) -> None:
    """Make the n-th file write of arc.checkpoint's saves (point "write", 4 per save: weights, tokenizer,
    train state, config; a half-written file is left), the n-th commit (the rename of the step folder)
    or the n-th clean-up after a commit raise error."""
    target = {"write": "_write", "commit": "_commit", "cleanup": "_remove_leftovers"}[point]
    real, calls = getattr(checkpoint, target), []

    def fake(*args, **kwargs):
        if point != "cleanup" or kwargs.get("keep"):  # the clean-up also runs before a save: count the one after the commit
            calls.append(args)
        if len(calls) == n + 1:
            if point == "write":
                args[0].write_bytes(b"half a file")
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, target, fake)

"""Shared tiny fixtures and helpers: a tiny seeded model, a rigged "bigram" model, small task folders, training
configs from flat settings and a tiny one, tiny random Hugging Face Llama folders, the grid helper g(), an
evaluation's two prediction stages in one call. Everything is written under pytest's tmp_path."""
import importlib.util
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from arc.data.tokenizer import VOCAB_SIZE
from arc.inference.predict import generate, select
from arc.layouts.config import LayoutConfig
from arc.model import checkpoint
from arc.model.config import ModelConfig
from arc.model.transformer import Transformer
from arc.training.config import TrainConfig

TINY = ModelConfig(d_model=32, n_layers=2, n_heads=4, max_seq_len=128, rope="1d")
SMALL = replace(TINY, d_model=16, n_layers=1, n_heads=2)  # smaller still: runs of many steps


def g(rows) -> np.ndarray:
    """A grid from nested lists: g([[1, 2], [3, 4]])."""
    return np.array(rows, dtype=np.uint8)


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


def predict(model, layout, examples, context_tokens: int, cfg, amp_dtype=None, seed: int = 0):
    """Attempts for every example, as an evaluation makes them for one group of tasks: generate, then select."""
    found = generate(model, layout, examples, context_tokens, cfg, amp_dtype, seed)
    return select(model, layout, found, context_tokens, cfg, amp_dtype, seed)


@pytest.fixture(params=[False, True], ids=["llama", "grid_positions"])
def sharp_model(request) -> Transformer:
    """A random tiny model with large weights, so its greedy choices are far from ties (CPU and GPU
    arithmetic differ in the last bits, never in the argmax: tests/test_cuda.py)."""
    torch.manual_seed(1)
    model = Transformer(replace(TINY, grid_positions=request.param)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(std=0.5)
    return model


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


LAYOUT_OPTIONS = {f.name for f in fields(LayoutConfig)} - {"name"}


def train_config(base: TrainConfig | None = None, **settings) -> TrainConfig:
    """base (default TrainConfig()) with settings named as train.py's flags name them, flat: layout="pair" and
    the layout's options (view_pool=4) go into its nested LayoutConfig, the others are TrainConfig's fields."""
    base = TrainConfig() if base is None else base
    layout = {name: settings.pop(name) for name in list(settings) if name in LAYOUT_OPTIONS}
    if "layout" in settings:
        layout["name"] = settings.pop("layout")
    return replace(base, layout=replace(base.layout, **layout), **settings)


@pytest.fixture
def tiny_train_config(tmp_path, task_dirs):
    """Factory: a tiny CPU/fp32 TrainConfig writing to tmp_path/<out>, with overrides. torch.compile is
    off: compiling costs far more than the few steps a test runs."""
    train_dir, eval_dir = task_dirs

    def make(out: str, **overrides) -> TrainConfig:
        """overrides: as train_config's (the layout's options flat)."""
        # with init the checkpoint decides the model: model settings other than the defaults are refused
        model = ModelConfig() if overrides.get("init") else TINY
        base = TrainConfig(
            layout=LayoutConfig(name="in_context"), data=train_dir, eval_data=eval_dir, eval_set="all", model=model,
            max_steps=6, batch_size=2, warmup_steps=2, precision="fp32", compile=False, device="cpu",
            log_every=1000, eval_every=1000, save_every=1000, out=str(tmp_path / out), seed=0,
        )
        return train_config(base, **overrides)

    return make


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not fight over the cores with other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_bench(name: str):
    """bench/ is not a package: load bench/<name>.py (name may be "experiments/stage_table") from its path
    (importing it runs nothing)."""
    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location("bench_" + name.replace("/", "_"), path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


# Tiny random LlamaForCausalLM folders (bench/make_llama.py). Weights spread wide (init_std) so attention is
# sharp: a wrong position, head or norm would show in the logits. The original context of the llama3
# scaling is short, so the scaling changes the frequencies the tiny model uses.
TINY_LLAMAS = {
    "gqa_tied_llama3": dict(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=32, intermediate=96, max_position=256,
                            rope_theta=500000.0, tie=True, init_std=0.3, rope_scaling={
                                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 64}),
    "mha_untied_sharded": dict(hidden=48, layers=2, heads=4, kv_heads=4, intermediate=80, max_position=256, tie=False,
                               init_std=0.3, max_shard_size="200KB"),
}


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """Factory: the folder of the named TINY_LLAMAS model, written once per session (needs transformers)."""
    pytest.importorskip("transformers")
    make_llama, made = load_bench("make_llama").make_llama, {}

    def get(name: str) -> str:
        if name not in made:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            made[name] = str(make_llama(tmp_path_factory.mktemp(name), **TINY_LLAMAS[name]))
            torch.set_num_threads(threads)
        return made[name]

    return get


def failing_at(monkeypatch, point: str, n: int, error: BaseException) -> None:
    """Make the n-th file write of arc.model.checkpoint's saves (point "write", 4 per save: weights, tokenizer,
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

"""Our model computes what Hugging Face's LlamaForCausalLM computes once given our weights (through
bench/speed.py's copy_weights_to_hf): the check that makes the speed benchmark's peer a fair comparison,
and an outside reference for our RoPE, RMSNorm, attention and SwiGLU; and the core never imports
transformers. Skipped without transformers (requirements-test.txt installs it)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.LlamaForCausalLM  # noqa: B018 - resolve the lazy import (seconds) at collection, not in a test

from arc.data.tokenizer import PAD  # noqa: E402
from arc.inference.decode import greedy_decode  # noqa: E402
from arc.layouts.rows import token_row

pytestmark = pytest.mark.usefixtures("one_thread")


def load_bench_speed():
    """bench/ is not a package: load bench/speed.py from its path (importing it runs nothing)."""
    path = Path(__file__).resolve().parent.parent / "bench" / "speed.py"
    spec = importlib.util.spec_from_file_location("bench_speed", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


speed = load_bench_speed()


def random_prompts(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, PAD, (rows, length), generator=torch.Generator().manual_seed(seed))  # no PAD


def test_logits_match(tiny_model):
    peer = speed.hf_peer(tiny_model)
    tokens = random_prompts(3, 100)
    with torch.no_grad():
        ours, theirs = tiny_model(tokens), peer(input_ids=tokens).logits
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < 1e-4


def test_copy_reaches_every_weight(tiny_model):
    """A changed weight of ours changes the peer's logits: nothing is left at the peer's own init."""
    tokens = random_prompts(1, 30)
    with torch.no_grad():
        tiny_model.blocks[1].mlp.w_up.weight.mul_(1.5)
        peer = speed.hf_peer(tiny_model)
        torch.testing.assert_close(peer(input_ids=tokens).logits, tiny_model(tokens), atol=1e-4, rtol=0)


def test_greedy_tokens_match(tiny_model):
    peer = speed.hf_peer(tiny_model)
    prompts = random_prompts(2, 20, seed=1)
    ours = greedy_decode(tiny_model, [token_row(p) for p in prompts.tolist()], [10, 10], end_id=speed.NO_END, pad_id=PAD)
    theirs = speed.hf_greedy(peer, prompts, 10).tolist()
    assert [len(row) for row in ours] == [10, 10]
    assert ours == theirs


def test_the_core_never_imports_transformers():
    """transformers is a test and benchmark dependency only: importing every arc module must not load it."""
    code = ("import importlib, pkgutil, sys, arc\n"
            "for m in pkgutil.walk_packages(arc.__path__, 'arc.'): importlib.import_module(m.name)\n"
            "assert 'transformers' not in sys.modules, 'an arc module imports transformers'\n")
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)

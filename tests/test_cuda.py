"""The CUDA path, run where a GPU is at hand (bench/gpu_check.sh runs the suite there) and skipped
elsewhere: the model's logits on the GPU (fp32, and under bf16 autocast), KV-cache decoding on the GPU
(eager and with the compiled step) against the CPU's tokens, and a short compiled bf16 training run
of the pair layout, stopped and resumed on the GPU, whose checkpoint computes on the CPU what it
computed on the GPU."""
import copy
import math

import pytest
import torch

from arc.data.tokenizer import PAD
from arc.inference.decode import greedy_decode
from arc.layouts.rows import token_row
from arc.model.checkpoint import load_model, read_config
from arc.training.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")
PROMPTS = [[13, 11, 1, 2, 10, 12], [13, 11, 3, 10, 4, 10, 12, 5, 10, 14, 11, 6, 10, 12], [13, 11, 7, 7, 10, 12, 9]]


def test_gpu_logits_match_the_cpu(sharp_model):
    tokens = torch.randint(0, PAD, (2, 40), generator=torch.Generator().manual_seed(0))
    gpu = copy.deepcopy(sharp_model).to(CUDA)
    with torch.no_grad():
        cpu_logits = sharp_model(tokens)
        gpu_logits = gpu(tokens.to(CUDA)).cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16_logits = gpu(tokens.to(CUDA)).float().cpu()
    torch.testing.assert_close(gpu_logits, cpu_logits, atol=1e-3, rtol=1e-4)  # TF32 off by default: fp32 matmuls
    cosine = torch.nn.functional.cosine_similarity(bf16_logits.flatten(), cpu_logits.flatten(), dim=0)
    assert cosine > 0.99, f"bf16 autocast logits drift from fp32: cosine {cosine:.4f}"


def test_gpu_kv_cache_decoding_gives_the_cpu_tokens(sharp_model):
    """Eager with both models; the compiled step (arc.inference.decode, tens of seconds to compile a graph) with
    the grid-position model only, whose step does everything the plain one does and more."""
    expected = greedy_decode(sharp_model, [token_row(p) for p in PROMPTS], [12, 9, 15], -1, PAD)
    gpu = copy.deepcopy(sharp_model).to(CUDA)
    for compile in (False, True) if sharp_model.cfg.grid_positions else (False,):
        assert greedy_decode(gpu, [token_row(p) for p in PROMPTS], [12, 9, 15], -1, PAD, compile=compile) == expected, f"compile={compile}"
        bf16 = greedy_decode(gpu, [token_row(p) for p in PROMPTS], [12, 9, 15], -1, PAD, autocast_dtype=torch.bfloat16, compile=compile)
        assert [len(row) for row in bf16] == [12, 9, 15]


def test_compiled_bf16_pair_training_resumes_on_the_gpu(tiny_train_config):
    make = lambda **kw: tiny_train_config("cuda_run", **{"layout": "pair", "device": "cuda", "precision": "auto",  # noqa: E731
                                                          "compile": True, "max_steps": 4, **kw})
    train(make(stop_at_step=2))
    out = train(make(), resume=True)
    config = read_config(out)
    assert config["step"] == 4
    assert math.isfinite(config["metrics"]["eval_loss"])
    cpu_model, _, _ = load_model(out, "cpu")
    gpu_model, _, _ = load_model(out, CUDA)
    tokens, ids = torch.randint(0, PAD, (2, 20), generator=torch.Generator().manual_seed(0)), torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        cpu_logits = cpu_model.eval()(tokens, task=ids, transform=ids)
        gpu_logits = gpu_model.eval()(tokens.to(CUDA), task=ids.to(CUDA), transform=ids.to(CUDA)).cpu()
    torch.testing.assert_close(gpu_logits, cpu_logits, atol=1e-3, rtol=1e-4)

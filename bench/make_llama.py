"""Write a random Hugging Face Llama folder (config.json, model.safetensors, tokenizer.json), to exercise
arc.model.hf's import without a pretrained download: the tests' tiny models, the CPU smoke run of RESULTS.md,
and a Llama-3.2-1B-shaped model for measuring speed and memory on a GPU. The weights are random; the
shapes, the grouped-query attention, the tied embeddings and the llama3 RoPE scaling are a real Llama's.

The tokenizer is a byte-level BPE in Llama 3's manner: every byte is a token ("\\n" is "Ċ"), plus merged
pairs of digits and letters (so "12" is one token, and the vocabulary runs to a few thousand entries), and
begin/end-of-text tokens at its end. Llama 3 has no padding token; neither has this one.

    python bench/make_llama.py --out /tmp/llama-smoke                      # 4 layers, hidden 256, 4/2 heads
    python bench/make_llama.py --shape llama-3.2-1b --out /tmp/llama-1b    # Llama-3.2-1B's shapes (1.24B parameters, bf16)

Needs transformers (requirements-test.txt), as every benchmark that builds a reference model does.
"""
from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}
SHAPES = {
    # the CPU smoke run: small enough to train a few hundred steps on one core
    "smoke": dict(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=704, max_position=8192, rope_theta=500000.0,
                  rope_scaling=LLAMA3_SCALING, tie=True),
    # meta-llama/Llama-3.2-1B's config.json, with random weights
    "llama-3.2-1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, head_dim=64, intermediate=8192, vocab_size=128256,
                         max_position=131072, rope_theta=500000.0, rope_scaling=LLAMA3_SCALING, tie=True, rms_eps=1e-5,
                         dtype=torch.bfloat16),
}
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"


def byte_level_tokenizer() -> Tokenizer:
    """Every byte as a token, then every pair of digits and ASCII letters merged, then BOS and EOS."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    chars = string.digits + string.ascii_letters
    merges = [(a, b) for a in chars for b in chars]
    vocab = {token: i for i, token in enumerate(alphabet + [a + b for a, b in merges])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([BOS, EOS])
    return tokenizer


def make_llama(out: str | Path, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
               head_dim: int | None = None, vocab_size: int | None = None, max_position: int = 2048,
               rope_theta: float = 10000.0, rope_scaling: dict | None = None, tie: bool = True, rms_eps: float = 1e-6,
               init_std: float = 0.02, seed: int = 0, dtype: torch.dtype = torch.float32,
               max_shard_size: str | None = None) -> Path:
    """Save a random LlamaForCausalLM and its tokenizer in `out`; returns the folder. vocab_size: the
    embedding's rows (default: the tokenizer's size; more rows are never produced by the tokenizer).
    init_std: the weights' spread (tests use a large one, so attention is sharp and a wrong position or
    head would show in the logits); norm gains are random around 1 for the same reason."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    tokenizer = byte_level_tokenizer()
    rope = {"rope_type": "default", "rope_theta": rope_theta} if rope_scaling is None else {**rope_scaling, "rope_theta": rope_theta}
    config = LlamaConfig(
        vocab_size=vocab_size or tokenizer.get_vocab_size(), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=head_dim or hidden // heads, max_position_embeddings=max_position, rms_norm_eps=rms_eps,
        rope_parameters=rope, tie_word_embeddings=tie, initializer_range=init_std,
        bos_token_id=tokenizer.token_to_id(BOS), eos_token_id=tokenizer.token_to_id(EOS), pad_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape))
    model.to(dtype).save_pretrained(out, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    tokenizer.save(str(out / "tokenizer.json"))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smoke")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = make_llama(args.out, seed=args.seed, **SHAPES[args.shape])
    config = json.loads((folder / "config.json").read_text())
    print(f"wrote {folder}: a random {args.shape} Llama, {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
          f"vocab {config['vocab_size']}")

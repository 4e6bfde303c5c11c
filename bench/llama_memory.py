"""What a LoRA fine-tune of a Llama-3.2-1B-shaped model holds in GPU memory, counted on the CPU from the
model's own shapes and the tensors autograd keeps: the README's "what fits on a 24 GB / 80 GB GPU" note.

    python bench/llama_memory.py --threads 1

Counted, not measured on a GPU (none was at hand when this was written):
    weights      every parameter of the 16-layer model with the vocabulary cut to 16 tokens, in bf16
                 (--lora-base-bf16) and in fp32
    training     the trained parameters (LoRA rank 32 on the 7 projections, the embedding and head rows)
                 in fp32 with their gradient and AdamW's two moments: 16 bytes each
    activations  bytes autograd saves for the backward pass per token, under bf16 autocast (unique
                 storages seen by torch.autograd.graph.saved_tensors_hooks, weights excluded): a 2-layer
                 minus a 1-layer model gives a block's, the 1-layer model's remainder the embedding's,
                 final norm's and head's; two row lengths apart, per token (what does not grow with the row,
                 the bf16 copies autocast makes of the fp32 adapters, is reported apart). With activation checkpointing
                 a block keeps only its input (the fp32 residual stream, 4 bytes x d_model per token), and
                 the backward pass rebuilds one block's activations at a time: one block's worth at the peak
CUDA's kernels may keep somewhat different tensors than the CPU's (attention above all), and the CUDA
allocator adds fragmentation and workspace, so treat the sums as estimates to within some tens of percent.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/llama_memory.py` puts bench/ on the path

from arc.model.config import ModelConfig
from arc.model.lora import add_lora, cast_frozen  # noqa: E402
from arc.model.transformer import Transformer  # noqa: E402

LLAMA_1B = ModelConfig(d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_size=64, mlp_hidden=8192, max_seq_len=8192,
                       rope="1d", rope_theta=500000.0, norm_eps=1e-5, rope_scaling={
                           "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192})
RANK = 32
FULL = ("embed.weight", "head.weight")


def lora_model(cfg: ModelConfig) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(cfg)
    add_lora(model, rank=RANK, alpha=32.0, full=FULL)
    cast_frozen(model, torch.bfloat16)
    return model.train()


def saved_bytes(n_layers: int, tokens: int) -> int:
    """Bytes of the unique non-parameter storages autograd saves for one row of `tokens` tokens."""
    model = lora_model(replace(LLAMA_1B, n_layers=n_layers))
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, 15, (1, tokens), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids).sum()
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128, help="the shorter of the two rows run on the CPU (the other is twice as long)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    GB = 1e9
    with torch.device("meta"):
        shapes = lora_model(LLAMA_1B)
    total = sum(p.numel() for p in shapes.parameters())
    trained = sum(p.numel() for p in shapes.parameters() if p.requires_grad)
    frozen = total - trained
    print(f"Llama-3.2-1B shapes, vocabulary cut to 16: {total / 1e6:,.1f}M parameters, {trained / 1e6:,.2f}M trained "
          f"(LoRA rank {RANK} + embedding and head rows)")
    print(f"  frozen weights: {frozen * 2 / GB:.2f} GB in bf16, {frozen * 4 / GB:.2f} GB in fp32")
    print(f"  trained parameters + gradients + AdamW moments (fp32): {trained * 16 / GB:.2f} GB")
    short, long = ({n: saved_bytes(n, t) for n in (1, 2)} for t in (args.tokens, 2 * args.tokens))
    block = (long[2] - long[1] - short[2] + short[1]) / args.tokens  # per token: one block's saved bytes
    rest = (long[1] - short[1]) / args.tokens - block  # ... and outside the blocks
    fixed = short[2] - short[1] - block * args.tokens  # per block, whatever the row's length
    print(f"  saved per block whatever the row length (autocast's bf16 copies of the adapters): {fixed / 1e6:.1f} MB")
    plain = LLAMA_1B.n_layers * block + rest
    checkpointed = LLAMA_1B.n_layers * 4 * LLAMA_1B.d_model + block + rest
    print(f"  activations per token: {block / 1e3:,.1f} kB per block, {rest / 1e3:,.1f} kB outside the blocks")
    for name, per_token in (("off", plain), ("on", checkpointed)):
        print(f"  activation checkpointing {name}: {per_token / 1e6:.2f} MB per token at the peak "
              f"({4096 * per_token / GB:.1f} GB per micro-batch of 4,096 tokens)")


if __name__ == "__main__":
    main()

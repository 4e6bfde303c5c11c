"""Where a training step spends its time, ours vs the Hugging Face peer: a torch.profiler table of the
operators, summed over a few optimizer steps (forward, cross-entropy, backward, clipping, fused AdamW;
the step bench/speed.py times), and the share of the step that goes to attention, matmuls and the rest.

    python bench/train_profile.py                    # default config, batch 8 x 1,024 tokens, one thread
    python bench/train_profile.py --config 5M --rows 4

Needs bench/requirements.txt (transformers) for the peer; eager on both sides (compiled graphs hide
their operators from the table). Random weights and tokens, fp32, the CPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speed  # noqa: E402  (bench/speed.py: configs, the seeded model, the peer with our weights)

from arc.training.optim import make_optimizer  # noqa: E402  (speed put the repo root on the path)

GROUPS = {"attention": ("scaled_dot_product",), "matmul": ("aten::mm", "aten::addmm", "aten::bmm")}


def profile(impl: str, config: str, rows: int, seq: int, steps: int) -> None:
    model = speed.seeded_model(speed.CONFIGS[config], torch.device("cpu"))
    if impl == "hf":
        model = speed.hf_peer(model)
        forward = lambda x: model(input_ids=x, use_cache=False).logits  # noqa: E731
    else:
        forward = model
    model.train()
    optimizer = make_optimizer(model, speed._train_defaults.lr, speed._train_defaults.weight_decay)
    tokens = speed.random_tokens((rows, seq + 1), torch.device("cpu"))

    def step():
        F.cross_entropy(forward(tokens[:, :-1]).float().flatten(0, 1), tokens[:, 1:].flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    with torch.profiler.profile() as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = {group: sum(e.self_cpu_time_total for e in events if any(k in e.key for k in keys)) / total
              for group, keys in GROUPS.items()}
    shares["other"] = 1 - sum(shares.values())
    print(f"\n== {impl}, {config}, {rows} x {seq} tokens: {total / 1e6 / steps:.2f} s of operator time per step; "
          + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    print(events.table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="default", choices=list(speed.CONFIGS))
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for impl in ("ours", "hf"):
        profile(impl, args.config, args.rows, args.seq, args.steps)


if __name__ == "__main__":
    main()

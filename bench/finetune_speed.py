"""Adaptation's and test-time training's steps: tokens per second of today's step (the training step: packed
sequences, the blocks compiled once, bf16 where measured faster) against the step they took before (padded rows,
eager), on the shipped checkpoint and real unseen tasks, in one process, taking turns.

    python bench/finetune_speed.py                        # tune20's first 4 tasks, 1 thread, 40 steps per kind
    python bench/finetune_speed.py --threads 2 --steps 60 --tasks 8

Four kinds of step, each a fine-tune of every weight on rows of tune20 tasks' demonstrations (as
arc.inference.ttt and arc.inference.adapt draw them):
    ttt, padded eager     16 rows padded to the longest, the model eager (the step before this change)
    ttt, packed compiled  1 sequence of 2,048 tokens, rows end to end, the blocks compiled (the step now)
    adapt, ...            the same two, on rows of all the tasks at once (joint adaptation)
Each kind trains `--steps` steps per task (test-time training) or in all (adaptation) after 3 warm-up steps
(the compile is reported on its own); tokens are the real tokens of the rows (padding not counted). The weights
are put back after every kind, so each starts from the checkpoint. Precision is evaluate.py's (--precision auto).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arc.data.tasks import load_tasks, select_tasks  # noqa: E402
from arc.data.tokenizer import PAD  # noqa: E402
from arc.infra.runtime import autocast_dtype, eager, resolve_device  # noqa: E402
from arc.layouts import make_layout  # noqa: E402
from arc.layouts.rows import PaddedBatches  # noqa: E402
from arc.model.checkpoint import load_model  # noqa: E402
from arc.training.config import read_training  # noqa: E402
from arc.training.optim import fine_tune_recipe, optimizer_step  # noqa: E402
from arc.training.steps import compile_training_step, trainable  # noqa: E402

OLD_ROWS = 16  # rows per step of the old test-time training (configs/eval-ttt.toml's batch)
WARMUP = 3


def timed_steps(model, batches, steps: int, device, amp_dtype) -> tuple[float, int]:
    """Seconds and real tokens of `steps` steps after WARMUP, every weight trained by the fine-tune recipe."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    with trainable(model) as params:
        optimizer = fine_tune_recipe(1e-3).optimizer_for(model)
        for step in range(WARMUP):
            optimizer_step(model, optimizer, params, [batches(step)], 1.0, device, amp_dtype)
        tokens, began = 0, time.perf_counter()
        for step in range(WARMUP, WARMUP + steps):
            batch = batches(step)
            tokens += int((batch.inputs != PAD).sum())
            optimizer_step(model, optimizer, params, [batch], 1.0, device, amp_dtype)
        seconds = time.perf_counter() - began
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(saved[n])
    return seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/pair")
    parser.add_argument("--task-set", default="tune20")
    parser.add_argument("--tasks", type=int, default=4, help="the set's first N tasks")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per task (ttt) and in all (adapt)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device("cpu", args.threads)
    model, tokenizer, config = load_model(args.checkpoint, device)
    layout = make_layout(read_training(config, args.checkpoint).layout, tokenizer, config["task_ids"])
    amp = autocast_dtype(device, "auto")
    tasks = select_tasks(load_tasks("arc1", "evaluation"), task_set=args.task_set)[: args.tasks]
    model.add_tasks(len(tasks))
    layout.add_tasks([t.id for t in tasks])
    length = model.cfg.max_seq_len
    kinds = {
        "ttt": [layout.demonstration_sampler([t], length, seed=k) for k, t in enumerate(tasks)],
        "adapt": [layout.demonstration_sampler(tasks, length, seed=0)],
    }
    results = {}
    for packed in (False, True):
        if packed:
            with trainable(model):
                sampler = kinds["adapt"][0]
                results["compile_s"] = compile_training_step(model, layout.batches(sampler, 1, length)(0), device, amp)
        for kind, samplers in kinds.items():
            seconds = tokens = 0
            for sampler in samplers:
                batches = layout.batches(sampler, 1, length) if packed else PaddedBatches(sampler, OLD_ROWS)
                steps = args.steps // (len(samplers) if kind == "adapt" else 1)
                if packed:
                    s, n = timed_steps(model, batches, steps, device, amp)
                else:
                    with eager():
                        s, n = timed_steps(model, batches, steps, device, amp)
                seconds, tokens = seconds + s, tokens + n
            name = f"{kind}, {'packed compiled' if packed else 'padded eager'}"
            results[name] = {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens}
            print(f"{name:<24} {tokens / seconds:>9,.0f} tokens/s ({tokens:,} tokens in {seconds:.1f} s)", flush=True)
    for kind in kinds:
        ratio = results[f"{kind}, packed compiled"]["tokens_per_s"] / results[f"{kind}, padded eager"]["tokens_per_s"]
        print(f"{kind}: packed compiled / padded eager = {ratio:.2f}x")
    print(json.dumps({"threads": args.threads, "precision": str(amp), **results}))


if __name__ == "__main__":
    main()

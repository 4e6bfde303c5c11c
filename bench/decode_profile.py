"""Where greedy decoding spends its time: the prefill, one decode step, and the whole greedy_decode call.

    python bench/decode_profile.py                          # default and 5M configs, batch 1 and 8
    python bench/decode_profile.py --configs 5M --batches 1 --steps 100
    python bench/decode_profile.py --modes eager            # skip torch.compile
    python bench/decode_profile.py --profile                # torch.profiler table of a few eager steps

A short companion to bench/speed.py (which compares with Hugging Face): one process, one thread by
default (a shared machine), random weights and prompts, fp32. Modes: `eager` runs each step as
model(tokens, cache=cache), `compiled` as the torch.compile'd model.decode_step (arc.inference.decode.one_token_step
with compile=True); greedy_decode runs the same step. Step times are the median over the steps (CPU
time of this thread, which a busy machine disturbs less than wall time; wall time beside it); the
prefill and the whole call are the best of two. The first compiled step's time is the compile time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arc.data.tokenizer import PAD  # noqa: E402
from arc.inference.decode import greedy_decode, one_token_step  # noqa: E402
from arc.layouts.rows import token_row
from arc.model.config import ModelConfig
from arc.model.transformer import Transformer  # noqa: E402

CONFIGS = {
    "default": ModelConfig(d_model=128, n_layers=4, n_heads=4, rope="1d"),  # the trainer's default size, 1-D RoPE
    "5M": ModelConfig(d_model=256, n_layers=6, n_heads=8, rope="1d"),  # bench/speed.py's 5M config
}


@torch.inference_mode()
def measure(cfg: ModelConfig, batch: int, prompt_len: int, steps: int, compile: bool) -> dict:
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    prompts = torch.randint(0, PAD, (batch, prompt_len), generator=torch.Generator().manual_seed(batch))
    total = prompt_len + steps

    prefill_s = []
    for _ in range(2):
        start = time.perf_counter()
        cache = model.new_cache(batch, capacity=total)
        logits = model(prompts, cache=cache)[:, -1]
        prefill_s.append(time.perf_counter() - start)

    decode = one_token_step(model, cache, compile)
    wall, cpu = [], []
    for _ in range(steps):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        logits = decode(logits.argmax(-1)[:, None])
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.thread_time() - start_cpu)

    # the whole call, prefill included, after a short warm-up call (which compiles for this batch size)
    greedy_decode(model, [token_row(p) for p in prompts[:, :64].tolist()], [4] * batch, end_id=-1, pad_id=PAD, compile=compile)
    call_s = []
    for _ in range(2):
        start = time.perf_counter()
        greedy_decode(model, [token_row(p) for p in prompts.tolist()], [steps] * batch, end_id=-1, pad_id=PAD, compile=compile)
        call_s.append(time.perf_counter() - start)
    step_cpu = statistics.median(cpu[1:])
    return {
        "prefill_ms": min(prefill_s) * 1e3,
        "first_step_s": wall[0],
        "step_ms": statistics.median(wall[1:]) * 1e3,
        "step_cpu_ms": step_cpu * 1e3,
        "decode_tok_s": batch / step_cpu,
        "call_tok_s": batch * steps / min(call_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="default,5M")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--prompt-len", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50, help="new tokens per row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of 10 eager steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.prompt_len}-token prompt, {args.steps} new tokens, {args.threads} thread(s)")
    print("| config | batch | mode | prefill ms | first step s | step ms (wall) | step ms (CPU) | decode tok/s "
          "| greedy_decode tok/s |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.configs.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            for mode in args.modes.split(","):
                r = measure(CONFIGS[name], batch, args.prompt_len, args.steps, compile=mode == "compiled")
                print(f"| {name} | {batch} | {mode} | {r['prefill_ms']:.0f} | {r['first_step_s']:.2f} | "
                      f"{r['step_ms']:.2f} | {r['step_cpu_ms']:.2f} | {r['decode_tok_s']:.0f} | "
                      f"{r['call_tok_s']:.0f} |", flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        model = Transformer(CONFIGS[args.configs.split(",")[0]]).eval()
        batch = int(args.batches.split(",")[0])
        with torch.inference_mode():
            cache = model.new_cache(batch, capacity=args.prompt_len + 20)
            logits = model(torch.zeros(batch, args.prompt_len, dtype=torch.long), cache=cache)[:, -1]
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(10):
                    logits = model(logits.argmax(-1)[:, None], cache=cache)[:, -1]
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()

"""Batched greedy decoding with the KV cache.

Prompts of different lengths are left-padded into one batch and prefilled in a single forward
(the prefill); then one token per row is generated per step (the decode), each step attending to the
cache instead of recomputing the prompt. A row stops at its end token or its own length limit;
the batch stops when every row has. The decode step can be torch.compile'd (gpt-fast style): the cache
is preallocated and the step's shapes never change, so one graph serves every step.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from arc.infra.runtime import autocast
from arc.layouts.rows import EncodedRow
from arc.model.kvcache import KVCache
from arc.model.transformer import Transformer


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) tokens with each prompt right-aligned, and each row's padding count (B,)."""
    longest = max(len(p) for p in prompts)
    pad = torch.tensor([longest - len(p) for p in prompts], dtype=torch.long)
    tokens = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    for row, p in enumerate(prompts):
        tokens[row, longest - len(p) :] = torch.tensor(p, dtype=torch.long)
    return tokens, pad


# Whether greedy_decode runs its one-token steps through torch.compile (Transformer.decode_step). Off by
# default: on CPU a compiled step is only somewhat faster than eager (least for larger models, where
# reading the weights and the cache dominates), but each of its graphs (one for batch 1, one for larger
# batches, per model shape) takes tens of seconds to compile cold, so it pays only on long runs
# (RESULTS.md, "Figures behind the code's defaults"). On CUDA, where eager decoding is bound by kernel
# launches, it should pay at once (not measured yet). Pass compile= to greedy_decode, or set
# ARC_COMPILE_DECODE=1 in the environment (reaches every process, e.g. bench/speed.py's cases).
COMPILE = os.environ.get("ARC_COMPILE_DECODE", "0") == "1"
_compiled = None  # torch.compile(Transformer.decode_step), made on first use; False once compiling failed


def one_token_step(model: Transformer, cache: KVCache, compile: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function that feeds one token per row, (B, 1), into the cache from its current length on and
    returns the next logits (B, vocab); the cache must not be truncated between its calls.
    compile: the torch.compile'd model.decode_step, with the cache slot kept as a tensor on the device
    (nothing about the step's position is a Python value the graph could specialise on); a compiler
    failure falls back to eager for good. Otherwise model(tokens, cache=cache), eager."""
    global _compiled
    if compile and _compiled is None:
        # dynamic: one graph for every cache length and batch size (batch 1 gets its own), not a recompile
        # per decode call; cpp_wrapper: the graph's kernels are called from C++ rather than Python, which
        # saves per-step overhead (RESULTS.md)
        _compiled = torch.compile(Transformer.decode_step, dynamic=True, fullgraph=True, options={"cpp_wrapper": True})
    at = torch.tensor([cache.length], device=cache.slots.device)  # the slot the next token goes to

    def step(tokens: torch.Tensor) -> torch.Tensor:
        global _compiled
        if compile and _compiled is not False:
            try:
                logits = _compiled(model, tokens, cache, at)
                at.add_(1)
                cache.length += 1
                return logits
            except Exception as error:  # noqa: BLE001 - any compiler failure means: decode eagerly
                print(f"torch.compile of the decode step failed ({type(error).__name__}: {error}); decoding eagerly")
                _compiled = False
        return model(tokens, cache=cache)[:, -1]

    return step


@torch.inference_mode()
def greedy_decode(
    model: Transformer,
    prompts: list[EncodedRow],
    max_new_tokens: list[int],
    end_id: int,
    pad_id: int,
    autocast_dtype: torch.dtype | None = None,
    compile: bool | None = None,
) -> list[list[int]]:
    """Greedy continuation of each prompt (its ids, with its task and D8 transform for a pair-layout
    model): its generated ids, ending with end_id when one was produced. compile: torch.compile the
    decode step (None: the module's COMPILE)."""
    device = model.embed.weight.device
    tokens, pad = left_pad([p.ids.tolist() for p in prompts], pad_id)
    B, T = tokens.shape
    limit = torch.tensor(max_new_tokens, device=device)
    steps = int(limit.max())
    task, transform = torch.tensor([p.task for p in prompts]), torch.tensor([p.transform for p in prompts])
    cache = model.new_cache(B, capacity=T + steps, pad=pad, dtype=autocast_dtype, task=task, transform=transform)
    out = torch.full((B, steps), pad_id, dtype=torch.long, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)  # tokens generated by each row
    done = limit <= 0
    with autocast(device.type, autocast_dtype):
        logits = model(tokens.to(device), cache=cache)[:, -1]  # prefill: (B, vocab) for the first new token
        decode = one_token_step(model, cache, COMPILE if compile is None else compile)
        for step in range(steps):
            next_id = logits.argmax(-1)
            out[:, step] = next_id
            lengths += (~done).long()
            done = done | (next_id == end_id) | (step + 1 >= limit)
            if bool(done.all()):
                break
            logits = decode(next_id[:, None])  # decode one token: (B, 1) -> (B, vocab)
    return [row[:n] for row, n in zip(out.tolist(), lengths.tolist())]

"""Decoding strategies beyond greedy, each returning scored candidates.

Greedy decoding (arc.inference.decode) commits to the most likely token at every step and returns one answer.
When the model is unsure early (say the first row of the grid is 60/40 between two colours), the
answer it would have got right may lie on the branch greedy never looks at. The strategies here
return several candidate outputs, each with its summed negative log-likelihood (NLL) under the model,
so a caller can re-rank them (e.g. by scoring them under augmentations) or submit the top two.

dfs_decode     exact depth-first search with a probability threshold (the ARChitects' ARC Prize
               2024 solution): returns *every* completed output whose probability is above p. A
               sequence's NLL only grows as tokens are added, so a prefix whose NLL already reaches
               -ln p can be pruned with all its continuations; that keeps the search small (at most
               1/p outputs can have probability > p). Children are visited most likely first, so the
               first path is the greedy one: a cheap early candidate, and the cache is never copied,
               only truncated when backtracking, so memory holds one branch.
sample_decode  n samples drawn in one batch (temperature / top-k): cheap diversity when no
               threshold is wanted, reproducible through a seeded generator.

Both report NLL under the model's true distribution (temperature 1, no top-k), so candidates from
either can be re-scored on one scale (arc.inference.ensemble scores them under augmented views).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from arc.infra.runtime import autocast
from arc.layouts.rows import EncodedRow
from arc.model.transformer import Transformer


@dataclass
class Candidate:
    tokens: list[int]  # generated ids, ending with the end id
    nll: float  # summed negative log-likelihood of those tokens given the prompt (natural log)


def _sorted(found: dict[tuple[int, ...], float]) -> list[Candidate]:
    """Candidates by NLL ascending; ties broken by the tokens so the order is deterministic."""
    return [Candidate(list(t), nll) for t, nll in sorted(found.items(), key=lambda kv: (kv[1], kv[0]))]


@torch.inference_mode()
def _children(logits: torch.Tensor, nll: float, budget: float) -> list[tuple[int, float]]:
    """Next tokens whose cumulative NLL stays under budget, most likely first (stack order: the most likely is
    popped first, so it is stored last)."""
    token_nll = (-torch.log_softmax(logits.double(), dim=-1)).tolist()  # fp64: exact sums
    keep = [(tok, nll + x) for tok, x in enumerate(token_nll) if nll + x < budget]
    return sorted(keep, key=lambda c: (c[1], c[0]), reverse=True)


def dfs_decode(
    model: Transformer,
    prompt: EncodedRow,
    max_new_tokens: int,
    end_id: int,
    threshold: float = 0.1,
    max_candidates: int = 16,
    time_limit_s: float | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> list[Candidate]:
    """Every continuation ending in end_id within max_new_tokens whose probability is > threshold,
    sorted by NLL ascending (ties by tokens).

    The search stops early once max_candidates outputs are complete or time_limit_s has passed; the
    result is then what was found so far (the greedy path first, then in depth-first order), which
    is not necessarily the most likely max_candidates outputs."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if max_new_tokens <= 0:
        return []
    budget = -math.log(threshold)  # prob > p  <=>  nll < -ln p
    deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
    device = model.embed.weight.device
    n_prompt = len(prompt.ids)
    cache = model.new_cache(1, capacity=n_prompt + max_new_tokens, dtype=autocast_dtype,
                            task=torch.tensor([prompt.task]), transform=torch.tensor([prompt.transform]))

    found: dict[tuple[int, ...], float] = {}
    path: list[int] = []  # the tokens of the current branch
    with autocast(device.type, autocast_dtype):
        logits = model(torch.from_numpy(prompt.ids)[None].to(device), cache=cache)[0, -1]  # prefill, once
        # explicit stack (depth can reach ~931 > Python's recursion limit): each frame is the depth of
        # its branch point and the children still to visit there
        stack: list[tuple[int, list[tuple[int, float]]]] = [(0, _children(logits, 0.0, budget))]
        while stack and len(found) < max_candidates:
            if deadline is not None and time.monotonic() >= deadline:
                break
            depth, todo = stack[-1]
            if not todo:
                stack.pop()
                continue
            tok, nll = todo.pop()
            del path[depth:]
            path.append(tok)
            if tok == end_id:
                found[tuple(path)] = nll
                continue
            if depth + 1 >= max_new_tokens:
                continue  # hit the length limit without an end: not a candidate
            # backtrack: forget everything after the branch point, then feed the chosen token
            cache.length = n_prompt + depth
            logits = model(torch.tensor([[tok]], device=device), cache=cache)[0, -1]
            stack.append((depth + 1, _children(logits, nll, budget)))
    return _sorted(found)


@torch.inference_mode()
def sample_decode(
    model: Transformer,
    prompt: EncodedRow,
    n: int,
    max_new_tokens: int,
    end_id: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
) -> list[Candidate]:
    """n samples drawn in one batch; the distinct ones that reached end_id, sorted by NLL (ties by
    tokens). The NLL is under the model's true distribution (temperature 1, no top-k), so it is
    comparable with the other strategies' candidates."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy decoding for 0), got {temperature}")
    device = model.embed.weight.device
    gen = torch.Generator(device=device).manual_seed(seed)
    cache = model.new_cache(n, capacity=len(prompt.ids) + max_new_tokens, dtype=autocast_dtype,
                            task=torch.tensor([prompt.task] * n), transform=torch.tensor([prompt.transform] * n))
    out = torch.zeros((n, max(max_new_tokens, 0)), dtype=torch.long, device=device)
    nll = torch.zeros(n, dtype=torch.float64, device=device)
    length = torch.zeros(n, dtype=torch.long, device=device)  # tokens generated by each row
    ended = torch.zeros(n, dtype=torch.bool, device=device)
    with autocast(device.type, autocast_dtype):
        logits = model(torch.from_numpy(prompt.ids)[None].to(device).expand(n, -1), cache=cache)[:, -1]  # one prefill
        for step in range(max_new_tokens):
            logits = logits.double()
            scaled = logits / temperature
            if top_k is not None and top_k < scaled.shape[-1]:
                kth = scaled.topk(top_k, dim=-1).values[:, -1:]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            next_id = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=gen)[:, 0]
            true_nll = -torch.log_softmax(logits, dim=-1).gather(-1, next_id[:, None])[:, 0]
            live = ~ended  # finished rows keep stepping with the batch; their tokens are ignored
            out[:, step] = next_id
            nll += true_nll * live
            length += live.long()
            ended |= next_id == end_id
            if bool(ended.all()) or step + 1 == max_new_tokens:
                break
            logits = model(next_id[:, None], cache=cache)[:, -1]
    found: dict[tuple[int, ...], float] = {}
    for row, k, e, s in zip(out.tolist(), length.tolist(), ended.tolist(), nll.tolist()):
        if e:  # rows that hit the limit without an end are dropped
            found.setdefault(tuple(row[:k]), s)
    return _sorted(found)

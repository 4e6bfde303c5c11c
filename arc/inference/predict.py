"""From examples to two attempts per test input, in two stages that the evaluation runs one after the other:

    generate   for each example and each of K augmented views (the first is the task as given):
                   fit the viewed task into the context (answer hidden), decode it    greedy | sample | dfs
                   parse the generated tokens into a grid, map it back (inverse view)
               pool the candidates of all views: each distinct grid with the views that produced it
    select     choose the attempts among the pooled candidates:
                   vote  most votes first (ties: lower NLL, then first seen)
                   poe   product of experts: lowest NLL summed over `score_views` views

The layout (arc.layouts) says what a prompt is, how many views by default and which ones. Greedy
decoding of all (example, view) prompts runs in batches across examples; DFS and sampling run per
prompt. Candidate scoring for "poe" is batched over (candidate, view) rows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from arc.data.tasks import Example, Grid, grids_equal
from arc.data.tokenizer import END, PAD, GridTokenizer
from arc.inference.config import DecodeConfig
from arc.inference.decode import greedy_decode
from arc.inference.ensemble import (
    Pooled,
    candidate_nll,
    choose_attempts,
    grid_key,
    pool_candidates,
    product_of_experts,
    vote,
)
from arc.inference.search import dfs_decode, sample_decode
from arc.layouts.rows import EncodedRow, Layout, answer_limit


TOO_LONG = "too long for the context"  # the status of a test input whose prompt does not fit: never decoded


@dataclass
class Prediction:
    example: Example
    attempts: list[Grid] = field(default_factory=list)  # chosen grids, best first
    status: str = "ok"  # ok | no valid output (<reasons>) | too long for the context
    prompt_tokens: int = 0  # longest prompt among the views
    candidates: int = 0  # distinct valid grids found across views
    votes: list[int] = field(default_factory=list)  # views that produced each attempt
    attempts_by: dict[str, list[Grid]] = field(default_factory=dict)  # attempts under each selection method
    pool: list[Pooled] = field(default_factory=list, repr=False)  # the distinct candidates generate found

    @property
    def correct(self) -> bool | None:
        """Whether one of the attempts is exactly the true output; None when the truth is unknown."""
        truth = self.example.test.output
        if truth is None:
            return None
        return any(grids_equal(a, truth) for a in self.attempts)


@dataclass
class _Job:
    example_index: int
    view_index: int
    prompt: EncodedRow  # the view's prompt, with its task and D8 transform
    max_new: int


def _generate(model, jobs: list[_Job], cfg: DecodeConfig, amp_dtype,
              seed: int = 0) -> list[list[tuple[list[int], float]]]:
    """For each job, its generated token sequences with their NLL (nan when greedy does not score);
    job k samples with seed + k."""
    if cfg.decode == "greedy":
        outputs: list[list[tuple[list[int], float]]] = [[] for _ in jobs]
        order = sorted(range(len(jobs)), key=lambda i: len(jobs[i].prompt.ids))  # similar lengths batch well
        started, reported = time.time(), 0
        for start in range(0, len(order), cfg.decode_batch_size):
            chunk = order[start : start + cfg.decode_batch_size]
            prompts, budgets = [jobs[i].prompt for i in chunk], [jobs[i].max_new for i in chunk]
            ids = greedy_decode(model, prompts, budgets, END, PAD, amp_dtype)
            for i, tokens in zip(chunk, ids):
                outputs[i] = [(tokens, float("nan"))]
            done = start + len(chunk)
            if len(order) >= 100 and 10 * done // len(order) > reported:  # about 10 lines on long runs
                reported = 10 * done // len(order)
                elapsed = time.time() - started
                eta = elapsed / done * (len(order) - done)
                print(f"greedy: {done}/{len(order)} prompts decoded, {elapsed:.0f}s, eta {eta:.0f}s", flush=True)
        return outputs
    if cfg.decode == "dfs":
        outputs = [[(c.tokens, c.nll) for c in dfs_decode(model, job.prompt, job.max_new, END, cfg.dfs_threshold,
                                                         cfg.dfs_max_candidates, cfg.dfs_time_limit_s, amp_dtype)]
                   for job in jobs]
        if cfg.dfs_keep_greedy:
            # DFS's first path is the greedy one, but it is pruned once its probability drops below the
            # threshold: a weak model's greedy grid (often its best guess) would be lost. Keep it, after
            # the DFS candidates (it is less likely than each of them).
            greedy_outputs = _generate(model, jobs, replace(cfg, decode="greedy"), amp_dtype)
            for found, [(greedy, nll)] in zip(outputs, greedy_outputs):
                if all(tokens != greedy for tokens, _ in found):
                    found.append((greedy, nll))
        return outputs
    if cfg.decode == "sample":
        return [[(c.tokens, c.nll) for c in sample_decode(
            model, job.prompt, cfg.samples, job.max_new, END, cfg.temperature, cfg.top_k, seed + k, amp_dtype)]
            for k, job in enumerate(jobs)]
    raise ValueError(f"unknown decode strategy {cfg.decode!r}: greedy | sample | dfs")


def generate(model, layout: Layout, examples: list[Example], context_tokens: int, cfg: DecodeConfig,
             amp_dtype=None, seed: int = 0) -> list[Prediction]:
    """Each example's candidates under cfg.views views (0: the layout's default), pooled in
    Prediction.pool, no attempts chosen yet. Example i's views are seeded with seed + i."""
    predictions = [Prediction(ex) for ex in examples]
    n_views = cfg.views or layout.default_views
    views_of, jobs = [], []
    for i, ex in enumerate(examples):
        views = layout.views(ex, n_views, seed + i)
        views_of.append(views)
        hidden = ex.hidden()  # the answer is never seen
        for v, view in enumerate(views):
            fitted = layout.fit(view.apply(hidden), context_tokens)
            if fitted is None:
                continue
            prompt = layout.prompt(fitted)
            predictions[i].prompt_tokens = max(predictions[i].prompt_tokens, len(prompt.ids))
            limit = answer_limit(fitted, cfg.limit_slack)
            jobs.append(_Job(i, v, prompt, min(limit, context_tokens - len(prompt.ids))))

    # each example's candidates in the original frame, with the view that produced them and their NLL
    candidates: list[list[tuple[int, Grid, float]]] = [[] for _ in examples]
    copies: list[list[tuple[int, Grid, float]]] = [[] for _ in examples]  # (drop_input_copies) set aside
    failures: list[set[str]] = [set() for _ in examples]
    for job, outputs in zip(jobs, _generate(model, jobs, cfg, amp_dtype, seed)):
        for tokens, nll in outputs:
            grid, why = GridTokenizer.parse_output(tokens)
            if grid is None:
                failures[job.example_index].add(why)
                continue
            grid = views_of[job.example_index][job.view_index].invert_grid(grid)
            copy = cfg.drop_input_copies and grids_equal(grid, examples[job.example_index].test.input)
            (copies if copy else candidates)[job.example_index].append((job.view_index, grid, nll))
    for i, pred in enumerate(predictions):
        pred.pool = pool_candidates(candidates[i] or copies[i])  # copies only when they are all there is
        pred.candidates = len(pred.pool)
        if not pred.pool:
            # DFS and sampling drop branches that never end, so they may leave no reason behind
            reasons = "; ".join(sorted(failures[i])) or "no complete output found"
            pred.status = TOO_LONG if pred.prompt_tokens == 0 else f"no valid output ({reasons})"
    return predictions


def select(model, layout: Layout, predictions: list[Prediction], context_tokens: int, cfg: DecodeConfig,
           amp_dtype=None, seed: int = 0) -> list[Prediction]:
    """Choose each prediction's attempts among its pooled candidates: by vote (always recorded under
    attempts_by["vote"]) and, with cfg.select "poe", by product of experts under cfg.score_views views
    (example i's seeded with seed + 7919 * (i + 1)) among the cfg.rerank most voted (0: all)."""
    if cfg.select not in ("vote", "poe"):
        raise ValueError(f"unknown selection {cfg.select!r}: vote | poe")
    for i, pred in enumerate(predictions):
        if not pred.pool:
            continue
        ranked = vote(pred.pool)
        pred.attempts_by["vote"] = [entry.grid for entry in ranked[: cfg.attempts]]
        if cfg.select == "poe":
            grids = [entry.grid for entry in (ranked[: cfg.rerank] if cfg.rerank else pred.pool)]
            score_views = layout.views(pred.example, cfg.score_views, seed + 7919 * (i + 1))
            nll = candidate_nll(model, layout, pred.example, grids, score_views, context_tokens, cfg.decode_batch_size,
                                amp_dtype)
            pred.attempts_by["poe"] = choose_attempts(grids, product_of_experts(nll), cfg.attempts)
        pred.attempts = pred.attempts_by[cfg.select]
        votes = {grid_key(entry.grid): entry.votes for entry in pred.pool}
        pred.votes = [votes[grid_key(a)] for a in pred.attempts]
    return predictions


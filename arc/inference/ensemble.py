"""Augmentation ensembles: many views of one task, mapped back, then voted on or scored as experts.

An ARC task is the same puzzle under any rotation/reflection, colour renaming and demonstration order
(arc.data.augment). Asking the model the same question under k such views turns one model into an ensemble
of k: each view yields a candidate answer, which the view's exact inverse maps back to the original
frame. Two ways to pick the two submitted attempts from the candidates (after the ARChitects,
"Product of Experts", 2025):

    vote                 count how many views produced each distinct grid; most votes first (ties:
                         the lower NLL when decoding scored them, then the first seen).
    product of experts   score every distinct candidate under K views: transform the task AND the
                         candidate with the same augmentation and take the model's negative
                         log-likelihood of the candidate as the answer. Sum over the views (a product
                         of the views' probabilities, in log space); lowest total first.

Why it works: a correct answer is consistent with the puzzle in every frame, so the model tends to find
it likely under every view; a wrong answer is usually an artefact of one frame (a transposed row, a
colour confused with its neighbour) and is unlikely under some other view. Summing NLLs makes one
confident "no" from any view count heavily, which a vote cannot express.

Scoring is teacher-forced: one forward per batch of (candidate, view) rows, no decoding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Hashable, Iterable

import numpy as np
import torch

from arc.data.augment import (
    Augmentation,
)
from arc.data.tasks import Example, Grid, Pair
from arc.data.tokenizer import grid_length
from arc.layouts.rows import EncodedRow, Layout
from arc.training.scoring import row_nll


def grid_key(grid: Grid) -> tuple:
    """A hashable key equal for equal grids: (height, width, cell bytes), independent of dtype/layout."""
    g = np.ascontiguousarray(grid, dtype=np.uint8)
    return (*g.shape, g.tobytes())


# --------------------------------------------------------------------------------------------------
# Scoring candidates under views
# --------------------------------------------------------------------------------------------------


def _scored_row(layout: Layout, example: Example, candidate: Grid, view: Augmentation,
                max_tokens: int) -> EncodedRow | None:
    """The encoded row "view(task) with view(candidate) as the answer", or None if it cannot fit."""
    # Fit in the view's frame, as prediction on that view does: the context budget is computed with the
    # answer hidden, so the demonstrations kept are the ones the model saw when it answered. (Fitting in
    # the original frame is not enough: a transpose turns h*(w+1) tokens into w*(h+1).)
    fitted = layout.fit(view.apply(example.hidden()), max_tokens)
    if fitted is None:
        return None
    answer = view.apply_grid(candidate)
    if layout.length(fitted, grid_length(answer) + 1) > max_tokens:
        return None  # a candidate larger than the budget reserved for it
    # loss mask: the answer's rows and its end token
    return layout.encode(replace(fitted, test=Pair(fitted.test.input, answer)))


@torch.inference_mode()
def candidate_nll(
    model,
    layout: Layout,
    example: Example,
    candidates: list[Grid],
    views: list[Augmentation],
    max_tokens: int,
    batch_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """NLL (natural log, summed over the answer's tokens including the end token) of each candidate as
    the answer under each view: shape (n_candidates, n_views); +inf where the row cannot fit max_tokens.

    Candidates are in the original frame; each view transforms the task and the candidate together.
    """
    nll = np.full((len(candidates), len(views)), np.inf, dtype=np.float64)
    scored: list[tuple[int, int, EncodedRow]] = []
    for c, candidate in enumerate(candidates):
        for v, view in enumerate(views):
            row = _scored_row(layout, example, candidate, view, max_tokens)
            if row is not None:
                scored.append((c, v, row))
    if not scored:
        return nll
    values, _ = row_nll(model, [r for _, _, r in scored], batch_size, autocast_dtype)
    for (c, v, _), value in zip(scored, values):
        nll[c, v] = value
    return nll


def product_of_experts(nll: np.ndarray) -> np.ndarray:
    """Each candidate's score: its NLL summed over the views (lower is better). A candidate that could
    not be scored under some view (+inf) ranks after every candidate that could."""
    return np.asarray(nll, dtype=np.float64).sum(axis=1)


# --------------------------------------------------------------------------------------------------
# Choosing attempts
# --------------------------------------------------------------------------------------------------


@dataclass
class Pooled:
    """One distinct candidate grid of a test input, in the original frame."""

    grid: Grid
    voters: set  # the views that produced it
    nll: float = math.inf  # the lowest NLL it was produced with; inf when no producer scored it

    @property
    def votes(self) -> int:
        return len(self.voters)


def pool_candidates(candidates: Iterable[tuple[Hashable, Grid, float]]) -> list[Pooled]:
    """The distinct grids among (voter, grid, nll) candidates, in the order first seen. A voter counts
    once for a grid however often it produced it; an nll of nan means unscored (greedy decoding)."""
    pool: dict[tuple, Pooled] = {}  # dicts keep first-appearance order
    for voter, grid, nll in candidates:
        entry = pool.setdefault(grid_key(grid), Pooled(grid, set()))
        entry.voters.add(voter)
        entry.nll = min(entry.nll, nll) if not math.isnan(nll) else entry.nll
    return list(pool.values())


def vote(pool: list[Pooled]) -> list[Pooled]:
    """The pool ranked by votes, most first; among equal votes the lower NLL (when scored), then the
    order given (first seen: the identity view's candidates come first)."""
    return sorted(pool, key=lambda entry: (-entry.votes, entry.nll))  # sorted() is stable: ties keep order


def choose_attempts(grids: list[Grid], scores: np.ndarray | list[float], n: int = 2,
                    lower_is_better: bool = True) -> list[Grid]:
    """The n best distinct grids by score (fewer if there are fewer); ties keep the given order.
    Use lower_is_better=False for vote counts."""
    if len(grids) != len(scores):
        raise ValueError(f"{len(grids)} grids but {len(scores)} scores")
    values = np.asarray(scores, dtype=np.float64)
    order = np.argsort(values if lower_is_better else -values, kind="stable")
    chosen, seen = [], set()
    for i in order:
        key = grid_key(grids[i])
        if key not in seen:
            seen.add(key)
            chosen.append(grids[i])
            if len(chosen) == n:
                break
    return chosen

"""Pattern families: denoising, symmetry completion, continuing and repairing periodic patterns,
boolean operations on two halves, sorting columns and rows.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .common import (
    Rule,
    colour,
    colours,
    components,
    family,
    grid,
    noise,
    scatter,
    side,
)

# ---------------------------------------------------------------------------------------------- rules


def denoise(g, bg: int = 0):
    """Remove isolated pixels: cells with no side neighbour of their own colour become background."""
    out = g.copy()
    for obj in components(g, bg):
        if obj.size == 1:
            out[obj.cells[0]] = bg
    return out


MIRROR_SETS = {
    "lr": (lambda g: g[:, ::-1],),
    "ud": (lambda g: g[::-1],),
    "both": (lambda g: g[:, ::-1], lambda g: g[::-1], lambda g: g[::-1, ::-1]),
    "diag": (lambda g: g.T,),
}


def complete_symmetry(g, kind: str, mask: int):
    """Replace the cells of colour `mask` by their mirror image under the grid's symmetry `kind`."""
    if kind == "diag" and g.shape[0] != g.shape[1]:
        return None
    out, hole = g.copy(), g == mask
    for mirror in MIRROR_SETS[kind]:
        m = mirror(g)
        fill = hole & (m != mask)
        out[fill] = m[fill]
        hole &= ~fill
    return None if hole.any() else out


def continue_pattern(g, direction: str, bg: int = 0):
    """The leading columns (rows, for 'down') hold a pattern with no background; repeat it to fill the grid."""
    if direction == "down":
        out = continue_pattern(g.T, "right", bg)
        return None if out is None else np.ascontiguousarray(out.T)
    full = (g != bg).all(axis=0)
    k = g.shape[1] if full.all() else int(np.argmin(full))
    if k == 0:
        return None
    seen = g[:, :k]
    period = next(p for p in range(1, k + 1) if (seen[:, p:] == seen[:, :k - p]).all())
    return seen[:, np.arange(g.shape[1]) % period].copy()


def repair_pattern(g, hole: int = 0, max_period: int = 6):
    """Fill the cells of colour `hole` from the smallest 2-D period (by area) that the other cells obey."""
    h, w = g.shape
    known = g != hole
    rr, cc = np.indices(g.shape)
    vals = g[known].astype(np.int64)
    cands = sorted(((a, b) for a in range(1, min(h, max_period) + 1) for b in range(1, min(w, max_period) + 1)),
                   key=lambda ab: (ab[0] * ab[1], ab[0]))
    for a, b in cands:
        seen = np.unique(((rr % a) * b + cc % b)[known] * 16 + vals)  # (tile cell, colour) pairs, sorted
        cell = seen // 16
        if len(seen) == a * b and (cell == np.arange(a * b)).all():  # every tile cell seen, with one colour
            return (seen % 16).astype(np.uint8).reshape(a, b)[rr % a, cc % b]
    return None


OPS = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor, "nor": lambda a, b: ~(a | b)}


def boolean_halves(g, op: str, sep: int, col: int, bg: int = 0):
    """Split the grid at its one full line of colour `sep` into two equal halves and combine their
    non-background masks with `op`; true cells get colour `col`."""
    h, w = g.shape
    cols = [c for c in range(w) if (g[:, c] == sep).all()]
    rows = [r for r in range(h) if (g[r, :] == sep).all()]
    if len(cols) == 1 and not rows and 2 * cols[0] + 1 == w:
        a, b = g[:, :cols[0]], g[:, cols[0] + 1:]
    elif len(rows) == 1 and not cols and 2 * rows[0] + 1 == h:
        a, b = g[:rows[0]], g[rows[0] + 1:]
    else:
        return None
    return np.where(OPS[op](a != bg, b != bg), col, bg).astype(np.uint8)


def _sort_lines(g, by_rows: bool, descending: bool, bg: int):
    counts = (g != bg).sum(axis=1 if by_rows else 0)
    order = np.argsort(-counts if descending else counts, kind="stable")
    return g[order].copy() if by_rows else g[:, order].copy()


def sort_columns(g, descending: bool, bg: int = 0):
    """Reorder the columns by their number of non-background cells (stable)."""
    return _sort_lines(g, False, descending, bg)


def sort_rows(g, descending: bool, bg: int = 0):
    """Reorder the rows by their number of non-background cells (stable)."""
    return _sort_lines(g, True, descending, bg)


# ---------------------------------------------------------------------------------------------- families


@family("denoise")
def _denoise(rng, max_side):
    """Remove the isolated noise pixels, keeping the larger shapes."""

    def make(rng):
        g = grid(side(rng, 6, min(12, max_side)), side(rng, 6, min(12, max_side)))
        shapes = [(np.ones((side(rng, 2, 5), side(rng, 2, 5)), dtype=bool), colour(rng, exclude=(0,)))
                  for _ in range(int(rng.integers(1, 4)))]
        if scatter(rng, g, shapes, required=1) is None:
            return None
        free = np.flatnonzero(g.ravel() == 0)
        dots = rng.choice(free, size=min(len(free), int(rng.integers(2, 9))), replace=False)
        g.ravel()[dots] = rng.integers(1, 10, size=len(dots))
        return g

    return Rule(make, denoise, {})


@family("complete_symmetry")
def _complete_symmetry(rng, max_side):
    """The grid is mirror symmetric (left-right, up-down, both, or across the diagonal) except for a
    patch of one masking colour; restore the hidden cells from their mirror images."""
    kind = ["lr", "ud", "both", "diag"][int(rng.integers(4))]
    mask = colour(rng)

    def make(rng):
        palette = colours(rng, int(rng.integers(2, 5)), exclude=(mask,))
        if kind == "diag":
            n = side(rng, 4, min(10, max_side))
            base = noise(rng, n, n, palette, 1.0)
            g = np.triu(base) + np.triu(base, 1).T
            split = side(rng, 1, n - 1)  # rows < split, columns >= split: strictly above the diagonal
            r0, c0 = int(rng.integers(split)), int(rng.integers(split, n))
            r1, c1 = side(rng, r0 + 1, min(split, r0 + 4)), side(rng, c0 + 1, min(n, c0 + 4))
        else:
            hh, hw = side(rng, 2, min(6, (max_side - 1) // 2)), side(rng, 2, min(6, (max_side - 1) // 2))
            g = noise(rng, hh, hw, palette, 1.0)
            if kind in ("lr", "both"):
                mid = g[:, :int(rng.integers(2))]
                g = np.hstack([g, mid, g[:, ::-1]])
            if kind in ("ud", "both"):
                mid = g[:int(rng.integers(2))]
                g = np.vstack([g, mid, g[::-1]])
            h, w = g.shape
            rows = (0, h) if kind == "lr" else ((0, hh) if rng.random() < 0.5 else (h - hh, h))
            cols = (0, w) if kind == "ud" else ((0, hw) if rng.random() < 0.5 else (w - hw, w))
            r0, c0 = int(rng.integers(*rows)), int(rng.integers(*cols))
            r1, c1 = side(rng, r0 + 1, min(rows[1], r0 + 4)), side(rng, c0 + 1, min(cols[1], c0 + 4))
        g = np.ascontiguousarray(g, dtype=np.uint8)
        g[r0:r1, c0:c1] = mask
        return g

    return Rule(make, partial(complete_symmetry, kind=kind, mask=mask), {"kind": kind, "mask": mask})


@family("continue_pattern")
def _continue_pattern(rng, max_side):
    """Only the first columns (or rows) of a repeating pattern are drawn; continue it across the grid."""
    direction = ["right", "down"][int(rng.integers(2))]

    def make(rng):
        period = side(rng, 2, 4)
        h, w = side(rng, 1, min(8, max_side)), side(rng, 2 * period + 1, min(14, max_side))
        tile = noise(rng, h, period, colours(rng, int(rng.integers(2, 4)), exclude=(0,)), 1.0)
        g = tile[:, np.arange(w) % period]
        g[:, side(rng, 2 * period, w - 1):] = 0
        return g if direction == "right" else np.ascontiguousarray(g.T)

    return Rule(make, partial(continue_pattern, direction=direction), {"direction": direction})


@family("repair_pattern")
def _repair_pattern(rng, max_side):
    """A grid tiled with a small repeating motif has holes punched in it; fill them back in."""

    def make(rng):
        a, b = side(rng, 1, 4), side(rng, 2, 4)
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        h, w = side(rng, max(2 * a, 4), min(12, max_side)), side(rng, max(2 * b, 4), min(12, max_side))
        tile = noise(rng, a, b, colours(rng, int(rng.integers(2, 4)), exclude=(0,)), 1.0)
        full = tile[np.arange(h)[:, None] % a, np.arange(w)[None, :] % b]
        g = full.copy()
        for _ in range(int(rng.integers(1, 3))):
            r, c = int(rng.integers(h - 1)), int(rng.integers(w - 1))
            g[r:r + side(rng, 1, 3), c:c + side(rng, 1, 3)] = 0
        fixed = repair_pattern(g)
        return g if fixed is not None and (fixed == full).all() else None

    return Rule(make, repair_pattern, {})


@family("boolean_halves")
def _boolean_halves(rng, max_side):
    """A line splits the grid into two halves; overlay them with AND, OR, XOR or NOR and colour the result."""
    op = list(OPS)[int(rng.integers(4))]
    vertical_line = bool(rng.integers(2))
    left, right, sep, col = colours(rng, 4, exclude=(0,))

    def make(rng):
        hh, hw = side(rng, 3, min(6, max_side)), side(rng, 3, min(6, (max_side - 1) // 2))
        a = noise(rng, hh, hw, [left], rng.uniform(0.3, 0.7))
        b = noise(rng, hh, hw, [right], rng.uniform(0.3, 0.7))
        g = np.hstack([a, grid(hh, 1, sep), b])
        return g if vertical_line else np.ascontiguousarray(g.T)

    return Rule(make, partial(boolean_halves, op=op, sep=sep, col=col), {"op": op, "sep": sep, "col": col})


@family("sort_columns")
def _sort_columns(rng, max_side):
    """Columns hold bars standing on the bottom; reorder the columns from shortest to tallest bar (or the reverse)."""
    descending = bool(rng.integers(2))

    def make(rng):
        h = side(rng, 3, min(10, max_side))
        w = side(rng, 3, min(h, 10))
        heights = rng.choice(np.arange(1, h + 1), size=w, replace=False)
        g = grid(h, w)
        palette = colours(rng, int(rng.integers(1, 4)), exclude=(0,))
        for c, height in enumerate(heights):
            g[h - height:, c] = palette[int(rng.integers(len(palette)))]
        return g

    return Rule(make, partial(sort_columns, descending=descending), {"descending": descending})


@family("sort_rows")
def _sort_rows(rng, max_side):
    """Rows hold scattered cells; reorder the rows from fewest to most cells (or the reverse)."""
    descending = bool(rng.integers(2))
    col = colour(rng, exclude=(0,))

    def make(rng):
        w = side(rng, 3, min(10, max_side))
        h = side(rng, 3, min(w + 1, 10))
        counts = rng.choice(np.arange(w + 1), size=h, replace=False)
        g = grid(h, w)
        for r, n in enumerate(counts):
            g[r, rng.choice(w, size=n, replace=False)] = col
        return g

    return Rule(make, partial(sort_rows, descending=descending), {"descending": descending})

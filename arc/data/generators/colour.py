"""Colour and counting families: recolour cells by a table, by object size, by position or by a key;
report the most frequent colour, the colours by frequency, or a count as a bar of cells.
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
    random_shape,
    recolour,
    scatter,
    side,
)

# ---------------------------------------------------------------------------------------------- rules


def recolour_by_size(g, x: int, palette: tuple[int, ...], bg: int = 0):
    """Objects of colour x take palette[size - 1]; None if one is bigger than the palette."""
    out = g.copy()
    for obj in components(g, bg):
        if obj.colour != x:
            continue
        if obj.size > len(palette):
            return None
        for r, c in obj.cells:
            out[r, c] = palette[obj.size - 1]
    return out


def recolour_by_half(g, x: int, first: int, second: int, axis: int):
    """Cells of colour x in the first half along `axis` (0: rows, 1: columns) become `first`, the rest `second`."""
    out = g.copy()
    pos = np.indices(g.shape)[axis]
    is_x = g == x
    out[is_x & (pos < g.shape[axis] // 2)] = first
    out[is_x & (pos >= g.shape[axis] // 2)] = second
    return out


def colour_counts(g, bg: int = 0) -> np.ndarray:
    counts = np.bincount(g.ravel(), minlength=10)
    counts[bg] = 0
    return counts


def most_frequent(g, k: int, bg: int = 0):
    """A k x k block of the most frequent non-background colour; None on a tie or an empty grid."""
    counts = colour_counts(g, bg)
    top = int(np.argmax(counts))
    if counts[top] == 0 or (counts == counts[top]).sum() > 1:
        return None
    return grid(k, k, top)


def paint_from_key(g, x: int, by_rows: bool, bg: int = 0):
    """Cells of colour x take the colour of the key cell at the start of their row (or top of their column)."""
    if not by_rows:
        out = paint_from_key(g.T, x, True, bg)
        return None if out is None else np.ascontiguousarray(out.T)
    out = g.copy()
    key = g[:, :1]
    paint = (g == x) & (key != bg) & (key != x)
    paint[:, 0] = False
    out[paint] = np.broadcast_to(key, g.shape)[paint]
    return out


def colours_by_frequency(g, vertical: bool, bg: int = 0):
    """The non-background colours, most frequent first, as a column (or row); None on a tie."""
    counts = colour_counts(g, bg)
    present = [c for c in range(10) if counts[c] > 0]
    if not present or len({counts[c] for c in present}) < len(present):
        return None
    order = np.array(sorted(present, key=lambda c: -counts[c]), dtype=np.uint8)
    return order.reshape(-1, 1) if vertical else order.reshape(1, -1)


def bar(n: int, col: int, vertical: bool):
    if not 1 <= n <= 30:
        return None
    return grid(n, 1, col) if vertical else grid(1, n, col)


def count_objects(g, col: int, vertical: bool, bg: int = 0):
    """A bar of colour `col` as long as the number of objects (4-connected, any colour)."""
    return bar(len(components(g, bg, by_colour=False)), col, vertical)


def count_cells(g, target: int, vertical: bool):
    """A bar of colour `target` as long as the number of cells of that colour."""
    return bar(int((g == target).sum()), target, vertical)


# ---------------------------------------------------------------------------------------------- families


@family("colour_map")
def _colour_map(rng, max_side):
    """Replace each of two to four colours by its own fixed new colour; other colours stay."""
    src = colours(rng, int(rng.integers(2, 5)), exclude=(0,))
    mapping = {s: colour(rng, exclude=(0, s)) for s in src}
    palette = src + colours(rng, int(rng.integers(0, 2)), exclude=[0, *src, *mapping.values()])

    def make(rng):
        h, w = side(rng, 3, min(10, max_side)), side(rng, 3, min(10, max_side))
        return noise(rng, h, w, palette, rng.uniform(0.4, 0.9))

    return Rule(make, partial(recolour, mapping=mapping), {"mapping": mapping})


@family("colour_swap")
def _colour_swap(rng, max_side):
    """Exchange two colours (sometimes one of them is the background); other colours stay."""
    a = 0 if rng.random() < 0.25 else colour(rng, exclude=(0,))
    b = colour(rng, exclude=(0, a))
    palette = [c for c in (a, b) if c != 0] + colours(rng, int(rng.integers(0, 3)), exclude=(0, a, b))

    def make(rng):
        h, w = side(rng, 3, min(10, max_side)), side(rng, 3, min(10, max_side))
        return noise(rng, h, w, palette, rng.uniform(0.3, 0.8))

    return Rule(make, partial(recolour, mapping={a: b, b: a}), {"a": a, "b": b})


@family("recolour_by_size")
def _recolour_by_size(rng, max_side):
    """Recolour each object by its size: one cell, two cells and three cells each get their own colour."""
    x = colour(rng, exclude=(0,))
    palette = tuple(colours(rng, 3, exclude=(0, x)))

    def make(rng):
        h, w = side(rng, 6, min(12, max_side)), side(rng, 6, min(12, max_side))
        sizes = [1, 2, 3] + [int(s) for s in rng.integers(1, 4, size=int(rng.integers(0, 4)))]
        g = grid(h, w)
        shapes = [(random_shape(rng, 2, 2, s) if s < 3 else random_shape(rng, 3, 3, s), x) for s in sizes]
        return g if scatter(rng, g, shapes, required=3) is not None else None

    return Rule(make, partial(recolour_by_size, x=x, palette=palette), {"x": x, "palette": palette})


@family("recolour_by_half")
def _recolour_by_half(rng, max_side):
    """Cells of one colour take one new colour in the top (left) half and another in the bottom (right) half."""
    axis = int(rng.integers(2))
    x, first, second = colours(rng, 3, exclude=(0,))

    def make(rng):
        along, other = 2 * side(rng, 2, min(6, max_side // 2)), side(rng, 3, min(10, max_side))
        h, w = (along, other) if axis == 0 else (other, along)
        return noise(rng, h, w, [x], rng.uniform(0.25, 0.6))

    params = {"x": x, "first": first, "second": second, "axis": axis}
    return Rule(make, partial(recolour_by_half, **params), params)


def _speckled(rng, min_side: int, max_side: int, low: float, high: float) -> np.ndarray:
    """A grid of min_side..10 cells a side, speckled with 2-4 non-background colours at a density in [low, high)."""
    h, w = side(rng, min_side, min(10, max_side)), side(rng, min_side, min(10, max_side))
    return noise(rng, h, w, colours(rng, int(rng.integers(2, 5)), exclude=(0,)), rng.uniform(low, high))


@family("most_frequent")
def _most_frequent(rng, max_side):
    """Output a k x k block (k fixed per task) of the most frequent non-background colour."""
    k = int(rng.integers(1, 4))

    def make(rng):
        return _speckled(rng, 3, max_side, 0.3, 0.8)

    return Rule(make, partial(most_frequent, k=k), {"k": k})


@family("paint_from_key")
def _paint_from_key(rng, max_side):
    """A key column on the left (or key row on top) gives each row (column) a colour; the cells of one
    fixed colour in that row (column) take it."""
    x, by_rows = colour(rng, exclude=(0,)), bool(rng.integers(2))

    def make(rng):
        n, length = side(rng, 3, min(10, max_side)), side(rng, 5, min(12, max_side))
        g = noise(rng, n, length, [x], rng.uniform(0.3, 0.6))
        g[:, 1] = 0
        keys = colours(rng, int(rng.integers(2, 5)), exclude=(0, x))
        g[:, 0] = rng.choice(keys, size=n)
        return g if by_rows else np.ascontiguousarray(g.T)

    return Rule(make, partial(paint_from_key, x=x, by_rows=by_rows), {"x": x, "by_rows": by_rows})


@family("colours_by_frequency")
def _colours_by_frequency(rng, max_side):
    """List the colours present, most frequent first, as a one-cell-wide column (or row)."""
    vertical = bool(rng.integers(2))

    def make(rng):
        return _speckled(rng, 4, max_side, 0.3, 0.7)

    return Rule(make, partial(colours_by_frequency, vertical=vertical), {"vertical": vertical})


@family("count_objects")
def _count_objects(rng, max_side):
    """Output a bar of a fixed colour, one cell per object in the input."""
    col, vertical = colour(rng, exclude=(0,)), bool(rng.integers(2))

    def make(rng):
        h, w = side(rng, 5, min(12, max_side)), side(rng, 5, min(12, max_side))
        n = int(rng.integers(1, 7))
        shapes = [(random_shape(rng, 3, 3), colour(rng, exclude=(0,))) for _ in range(n)]
        g = grid(h, w)
        return g if scatter(rng, g, shapes, required=1) is not None else None

    return Rule(make, partial(count_objects, col=col, vertical=vertical), {"col": col, "vertical": vertical})


@family("count_cells")
def _count_cells(rng, max_side):
    """Output a bar, in the counted colour, with one cell per cell of that colour in the input."""
    target, vertical = colour(rng, exclude=(0,)), bool(rng.integers(2))
    others = colours(rng, 2, exclude=(0, target))

    def make(rng):
        h, w = side(rng, 3, min(10, max_side)), side(rng, 3, min(10, max_side))
        g = noise(rng, h, w, others, rng.uniform(0.1, 0.5))
        n = int(rng.integers(1, min(9, h * w) + 1))
        cells = rng.choice(h * w, size=n, replace=False)
        g.ravel()[cells] = target
        return g

    return Rule(make, partial(count_cells, target=target, vertical=vertical), {"target": target, "vertical": vertical})

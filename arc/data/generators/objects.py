"""Object families: inputs are a few separate shapes on a background; the rule picks, recolours,
removes, moves or marks whole objects (4-connected components).
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .common import (
    Rule,
    bbox,
    colour,
    colours,
    components,
    family,
    grid,
    place,
    random_shape,
    scatter,
    side,
)
from .geometry import shift

# ---------------------------------------------------------------------------------------------- rules


def _extreme(objs, largest: bool):
    """The unique largest (smallest) object, or None on a tie."""
    if not objs:
        return None
    sizes = [o.size for o in objs]
    best = max(sizes) if largest else min(sizes)
    return objs[sizes.index(best)] if sizes.count(best) == 1 else None


def crop_object(g, largest: bool, bg: int = 0):
    """The bounding box of the unique largest (or smallest) object."""
    obj = _extreme(components(g, bg), largest)
    if obj is None:
        return None
    r0, r1, c0, c1 = obj.bbox
    return g[r0:r1, c0:c1].copy()


def keep_colour(g, keep: int, bg: int = 0):
    return np.where(g == keep, g, bg).astype(np.uint8)


def recolour_extreme(g, largest: bool, new: int, bg: int = 0):
    """Recolour the unique largest (or smallest) object."""
    obj = _extreme(components(g, bg), largest)
    if obj is None:
        return None
    out = g.copy()
    for r, c in obj.cells:
        out[r, c] = new
    return out


def recolour_shape(g, shape: np.ndarray, new: int, bg: int = 0):
    """Recolour the objects whose shape is exactly `shape` (same orientation)."""
    out = g.copy()
    for obj in components(g, bg):
        m = obj.mask
        if m.shape == shape.shape and (m == shape).all():
            for r, c in obj.cells:
                out[r, c] = new
    return out


def remove_border_objects(g, bg: int = 0):
    out = g.copy()
    for obj in components(g, bg, by_colour=False):
        if obj.touches_border(g.shape):
            for r, c in obj.cells:
                out[r, c] = bg
    return out


def crop_unique_colour(g, bg: int = 0):
    """The bounding box of the one object whose colour no other object has; None unless exactly one."""
    objs = components(g, bg)
    counts: dict[int, int] = {}
    for o in objs:
        counts[o.colour] = counts.get(o.colour, 0) + 1
    lonely = [o for o in objs if counts[o.colour] == 1]
    if len(lonely) != 1 or len(objs) < 3:
        return None
    r0, r1, c0, c1 = lonely[0].bbox
    return g[r0:r1, c0:c1].copy()


DIRECTIONS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


def push_to_edge(g, direction: str, bg: int = 0):
    """Slide all content, as one block, in `direction` until it touches the edge."""
    box = bbox(g != bg)
    if box is None:
        return None
    r0, r1, c0, c1 = box
    h, w = g.shape
    dy, dx = {"up": (-r0, 0), "down": (h - r1, 0), "left": (0, -c0), "right": (0, w - c1)}[direction]
    return shift(g, dy, dx, bg)


def draw_boxes(g, col: int, bg: int = 0):
    """Draw a rectangle of colour `col` one cell outside the bounding box of each object (on background only)."""
    out = g.copy()
    h, w = g.shape
    ring = np.zeros(g.shape, dtype=bool)
    for obj in components(g, bg, by_colour=False):
        r0, r1, c0, c1 = obj.bbox
        r0, c0 = r0 - 1, c0 - 1  # the ring runs along rows r0 and r1, columns c0 and c1
        rows, cols = slice(max(r0, 0), min(r1, h - 1) + 1), slice(max(c0, 0), min(c1, w - 1) + 1)
        for r in (r0, r1):
            if 0 <= r < h:
                ring[r, cols] = True
        for c in (c0, c1):
            if 0 <= c < w:
                ring[rows, c] = True
    out[ring & (g == bg)] = col
    return out


STAMPS = {"plus": ((-1, 0), (1, 0), (0, -1), (0, 1)), "x": ((-1, -1), (-1, 1), (1, -1), (1, 1))}


def stamp_neighbours(g, x: int, col: int, pattern: str, bg: int = 0):
    """Colour `col` the background cells next to each cell of colour x: side neighbours ('plus')
    or corner neighbours ('x')."""
    out = g.copy()
    h, w = g.shape
    for r, c in zip(*np.nonzero(g == x)):
        for dr, dc in STAMPS[pattern]:
            if 0 <= r + dr < h and 0 <= c + dc < w and g[r + dr, c + dc] == bg:
                out[r + dr, c + dc] = col
    return out


# ---------------------------------------------------------------------------------------------- families


def _shapes_input(rng, max_side, sizes, cols, required, lo=6, hi=12, box=(3, 3), gap=1, margin=0):
    """A grid with one random shape per (size, colour) pair, boxes `gap` apart; shapes after the first
    `required` are left out when there is no room. None when a required one did not fit."""
    h, w = side(rng, lo, min(hi, max_side)), side(rng, lo, min(hi, max_side))
    g = grid(h, w)
    shapes = [(random_shape(rng, box[0], box[1], s), c) for s, c in zip(sizes, cols)]
    return g if scatter(rng, g, shapes, gap, margin, required=required) is not None else None


def _crop_rule(rng, max_side, largest: bool):
    def make(rng):
        k = int(rng.integers(2, 5))
        sizes = [int(s) for s in rng.choice(np.arange(1, 11), size=k, replace=False)]
        return _shapes_input(rng, max_side, sizes, [colour(rng, exclude=(0,)) for _ in sizes], 2, box=(3, 4))

    return Rule(make, partial(crop_object, largest=largest), {"largest": largest})


@family("crop_largest")
def _crop_largest(rng, max_side):
    """Crop the largest object: output its bounding box."""
    return _crop_rule(rng, max_side, True)


@family("crop_smallest")
def _crop_smallest(rng, max_side):
    """Crop the smallest object: output its bounding box."""
    return _crop_rule(rng, max_side, False)


@family("keep_colour")
def _keep_colour(rng, max_side):
    """Keep only the objects of one colour; everything else becomes background."""
    keep = colour(rng, exclude=(0,))
    others = colours(rng, 2, exclude=(0, keep))

    def make(rng):
        n = int(rng.integers(3, 7))
        cols = [keep, others[0]] + [[keep, *others][int(rng.integers(3))] for _ in range(n - 2)]
        return _shapes_input(rng, max_side, [None] * n, cols, 2)

    return Rule(make, partial(keep_colour, keep=keep), {"keep": keep})


@family("recolour_extreme")
def _recolour_extreme(rng, max_side):
    """Recolour the largest object (or, per task, the smallest) in a fixed new colour."""
    largest, x = bool(rng.integers(2)), colour(rng, exclude=(0,))
    new = colour(rng, exclude=(0, x))

    def make(rng):
        k = int(rng.integers(2, 6))
        sizes = [int(s) for s in rng.choice(np.arange(1, 10), size=k, replace=False)]
        return _shapes_input(rng, max_side, sizes, [x] * k, 2)

    return Rule(make, partial(recolour_extreme, largest=largest, new=new), {"largest": largest, "new": new})


@family("recolour_shape")
def _recolour_shape(rng, max_side):
    """Recolour every copy of one particular shape; other shapes keep their colour."""
    x = colour(rng, exclude=(0,))
    new = colour(rng, exclude=(0, x))
    shape = random_shape(rng, 3, 3, int(rng.integers(3, 6)))

    def make(rng):
        g = grid(side(rng, 6, min(12, max_side)), side(rng, 6, min(12, max_side)))
        copies, others = int(rng.integers(1, 4)), []
        while len(others) < 1 or (len(others) < 4 and rng.random() < 0.6):
            other = random_shape(rng, 3, 3, int(shape.sum()) + int(rng.integers(-1, 2)))
            if other.shape != shape.shape or (other != shape).any():
                others.append(other)
        rest = [shape] * (copies - 1) + others[1:]
        masks = [shape, others[0]] + [rest[i] for i in rng.permutation(len(rest))]
        return g if scatter(rng, g, [(m, x) for m in masks], required=2) is not None else None

    return Rule(make, partial(recolour_shape, shape=shape, new=new), {"shape": shape, "new": new})


@family("remove_border_objects")
def _remove_border_objects(rng, max_side):
    """Delete every object that touches the edge of the grid."""

    def make(rng):
        g = grid(side(rng, 6, min(12, max_side)), side(rng, 6, min(12, max_side)))
        occupied = np.zeros(g.shape, dtype=bool)
        for i in range(int(rng.integers(3, 8))):
            mask = random_shape(rng, 3, 3)
            at = place(rng, occupied, *mask.shape, edge=[True, False, None][min(i, 2)])
            if at is None and i < 2:
                return None
            if at is not None:
                g[at[0]:at[0] + mask.shape[0], at[1]:at[1] + mask.shape[1]][mask] = colour(rng, exclude=(0,))
        return g

    return Rule(make, remove_border_objects, {})


@family("crop_unique_colour")
def _crop_unique_colour(rng, max_side):
    """Crop the one object whose colour differs from all the others."""

    def make(rng):
        common, odd = colours(rng, 2, exclude=(0,))
        n = int(rng.integers(3, 6))
        sizes = [int(s) for s in rng.integers(2, 8, size=n)]
        return _shapes_input(rng, max_side, sizes, [odd] + [common] * (n - 1), 3)

    return Rule(make, crop_unique_colour, {})


@family("push_to_edge")
def _push_to_edge(rng, max_side):
    """Slide the content, as one block, up, down, left or right (one per task) until it meets the edge."""
    direction = list(DIRECTIONS)[int(rng.integers(4))]

    def make(rng):
        g = grid(side(rng, 5, min(12, max_side)), side(rng, 5, min(12, max_side)))
        mask = random_shape(rng, 4, 4, int(rng.integers(3, 11)))
        patch = rng.choice(colours(rng, int(rng.integers(1, 3)), exclude=(0,)), size=mask.shape).astype(np.uint8)
        r = int(rng.integers(g.shape[0] - mask.shape[0] + 1))
        c = int(rng.integers(g.shape[1] - mask.shape[1] + 1))
        g[r:r + mask.shape[0], c:c + mask.shape[1]][mask] = patch[mask]
        return g

    return Rule(make, partial(push_to_edge, direction=direction), {"direction": direction})


@family("bounding_box")
def _bounding_box(rng, max_side):
    """Draw a rectangle of a fixed colour around each object, one cell outside its bounding box."""
    col = colour(rng, exclude=(0,))

    def make(rng):
        n = int(rng.integers(1, 5))
        sizes = [int(s) for s in rng.integers(2, 7, size=n)]
        return _shapes_input(rng, max_side, sizes, [colour(rng, exclude=(0, col)) for _ in range(n)], 1,
                             lo=7, hi=13, gap=3, margin=1)

    return Rule(make, partial(draw_boxes, col=col), {"col": col})


@family("stamp_neighbours")
def _stamp_neighbours(rng, max_side):
    """Around each cell of one colour, paint its four side neighbours (or its four corner neighbours)
    in a fixed colour; cells of other colours get nothing."""
    x, col, other = colours(rng, 3, exclude=(0,))
    pattern = ["plus", "x"][int(rng.integers(2))]
    dot = np.ones((1, 1), dtype=bool)

    def make(rng):
        g = grid(side(rng, 5, min(12, max_side)), side(rng, 5, min(12, max_side)))
        dots = [(dot, x)] * int(rng.integers(1, 5)) + [(dot, other)] * int(rng.integers(0, 3))
        return g if scatter(rng, g, dots, gap=2, required=1) is not None else None

    params = {"x": x, "col": col, "pattern": pattern}
    return Rule(make, partial(stamp_neighbours, **params), params)

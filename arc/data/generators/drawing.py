"""Drawing and physics families: gravity, flood fill of enclosed regions, outlines of rectangles,
rays and lines from seed cells, joining pairs, a frame around the grid.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .common import (
    Rule,
    colour,
    colours,
    family,
    flood_from_border,
    grid,
    noise,
    pick_bg,
    place,
    scatter,
    side,
)

# ---------------------------------------------------------------------------------------------- rules

# Gravity is computed falling down; other directions turn the grid so that they point down and back.
TO_DOWN = {"down": lambda g: g, "up": lambda g: g[::-1], "right": lambda g: g.T, "left": lambda g: g[:, ::-1].T}
FROM_DOWN = {"down": lambda g: g, "up": lambda g: g[::-1], "right": lambda g: g.T, "left": lambda g: g.T[:, ::-1]}


def _fall_down(g, bg: int, wall: int | None):
    h, w = g.shape
    out = g.copy()
    for c in range(w):
        col = g[:, c]
        start = 0
        for end in ([] if wall is None else list(np.flatnonzero(col == wall))) + [h]:
            seg = col[start:end]
            vals = seg[seg != bg]
            out[start:end, c] = bg
            out[end - len(vals):end, c] = vals
            start = end + 1
    return out


def gravity(g, direction: str, bg: int = 0, wall: int | None = None):
    """Every non-background cell (except walls, which stay put) falls in `direction` until it meets the
    edge, a wall or a cell that has already landed."""
    return np.ascontiguousarray(FROM_DOWN[direction](_fall_down(TO_DOWN[direction](g), bg, wall)))


def fill_enclosed(g, col: int, bg: int = 0):
    """Background cells that cannot reach the edge through background cells become `col`."""
    passable = g == bg
    out = g.copy()
    out[passable & ~flood_from_border(passable)] = col
    return out


def _interior(g, bg: int):
    """Non-background cells whose four neighbours are inside the grid and of the same colour."""
    h, w = g.shape
    inner = np.zeros(g.shape, dtype=bool)
    if h >= 3 and w >= 3:
        c = g[1:-1, 1:-1]
        same = (g[:-2, 1:-1] == c) & (g[2:, 1:-1] == c) & (g[1:-1, :-2] == c) & (g[1:-1, 2:] == c)
        inner[1:-1, 1:-1] = (c != bg) & same
    return inner


def outline(g, col: int, bg: int = 0):
    """Recolour the edge cells of every shape (non-background cells not in its interior)."""
    out = g.copy()
    out[(g != bg) & ~_interior(g, bg)] = col
    return out


def hollow(g, bg: int = 0):
    """Clear the interior of every shape, leaving its one-cell-thick edge."""
    out = g.copy()
    out[_interior(g, bg)] = bg
    return out


def extend_rays(g, dy: int, dx: int, bg: int = 0):
    """From every non-background cell, draw a ray of its colour in direction (dy, dx) up to the edge,
    over background cells only."""
    out = g.copy()
    h, w = g.shape
    for r, c in zip(*np.nonzero(g != bg)):
        r, c, col = r + dy, c + dx, g[r, c]
        while 0 <= r < h and 0 <= c < w:
            if g[r, c] == bg:
                out[r, c] = col
            r, c = r + dy, c + dx
    return out


def cross_lines(g, mode: str, bg: int = 0):
    """Each non-background cell paints its whole row ('rows'), its whole column ('cols'), or both
    ('both': columns are painted over rows)."""
    out = g.copy()
    cells = list(zip(*np.nonzero(g != bg)))
    if mode in ("rows", "both"):
        for r, c in cells:
            out[r, :] = g[r, c]
    if mode in ("cols", "both"):
        for r, c in cells:
            out[:, c] = g[r, c]
    return out


def connect_pairs(g, bg: int = 0):
    """Where a row (column) holds exactly two cells of a colour, fill the background between them with it."""
    out = g.copy()
    for grid_, view in ((g, out), (g.T, out.T)):
        for r in range(grid_.shape[0]):
            row = grid_[r]
            for col in np.unique(row[row != bg]):
                at = np.flatnonzero(row == col)
                if len(at) == 2:
                    seg = slice(at[0], at[1] + 1)
                    view[r, seg] = np.where(row[seg] == bg, col, view[r, seg])
    return out


def frame(g, col: int):
    out = g.copy()
    out[0, :] = out[-1, :] = out[:, 0] = out[:, -1] = col
    return out


# ---------------------------------------------------------------------------------------------- families


@family("gravity")
def _gravity(rng, max_side):
    """Every coloured cell falls (down, up, left or right, one per task) until it lands on the edge or another cell."""
    direction, bg = ["down", "up", "left", "right"][int(rng.integers(4))], pick_bg(rng)
    make = partial(_noisy, max_side=max_side, bg=bg, density=(0.15, 0.45))
    return Rule(make, partial(gravity, direction=direction, bg=bg), {"direction": direction, "bg": bg})


def _noisy(rng, max_side, bg, density):
    h, w = side(rng, 3, min(10, max_side)), side(rng, 3, min(10, max_side))
    return noise(rng, h, w, colours(rng, int(rng.integers(1, 4)), exclude=(bg,)), rng.uniform(*density), bg)


@family("gravity_walls")
def _gravity_walls(rng, max_side):
    """Cells fall in one direction but walls of a fixed colour stay put and stop them."""
    direction = ["down", "up", "left", "right"][int(rng.integers(4))]
    wall = colour(rng, exclude=(0,))

    def make(rng):
        g = _noisy(rng, max_side, 0, (0.15, 0.35))
        g[g == wall] = 0
        h, w = g.shape
        for _ in range(int(rng.integers(1, 4))):  # wall segments across the direction of fall
            r, c0 = int(rng.integers(1, h)), int(rng.integers(w))
            g[r, c0:c0 + side(rng, 1, w // 2 + 1)] = wall
        return np.ascontiguousarray(FROM_DOWN[direction](g))

    params = {"direction": direction, "wall": wall}
    return Rule(make, partial(gravity, **params), params)


def _rects_input(rng, max_side, cols, hollow_: bool, gap_prob: float = 0.0, lo_side: int = 3):
    """Rectangles (filled or outlines) of the given colours; an outline sometimes has a one-cell gap."""
    g = grid(side(rng, 6, min(13, max_side)), side(rng, 6, min(13, max_side)))
    shapes = []
    for col in cols:
        mask = np.ones((side(rng, lo_side, 6), side(rng, lo_side, 6)), dtype=bool)
        if hollow_:
            mask[1:-1, 1:-1] = False
            if rng.random() < gap_prob:
                h, w = mask.shape
                edge = [(0, c) for c in range(1, w - 1)] + [(r, 0) for r in range(1, h - 1)]
                r, c = edge[int(rng.integers(len(edge)))]
                mask[r if rng.random() < 0.5 else h - 1 - r, c if rng.random() < 0.5 else w - 1 - c] = False
        shapes.append((mask, col))
    return g if scatter(rng, g, shapes, required=1) is not None else None


@family("fill_enclosed")
def _fill_enclosed(rng, max_side):
    """Fill every background region that is fully enclosed (cannot reach the edge) with a fixed colour."""
    wall, col = colours(rng, 2, exclude=(0,))

    def make(rng):
        return _rects_input(rng, max_side, [wall] * int(rng.integers(1, 4)), True, gap_prob=0.35)

    return Rule(make, partial(fill_enclosed, col=col), {"col": col})


@family("outline")
def _outline(rng, max_side):
    """Recolour the border cells of each filled rectangle in a fixed colour, keeping the inside."""
    col = colour(rng, exclude=(0,))

    def make(rng):
        cols = [colour(rng, exclude=(0, col)) for _ in range(int(rng.integers(1, 4)))]
        return _rects_input(rng, max_side, cols, False)

    return Rule(make, partial(outline, col=col), {"col": col})


@family("hollow")
def _hollow(rng, max_side):
    """Hollow out filled rectangles: clear their inside, keep a one-cell-thick border."""
    def make(rng):
        cols = [colour(rng, exclude=(0,)) for _ in range(int(rng.integers(1, 4)))]
        return _rects_input(rng, max_side, cols, False)

    return Rule(make, hollow, {})


@family("extend_rays")
def _extend_rays(rng, max_side):
    """Shoot a ray of its own colour from every coloured cell, in one of eight directions, to the edge."""
    dy, dx = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx][int(rng.integers(8))]

    def make(rng):
        h, w = side(rng, 5, min(12, max_side)), side(rng, 5, min(12, max_side))
        g, lines = grid(h, w), set()
        for _ in range(int(rng.integers(1, 5))):
            r, c = int(rng.integers(h)), int(rng.integers(w))
            line = (dx * r - dy * c)  # cells on one ray line share this value
            if line not in lines:
                lines.add(line)
                g[r, c] = colour(rng, exclude=(0,))
        return g

    return Rule(make, partial(extend_rays, dy=dy, dx=dx), {"dy": dy, "dx": dx})


@family("cross_lines")
def _cross_lines(rng, max_side):
    """Each coloured cell paints its whole row, its whole column, or both (one choice per task)."""
    mode = ["rows", "cols", "both"][int(rng.integers(3))]

    def make(rng):
        h, w = side(rng, 5, min(12, max_side)), side(rng, 5, min(12, max_side))
        g, n = grid(h, w), int(rng.integers(1, 4))
        for r, c in zip(rng.choice(h, size=n, replace=False), rng.choice(w, size=n, replace=False)):
            g[r, c] = colour(rng, exclude=(0,))
        return g

    return Rule(make, partial(cross_lines, mode=mode), {"mode": mode})


@family("connect_pairs")
def _connect_pairs(rng, max_side):
    """Join each pair of same-coloured cells that share a row or column with a line of their colour."""

    def make(rng):
        h, w = side(rng, 5, min(12, max_side)), side(rng, 5, min(12, max_side))
        g, occupied = grid(h, w), np.zeros((h, w), dtype=bool)
        for col in colours(rng, int(rng.integers(1, 5)), exclude=(0,)):
            across = rng.random() < 0.5
            length = side(rng, 3, (w if across else h))
            at = place(rng, occupied, *((1, length) if across else (length, 1)))
            if at is None:
                continue
            g[at] = col
            g[(at[0], at[1] + length - 1) if across else (at[0] + length - 1, at[1])] = col
        return g if occupied.any() else None

    return Rule(make, connect_pairs, {})


@family("frame")
def _frame(rng, max_side):
    """Paint the outermost ring of cells of the grid in a fixed colour."""
    col = colour(rng, exclude=(0,))

    def make(rng):
        g = _noisy(rng, max_side, 0, (0.1, 0.5))
        g[g == col] = 0
        return g

    return Rule(make, partial(frame, col=col), {"col": col})

"""Shared pieces of the task generators.

- `Rule` and `Family`, the registry `FAMILIES` and the `@family` decorator that fills it;
- random sizes and colours, noisy grids, random connected shapes, placing shapes without overlap;
- connected components (4-neighbour, by colour or over any non-background colour), bounding boxes,
  flood fill from the border.

Everything random takes a numpy Generator, so a seed fixes a task completely.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from arc.data.tasks import Grid

DEFAULT_MAX_SIDE = 15  # largest side of any grid (input or output) unless asked otherwise
MIN_MAX_SIDE = 8  # the smallest max_side every family can honour
MAX_SIDE = 30  # ARC's limit


@dataclass(frozen=True)
class Rule:
    """A hidden rule with its parameters fixed: a way to draw inputs and the map input -> output.

    make_input(rng) may return None when it failed to lay out a grid, and apply(grid) returns None when
    the grid does not suit the rule (e.g. no unique largest object); the caller then draws another input.
    apply is a deterministic function of the grid alone.
    """

    make_input: Callable[[np.random.Generator], Grid | None]
    apply: Callable[[Grid], Grid | None]
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """A kind of transformation; sample(rng) draws one concrete Rule of that kind."""

    name: str
    doc: str
    sampler: Callable[[np.random.Generator, int], Rule]

    def sample(self, rng: np.random.Generator, max_side: int = DEFAULT_MAX_SIDE) -> Rule:
        if not MIN_MAX_SIDE <= max_side <= MAX_SIDE:
            raise ValueError(f"max_side must be in {MIN_MAX_SIDE}..{MAX_SIDE}, got {max_side}")
        return self.sampler(rng, max_side)


FAMILIES: dict[str, Family] = {}


def family(name: str):
    """Decorator: register `sampler(rng, max_side) -> Rule` as the family `name` (its docstring is the doc)."""

    def register(sampler):
        if name in FAMILIES:
            raise ValueError(f"family {name!r} registered twice")
        FAMILIES[name] = Family(name, " ".join((sampler.__doc__ or "").split()), sampler)
        return sampler

    return register


# ---------------------------------------------------------------------------------------------- randomness

def grid(h: int, w: int, fill: int = 0) -> Grid:
    return np.full((h, w), fill, dtype=np.uint8)


def side(rng, lo: int, hi: int) -> int:
    """A random length in lo..hi (hi is raised to lo when smaller)."""
    return int(rng.integers(lo, max(lo, hi) + 1))


def colours(rng, n: int, exclude=()) -> list[int]:
    """n distinct random colours, none of them in `exclude`."""
    pool = [c for c in range(10) if c not in set(exclude)]
    return [int(c) for c in rng.permutation(pool)[:n]]


def colour(rng, exclude=()) -> int:
    return colours(rng, 1, exclude)[0]


def pick_bg(rng, p_black: float = 0.75) -> int:
    """Background colour for a task: black most of the time."""
    return 0 if rng.random() < p_black else int(rng.integers(1, 10))


def noise(rng, h: int, w: int, palette, density: float, bg: int = 0) -> Grid:
    """An h x w grid of background where each cell is, with probability `density`, a random palette colour."""
    g = grid(h, w, bg)
    mask = rng.random((h, w)) < density
    g[mask] = rng.choice(np.asarray(palette, dtype=np.uint8), size=int(mask.sum()))
    return g


def noisy_input(lo: int, hi_h: int, hi_w: int | None = None, bg: int = 0, density=(0.2, 0.7), n_colours=(1, 3)):
    """make_input for rules that accept any grid: random sides, 1-3 colours, random density."""
    hi_w = hi_h if hi_w is None else hi_w

    def make(rng):
        h, w = side(rng, lo, hi_h), side(rng, lo, hi_w)
        palette = colours(rng, int(rng.integers(n_colours[0], n_colours[1] + 1)), exclude=(bg,))
        return noise(rng, h, w, palette, rng.uniform(*density), bg)

    return make


NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def random_shape(rng, max_h: int, max_w: int, n_cells: int | None = None) -> np.ndarray:
    """A random 4-connected shape grown cell by cell inside max_h x max_w: a bool mask cropped to its box."""
    area = max_h * max_w
    n_cells = int(rng.integers(1, area + 1)) if n_cells is None else min(n_cells, area)
    mask = np.zeros((max_h, max_w), dtype=bool)
    frontier: list[tuple[int, int]] = []

    def add(r, c):
        mask[r, c] = True
        for dr, dc in NEIGHBOURS:
            if 0 <= r + dr < max_h and 0 <= c + dc < max_w and not mask[r + dr, c + dc]:
                frontier.append((r + dr, c + dc))

    add(int(rng.integers(max_h)), int(rng.integers(max_w)))
    count = 1
    while count < n_cells:
        i = int(rng.integers(len(frontier)))
        r, c = frontier[i]
        frontier[i] = frontier[-1]
        frontier.pop()
        if not mask[r, c]:
            add(r, c)
            count += 1
    return crop_mask(mask)


def place(rng, occupied: np.ndarray, h: int, w: int, gap: int = 1, margin: int = 0, edge: bool | None = None):
    """Top-left corner, drawn uniformly among all that fit, of an h x w box with `gap` free cells around it
    in `occupied` and at least `margin` cells from the edge (edge=True: the box must touch the grid's
    edge, False: must not). Marks the box as occupied. None when it fits nowhere."""
    H, W = occupied.shape
    if H - margin - h < margin or W - margin - w < margin:
        return None
    total = np.zeros((H + 1, W + 1), dtype=np.int32)
    total[1:, 1:] = occupied.cumsum(0).cumsum(1)
    r = np.arange(margin, H - margin - h + 1)[:, None]
    c = np.arange(margin, W - margin - w + 1)[None, :]
    r0, r1 = np.maximum(r - gap, 0), np.minimum(r + h + gap, H)
    c0, c1 = np.maximum(c - gap, 0), np.minimum(c + w + gap, W)
    ok = total[r1, c1] - total[r0, c1] - total[r1, c0] + total[r0, c0] == 0
    if edge is not None:
        ok &= ((r == 0) | (c == 0) | (r + h == H) | (c + w == W)) == edge
    free = np.argwhere(ok)
    if len(free) == 0:
        return None
    i, j = free[int(rng.integers(len(free)))]
    at = int(r[i, 0]), int(c[0, j])
    occupied[at[0]:at[0] + h, at[1]:at[1] + w] = True
    return at


def scatter(rng, g: Grid, shapes, gap: int = 1, margin: int = 0, occupied=None, required: int | None = None):
    """Paint each (mask, colour) of `shapes` at a random free place of g (in place), boxes `gap` apart.
    Shapes after the first `required` (default: all of them) are left out when they do not fit.
    Returns the top-left corners (None for a left-out shape), or None when a required shape did not fit."""
    occupied = np.zeros(g.shape, dtype=bool) if occupied is None else occupied
    required = len(shapes) if required is None else required
    corners = []
    for i, (mask, col) in enumerate(shapes):
        at = place(rng, occupied, mask.shape[0], mask.shape[1], gap, margin)
        if at is None and i < required:
            return None
        if at is not None:
            g[at[0]:at[0] + mask.shape[0], at[1]:at[1] + mask.shape[1]][mask] = col
        corners.append(at)
    return corners


# ---------------------------------------------------------------------------------------------- analysis

def bbox(mask: np.ndarray):
    """(r0, r1, c0, c1), end-exclusive, of the True cells; None when there are none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def crop_mask(mask: np.ndarray) -> np.ndarray:
    r0, r1, c0, c1 = bbox(mask)
    return mask[r0:r1, c0:c1]


@dataclass
class Obj:
    """A connected component: its colour (-1 when it has several) and its cells."""

    colour: int
    cells: list[tuple[int, int]]

    @property
    def size(self) -> int:
        return len(self.cells)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        rows = [r for r, _ in self.cells]
        cols = [c for _, c in self.cells]
        return min(rows), max(rows) + 1, min(cols), max(cols) + 1

    @property
    def mask(self) -> np.ndarray:
        r0, r1, c0, c1 = self.bbox
        m = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        for r, c in self.cells:
            m[r - r0, c - c0] = True
        return m

    def touches_border(self, shape) -> bool:
        r0, r1, c0, c1 = self.bbox
        return r0 == 0 or c0 == 0 or r1 == shape[0] or c1 == shape[1]


def components(g: Grid, bg: int = 0, by_colour: bool = True) -> list[Obj]:
    """4-connected components of non-background cells, in raster order of their first cell.
    by_colour=True: a component has one colour; False: any non-background neighbours join."""
    h, w = g.shape
    vals = g.tolist()
    seen = [[False] * w for _ in range(h)]
    objs = []
    for r0 in range(h):
        for c0 in range(w):
            if seen[r0][c0] or vals[r0][c0] == bg:
                continue
            col = vals[r0][c0]
            seen[r0][c0] = True
            stack, cells, cols = [(r0, c0)], [], set()
            while stack:
                r, c = stack.pop()
                cells.append((r, c))
                cols.add(vals[r][c])
                for dr, dc in NEIGHBOURS:
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < h and 0 <= cc < w and not seen[rr][cc]:
                        v = vals[rr][cc]
                        if v != bg and (v == col or not by_colour):
                            seen[rr][cc] = True
                            stack.append((rr, cc))
            objs.append(Obj(col if len(cols) == 1 else -1, cells))
    return objs


def flood_from_border(passable: np.ndarray) -> np.ndarray:
    """The passable cells 4-connected (through passable cells) to a passable cell on the grid's edge."""
    reach = np.zeros_like(passable)
    reach[[0, -1], :] = passable[[0, -1], :]
    reach[:, [0, -1]] = passable[:, [0, -1]]
    while True:
        grown = reach.copy()
        grown[1:] |= reach[:-1]
        grown[:-1] |= reach[1:]
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown &= passable
        if (grown == reach).all():
            return reach
        reach = grown


def recolour(g: Grid, mapping: dict[int, int]) -> Grid:
    """Apply a colour table to every cell at once (colours not in the table stay)."""
    lut = np.arange(10, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[g]

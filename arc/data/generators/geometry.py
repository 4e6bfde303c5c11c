"""Geometry, scaling and tiling families: the output is the input turned, mirrored, moved, cut or repeated.

Each rule is a plain function of the grid and its parameters (rotate(g, k), tile(g, n, m), ...), so tests
can call it directly; each family draws the parameters and the kind of inputs that show them off.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .common import Rule, bbox, colours, family, grid, noise, noisy_input, pick_bg, side

# ---------------------------------------------------------------------------------------------- rules


def rotate(g, k: int):
    return np.ascontiguousarray(np.rot90(g, k))


def flip(g, axis: int):
    return np.ascontiguousarray(np.flip(g, axis))


def transpose(g, anti: bool):
    return np.ascontiguousarray(g[::-1, ::-1].T if anti else g.T)


def roll(g, dy: int, dx: int):
    return np.roll(g, (dy, dx), axis=(0, 1))


def shift(g, dy: int, dx: int, bg: int = 0):
    """Move everything by (dy, dx); what leaves the grid is lost, what is uncovered becomes background."""
    h, w = g.shape
    out = grid(h, w, bg)
    if abs(dy) < h and abs(dx) < w:
        moved = g[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = moved
    return out


def crop_to_content(g, bg: int = 0):
    box = bbox(g != bg)
    if box is None:
        return None
    r0, r1, c0, c1 = box
    return g[r0:r1, c0:c1].copy()


def half(g, part: str):
    """The top, bottom, left or right half (a middle row or column of an odd side belongs to neither)."""
    h, w = g.shape
    parts = {"top": g[:h // 2], "bottom": g[(h + 1) // 2:], "left": g[:, :w // 2], "right": g[:, (w + 1) // 2:]}
    return parts[part].copy()


def upscale(g, k: int):
    return g.repeat(k, axis=0).repeat(k, axis=1)


def downscale(g, k: int):
    """Shrink k x k blocks of one colour to single cells; None when the grid is not made of such blocks."""
    h, w = g.shape
    if h % k or w % k:
        return None
    small = g[::k, ::k].copy()
    return small if (upscale(small, k) == g).all() else None


def tile(g, n: int, m: int):
    return np.tile(g, (n, m))


MIRRORS = {"id": lambda g: g, "lr": lambda g: g[:, ::-1], "ud": lambda g: g[::-1], "rot": lambda g: g[::-1, ::-1]}


def tile_mirrored(g, quads: tuple[str, str, str, str]):
    """2 x 2 tiling whose quadrants (top-left, top-right, bottom-left, bottom-right) are mirrored copies."""
    q = [MIRRORS[name](g) for name in quads]
    return np.ascontiguousarray(np.vstack([np.hstack(q[:2]), np.hstack(q[2:])]))


def mirror_concat(g, where: str):
    if where == "right":
        return np.hstack([g, g[:, ::-1]])
    if where == "left":
        return np.hstack([g[:, ::-1], g])
    if where == "below":
        return np.vstack([g, g[::-1]])
    return np.vstack([g[::-1], g])


# ---------------------------------------------------------------------------------------------- families


@family("rotate")
def _rotate(rng, max_side):
    """Turn the grid a quarter, half or three-quarter turn counter-clockwise (one angle per task)."""
    k = int(rng.integers(1, 4))
    return Rule(noisy_input(2, min(10, max_side)), partial(rotate, k=k), {"k": k})


@family("flip")
def _flip(rng, max_side):
    """Mirror the grid upside down or left to right."""
    axis = int(rng.integers(2))
    return Rule(noisy_input(2, min(10, max_side)), partial(flip, axis=axis), {"axis": axis})


@family("transpose")
def _transpose(rng, max_side):
    """Reflect the grid across its main diagonal or across its anti-diagonal."""
    anti = bool(rng.integers(2))
    return Rule(noisy_input(2, min(10, max_side)), partial(transpose, anti=anti), {"anti": anti})


@family("roll")
def _roll(rng, max_side):
    """Shift the grid cyclically by a fixed offset: what leaves one side comes back on the other."""
    dy, dx = 0, 0
    while dy == 0 and dx == 0:
        dy, dx = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
    return Rule(noisy_input(3, min(10, max_side)), partial(roll, dy=dy, dx=dx), {"dy": dy, "dx": dx})


@family("shift")
def _shift(rng, max_side):
    """Move all content one or two cells in one of eight directions; uncovered cells become background."""
    bg, dist = pick_bg(rng), int(rng.integers(1, 3))
    dy, dx = 0, 0
    while dy == 0 and dx == 0:
        dy, dx = dist * int(rng.integers(-1, 2)), dist * int(rng.integers(-1, 2))
    make = noisy_input(4, min(11, max_side), bg=bg, density=(0.1, 0.35))
    return Rule(make, partial(shift, dy=dy, dx=dx, bg=bg), {"dy": dy, "dx": dx, "bg": bg})


@family("crop_bbox")
def _crop_bbox(rng, max_side):
    """Crop the grid to the bounding box of its non-background cells."""
    bg = pick_bg(rng)

    def make(rng):
        h, w = side(rng, 4, min(13, max_side)), side(rng, 4, min(13, max_side))
        ph, pw = side(rng, 2, min(5, h - 1)), side(rng, 2, min(5, w - 1))
        patch = noise(rng, ph, pw, colours(rng, int(rng.integers(1, 4)), exclude=(bg,)), rng.uniform(0.5, 0.9), bg)
        patch[0, int(rng.integers(pw))] = patch[-1, int(rng.integers(pw))] = colours(rng, 1, exclude=(bg,))[0]
        g = grid(h, w, bg)
        r, c = int(rng.integers(h - ph + 1)), int(rng.integers(w - pw + 1))
        g[r:r + ph, c:c + pw] = patch
        return g

    return Rule(make, partial(crop_to_content, bg=bg), {"bg": bg})


@family("crop_half")
def _crop_half(rng, max_side):
    """Keep only one half of the grid: the top, bottom, left or right half (one per task)."""
    part = ["top", "bottom", "left", "right"][int(rng.integers(4))]

    def make(rng):
        along, other = side(rng, 2, min(6, max_side // 2)) * 2, side(rng, 2, min(10, max_side))
        h, w = (along, other) if part in ("top", "bottom") else (other, along)
        return noise(rng, h, w, colours(rng, int(rng.integers(2, 5)), exclude=(0,)), rng.uniform(0.3, 0.8))

    return Rule(make, partial(half, part=part), {"part": part})


@family("upscale")
def _upscale(rng, max_side):
    """Blow each cell up into a k x k block (k = 2 or 3 per task)."""
    k = int(rng.integers(2, 4))
    hi = min(5, max_side // k)
    return Rule(noisy_input(2, hi, density=(0.3, 0.8)), partial(upscale, k=k), {"k": k})


@family("downscale")
def _downscale(rng, max_side):
    """Shrink a grid made of k x k blocks of one colour back to one cell per block."""
    k = int(rng.integers(2, 4))
    small = noisy_input(2, min(5, max_side // k), density=(0.3, 0.8))
    return Rule(lambda rng: upscale(small(rng), k), partial(downscale, k=k), {"k": k})


@family("tile")
def _tile(rng, max_side):
    """Repeat the grid n times down and m times across (n, m in 1..3, fixed per task)."""
    n, m = [(1, 2), (2, 1), (2, 2), (1, 3), (3, 1), (3, 3), (2, 3), (3, 2)][int(rng.integers(8))]
    make = noisy_input(2, min(5, max_side // n), min(5, max_side // m), density=(0.3, 0.8))
    return Rule(make, partial(tile, n=n, m=m), {"n": n, "m": m})


@family("tile_mirrored")
def _tile_mirrored(rng, max_side):
    """Make a 2 x 2 tiling whose four quadrants are fixed mirror images (or copies) of the grid."""
    if rng.random() < 0.5:
        quads = ("id", "lr", "ud", "rot")
    else:
        quads = ("id", "id", "id", "id")
        while len(set(quads)) == 1:
            quads = tuple(str(q) for q in rng.choice(list(MIRRORS), size=4))
    make = noisy_input(2, min(5, max_side // 2), density=(0.3, 0.8), n_colours=(2, 3))
    return Rule(make, partial(tile_mirrored, quads=quads), {"quads": quads})


@family("mirror_concat")
def _mirror_concat(rng, max_side):
    """Glue the grid to its mirror image, on its right, left, bottom or top side (one per task)."""
    where = ["right", "left", "below", "above"][int(rng.integers(4))]
    short, long = min(7, max_side // 2), min(10, max_side)
    make = noisy_input(2, short, long) if where in ("below", "above") else noisy_input(2, long, short)
    return Rule(make, partial(mirror_concat, where=where), {"where": where})

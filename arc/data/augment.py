"""Symmetries of ARC tasks: the 8 rotations/reflections, colour permutations and demonstration shuffles.

An ARC puzzle stays the same puzzle if every grid in it is rotated or reflected the same way (the dihedral
group D8 of the square), if its colours are renamed consistently, or if its demonstrations are shown in a
different order. Training on such variants multiplies the data; predicting on them and mapping the answers
back with the exact inverse (`Augmentation.invert_grid`) gives several votes per test input.

Transform k (0..7), for a grid g of shape (h, w):
    0 identity        g
    1 rot90           rotated 90 degrees counter-clockwise (np.rot90(g, 1))
    2 rot180          rotated 180 degrees
    3 rot270          rotated 270 degrees counter-clockwise (= 90 clockwise)
    4 transpose       reflected in the main diagonal (g.T)
    5 flip_lr         reflected left-right (columns reversed)
    6 flip_ud         reflected top-bottom (rows reversed)
    7 anti_transpose  reflected in the anti-diagonal (np.rot90(g, 2).T)
Rotations 1 and 3 are each other's inverse; every other transform is its own inverse.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from arc.data.tasks import Example, Grid, Pair

# The 8 transforms as numpy views of the grid, not copies: the colour lookup in apply_grid/invert_grid
# makes the one copy.
_TRANSFORMS: tuple[Callable[[Grid], Grid], ...] = (
    lambda g: g,
    lambda g: np.rot90(g, 1),
    lambda g: np.rot90(g, 2),
    lambda g: np.rot90(g, 3),
    lambda g: g.T,
    lambda g: g[:, ::-1],
    lambda g: g[::-1, :],
    lambda g: np.rot90(g, 2).T,
)
_INVERSE: tuple[int, ...] = (0, 3, 2, 1, 4, 5, 6, 7)
N_COLOURS = 10


def _composition_table() -> tuple[tuple[int, ...], ...]:
    """_THEN[a][b]: the transform equal to b applied after a, found by applying both to a grid whose 8
    images are all different."""
    probe = np.arange(6).reshape(2, 3)
    images = [t(probe) for t in _TRANSFORMS]
    def index(grid: np.ndarray) -> int:
        return next(k for k, image in enumerate(images) if image.shape == grid.shape and (image == grid).all())

    return tuple(tuple(index(_TRANSFORMS[b](_TRANSFORMS[a](probe))) for b in range(8)) for a in range(8))


_THEN = _composition_table()


@dataclass(frozen=True)
class Augmentation:
    """One symmetry of a task: a D8 transform, a colour renaming and a demonstration order.

    new colour = colours[old colour]; new demonstrations = [old[i] for i in order].
    """

    transform: int
    colours: tuple[int, ...]
    order: tuple[int, ...]
    # Lookup tables built once, since apply_grid runs for every grid of every training row.
    _lut: np.ndarray = field(init=False, repr=False, compare=False)
    _inverse_lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.transform < 8:
            raise ValueError(f"D8 transform must be in 0..7, got {self.transform}")
        if sorted(self.colours) != list(range(N_COLOURS)):
            raise ValueError(f"colours must be a permutation of 0..9, got {self.colours}")
        if sorted(self.order) != list(range(len(self.order))):
            raise ValueError(f"order must be a permutation of 0..{len(self.order) - 1}, got {self.order}")
        lut = np.array(self.colours, dtype=np.uint8)
        inverse = np.empty_like(lut)
        inverse[lut] = np.arange(N_COLOURS, dtype=np.uint8)
        object.__setattr__(self, "_lut", lut)
        object.__setattr__(self, "_inverse_lut", inverse)

    def apply_grid(self, grid: Grid) -> Grid:
        # Fancy indexing allocates the result, so the view needs no copy of its own; it may come out
        # non-contiguous for transposed views, hence ascontiguousarray (a no-op when it already is).
        return np.ascontiguousarray(self._lut[_TRANSFORMS[self.transform](grid)])

    def invert_grid(self, grid: Grid) -> Grid:
        """Map a grid from the augmented frame back to the original one (e.g. a prediction)."""
        return np.ascontiguousarray(self._inverse_lut[_TRANSFORMS[_INVERSE[self.transform]](grid)])

    def _pair(self, pair: Pair) -> Pair:
        output = None if pair.output is None else self.apply_grid(pair.output)
        return Pair(self.apply_grid(pair.input), output)

    def apply(self, example: Example) -> Example:
        if len(example.train) != len(self.order):
            raise ValueError(f"augmentation orders {len(self.order)} demonstrations, got {len(example.train)}")
        train = [self._pair(example.train[i]) for i in self.order]
        # the example remembers the D8 transform its grids are in (the pair layout's transform embedding)
        return Example(example.task_id, example.test_index, train, self._pair(example.test),
                       _THEN[example.transform][self.transform])


def identity_augmentation(n_train: int) -> Augmentation:
    return Augmentation(0, tuple(range(N_COLOURS)), tuple(range(n_train)))


def colour_map(task_id: str, k: int, keep_background: bool = True) -> tuple[int, ...]:
    """The k-th of a task's fixed colour permutations: 0 is the identity, k > 0 a permutation that depends
    only on (task id, k), so training and prediction draw the same ones without storing them. The pair
    layout uses a few per task (--colour-maps K): the model is not told which permutation a row went
    through, and with a few it can tell them apart by the colours a task's grids use, so colour-specific
    rules ("red becomes blue") stay learnable; with a fresh random one per row they are not."""
    if k == 0:
        return tuple(range(N_COLOURS))
    rng = np.random.default_rng([zlib.crc32(task_id.encode()), k])
    if keep_background:
        return (0, *(1 + int(c) for c in rng.permutation(N_COLOURS - 1)))
    return tuple(int(c) for c in rng.permutation(N_COLOURS))


def random_augmentation(
    rng: np.random.Generator,
    n_train: int,
    geometric: bool = True,
    colours: bool = True,
    keep_background: bool = True,
    shuffle: bool = True,
) -> Augmentation:
    """A uniformly random augmentation among those the flags allow.

    keep_background keeps colour 0 fixed: black is the background in most tasks, so renaming it would
    produce puzzles unlike any the model will be tested on.
    """
    transform = int(rng.integers(8)) if geometric else 0
    if not colours:
        perm = tuple(range(N_COLOURS))
    elif keep_background:
        perm = (0, *(1 + int(c) for c in rng.permutation(N_COLOURS - 1)))
    else:
        perm = tuple(int(c) for c in rng.permutation(N_COLOURS))
    order = tuple(int(i) for i in rng.permutation(n_train)) if shuffle else tuple(range(n_train))
    return Augmentation(transform, perm, order)


def own_colours(pair: Pair, keep_background: bool = True) -> tuple[int, ...]:
    """The colours a view pool permutes: those that appear in the pair's grids (input, and output when it
    has one), black left out with keep_background."""
    grids = [pair.input] + ([] if pair.output is None else [pair.output])
    present = sorted(set().union(*(np.unique(g).tolist() for g in grids)))
    return tuple(int(c) for c in present if not (keep_background and c == 0))


def own_colour_permutation(pair: Pair, rng: np.random.Generator, keep_background: bool = True) -> tuple[int, ...]:
    """A random permutation (new colour = perm[old]) of the pair's own colours among themselves (own_colours);
    every other colour stays."""
    colours = own_colours(pair, keep_background)
    perm = list(range(N_COLOURS))
    for old, new in zip(colours, rng.permutation(colours)):
        perm[old] = int(new)
    return tuple(perm)


def _nth_permutation(items: Sequence[int], n: int) -> tuple[int, ...]:
    """The n-th permutation of items (0 <= n < len(items)!) in lexicographic order of positions; 0 is items."""
    left, out = list(items), []
    for size in range(len(left), 0, -1):
        position, n = divmod(n, math.factorial(size - 1))
        out.append(left.pop(position))
    return tuple(out)


def view_pool(pair: Pair, k: int, rng: np.random.Generator, keep_background: bool = True,
              transforms: Sequence[int] = tuple(range(8))) -> list[Augmentation]:
    """min(k, available) distinct views of one pair (mdlARC's per-pair augmentations): a D8 transform from
    `transforms` (those the caller allows, e.g. the ones whose row fits) times a permutation of the pair's
    own colours among themselves (own_colours: only colours that appear are renamed, to colours that
    appear; the others, and black with keep_background, stay). With m such colours there are
    len(transforms) * m! views; each is numbered (rank r: transform transforms[r % len(transforms)],
    colour permutation number r // len(transforms)), and the pool is rank 0 (the pair as given, when
    transform 0 is allowed) then k - 1 other ranks drawn from rng without repeats. Two views differ in
    their transform or in the colour of some cell, so their rows differ (the transform embedding, or a cell)."""
    if k < 1 or not transforms:
        raise ValueError(f"a view pool needs k >= 1 and at least one transform, got k={k}, transforms={transforms}")
    colours = own_colours(pair, keep_background)
    total = len(transforms) * math.factorial(len(colours))
    need = min(k, total) - 1  # besides rank 0
    if 2 * need > total - 1:  # most of the views: a shuffle of them all (total is small here, under 2k)
        ranks = [0, *(1 + int(r) for r in rng.permutation(total - 1)[:need])]
    else:  # a few of many (up to 8 * 10! views): redraw the repeats
        ranks, seen = [0], {0}
        while len(ranks) <= need:
            r = int(rng.integers(1, total))
            if r not in seen:
                seen.add(r)
                ranks.append(r)
    views = []
    for r in ranks:
        transform, number = transforms[r % len(transforms)], r // len(transforms)
        perm = list(range(N_COLOURS))
        for old, new in zip(colours, _nth_permutation(colours, number)):
            perm[old] = new
        views.append(Augmentation(transform, tuple(perm), ()))
    return views


def make_views(n_train: int, k: int, seed: int, keep_background: bool = True,
               cover_transforms: bool = False) -> list[Augmentation]:
    """k augmentations for a task with n_train demonstrations: the identity first (the task as given is
    always one of the experts), then k - 1 distinct random ones, reproducible from seed. With
    cover_transforms view v takes D8 transform v % 8, so 8 views see all eight (the pair layout, whose
    model was trained with an embedding per transform)."""
    if k < 1:
        raise ValueError(f"need at least one view, got k={k}")
    rng = np.random.default_rng(seed)
    views = [identity_augmentation(n_train)]
    seen = {(v.transform, v.colours, v.order) for v in views}
    # Duplicate views would count one expert twice. Small tasks have few symmetries (1 demonstration,
    # no colour change: only 8), so give up loudly rather than loop forever.
    for _ in range(1000 * k):
        if len(views) == k:
            return views
        view = random_augmentation(rng, n_train, keep_background=keep_background)
        if cover_transforms:
            view = replace(view, transform=len(views) % 8)
        key = (view.transform, view.colours, view.order)
        if key not in seen:
            seen.add(key)
            views.append(view)
    if len(views) == k:
        return views
    raise ValueError(f"could not draw {k} distinct views for {n_train} demonstrations")

"""Turning families into tasks: draw a rule, then distinct input grids, apply the rule, check the result."""
from __future__ import annotations

import zlib

import numpy as np

from arc.data.tasks import Pair, Task

from .common import DEFAULT_MAX_SIDE, FAMILIES, Rule

DEFAULT_MAX_CELLS = 1500  # cells in all grids of a task together


def valid_grid(g, max_side: int = 30) -> bool:
    return (isinstance(g, np.ndarray) and g.ndim == 2 and g.dtype == np.uint8
            and 1 <= g.shape[0] <= max_side and 1 <= g.shape[1] <= max_side and int(g.max()) <= 9)


def draw_pairs(rule: Rule, rng: np.random.Generator, n: int, max_side: int = DEFAULT_MAX_SIDE,
               tries_per_pair: int = 20) -> list[Pair] | None:
    """n pairs with pairwise distinct, valid inputs and valid outputs; None when the rule kept failing."""
    pairs, seen = [], set()
    for _ in range(n):
        for _ in range(tries_per_pair):
            x = rule.make_input(rng)
            if x is None or not valid_grid(x, max_side):
                continue
            key = (x.shape, x.tobytes())
            if key in seen:
                continue
            y = rule.apply(x)
            if y is None or not valid_grid(y, max_side):
                continue
            seen.add(key)
            pairs.append(Pair(x, y))
            break
        else:
            return None
    return pairs


def _informative(pairs: list[Pair], n_train: int) -> bool:
    """Some demonstration changes its input, and the outputs are not all one and the same grid."""
    changed = any(p.input.shape != p.output.shape or (p.input != p.output).any() for p in pairs[:n_train])
    first = pairs[0].output
    all_same = all(p.output.shape == first.shape and (p.output == first).all() for p in pairs[1:])
    return changed and not all_same


def generate_task(family: str, rng: np.random.Generator, n_train: int | None = None, n_test: int = 1,
                  max_side: int = DEFAULT_MAX_SIDE, max_cells: int | None = DEFAULT_MAX_CELLS,
                  tries: int = 100) -> Task:
    """A task of `family`: one hidden rule, n_train demonstrations (default 2..4) and n_test test pairs.
    Grids have sides of at most max_side and the task at most max_cells cells in all (None: no limit);
    a rule whose draws fail these checks, or are uninformative, is thrown away and another drawn."""
    fam = FAMILIES[family]
    if n_train is None:
        n_train = int(rng.integers(2, 5))
    for _ in range(tries):
        rule = fam.sample(rng, max_side)
        pairs = draw_pairs(rule, rng, n_train + n_test, max_side)
        if pairs is None or not _informative(pairs, n_train):
            continue
        if max_cells is not None and sum(p.input.size + p.output.size for p in pairs) > max_cells:
            continue
        task_id = f"gen-{family}-{int(rng.integers(2**32)):08x}"
        return Task(task_id, pairs[:n_train], pairs[n_train:])
    raise RuntimeError(f"family {family!r} failed to produce a valid task in {tries} tries")


def generated_tasks(per_family: int, n_pairs: int = 8, seed: int = 0) -> list[Task]:
    """per_family fixed tasks of every family, each with n_pairs pairs (the last one its test), the same
    on every call: task k of a family is drawn from a generator seeded by (seed, the family's name, k).
    The pair layout trains on them as extra training tasks, each with its own row of the task table."""
    tasks = []
    for family in sorted(FAMILIES):
        for k in range(per_family):
            rng = np.random.default_rng([seed, zlib.crc32(family.encode()), k])
            task = generate_task(family, rng, n_train=n_pairs - 1, max_cells=None)
            tasks.append(Task(f"gen-{family}-{k}", task.train, task.test))
    return tasks

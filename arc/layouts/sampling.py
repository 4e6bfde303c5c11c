"""Training batches: rows drawn as a pure function of (seed, row index), in either row layout.

Every row is a pure function of (seed, row index): the random generator for row i is seeded with
(seed, i). So a run is reproducible, a resumed run draws exactly the rows the uninterrupted run
would have drawn, and no data-loader state needs saving. Batches are cut from length-sorted chunks
of rows, so the rows of a batch have similar lengths and little compute goes to padding.

Two samplers, one per row layout (arc.layouts.rows):
    InContextSampler  a task, a choice of which of its pairs is the test, the others as demonstrations
    PairSampler       a task (training task or evaluated task, by a set share), one of its pairs;
                      an evaluated task offers its demonstrations only: its test outputs never reach it
Both augment every row afresh (D8 transform, colour permutation, demonstration order).

Two regimes:
    unlimited (default)  row i is a fresh draw: the model rarely sees a row twice
    --max-examples N     the first N rows form a fixed pool that is cycled through, reshuffled every
                         epoch (the walkthrough's "1,000 augmented rows" experiment)
"""
from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np

from arc.data.augment import colour_map, random_augmentation
from arc.data.generators import FAMILIES, generate_task
from arc.data.tasks import Example, Task
from arc.infra.errors import ConfigError
from arc.layouts.rows import Batch, EncodedRow, InContextRows, PairRows, collate

# Rows are drawn for this many batches at a time and sorted by length before being cut into batches:
# padding falls from ~46% of the tokens (random batches of 8 ARC-AGI-1 training rows) to ~10%.
BUCKET_BATCHES = 8
GENERATOR_FAMILIES = sorted(FAMILIES)


class Sampler:
    """What both samplers share: fresh rows from (seed, index), the fixed pool, length-bucketed batches.
    A subclass says how one row is drawn (`_draw`)."""

    def __init__(self, max_len: int, seed: int, max_examples: int | None):
        self.max_len, self.seed, self.max_examples = max_len, seed, max_examples
        self.skipped = 0  # draws that could not fit in max_len

    def _draw(self, rng: np.random.Generator) -> EncodedRow | None:
        raise NotImplementedError

    def _fresh_row(self, index: int) -> EncodedRow:
        rng = np.random.default_rng([self.seed, index])
        for _ in range(100):
            row = self._draw(rng)
            if row is not None:
                return row
            self.skipped += 1
        raise ConfigError(f"100 draws in a row did not fit in {self.max_len} tokens: raise --max-row-tokens (and --max-seq-len)")

    @functools.lru_cache(maxsize=4)
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 1 << 32, epoch]).permutation(self.max_examples)

    def row(self, index: int) -> EncodedRow:
        if self.max_examples is None:
            return self._fresh_row(index)
        epoch, position = divmod(index, self.max_examples)
        return self._fresh_row(int(self._epoch_order(epoch)[position]))

    @functools.lru_cache(maxsize=1)
    def _chunk(self, chunk: int, batch_size: int) -> tuple[list[EncodedRow], np.ndarray]:
        """The rows of BUCKET_BATCHES consecutive batches sorted by length, and the order to serve them in."""
        first = chunk * BUCKET_BATCHES * batch_size
        rows = sorted((self.row(first + i) for i in range(BUCKET_BATCHES * batch_size)), key=lambda r: len(r.ids))
        return rows, np.random.default_rng([self.seed, 2 << 32, chunk]).permutation(BUCKET_BATCHES)

    def batch(self, index: int, batch_size: int) -> Batch:
        """Batch number `index`: rows of similar length (bucketed within a chunk of batches), padded."""
        chunk, position = divmod(index, BUCKET_BATCHES)
        rows, order = self._chunk(chunk, batch_size)
        start = int(order[position]) * batch_size
        return collate(rows[start : start + batch_size])


class InContextSampler(Sampler):
    """In-context rows: a task, which of its pairs is the test, the others as its demonstrations."""

    def __init__(
        self,
        tasks: list[Task],
        rows: InContextRows,
        max_len: int,
        seed: int,
        augment: bool = True,  # D8 transform + colour permutation + demonstration order per row
        keep_background: bool = True,  # colour permutations keep 0 (black background) fixed
        any_pair_as_test: bool = True,  # any pair with a known output may serve as the test pair
        train_on_demo_outputs: bool = False,  # also put demonstration outputs (after the first) in the loss
        max_examples: int | None = None,  # cycle through a fixed pool of this many rows
        generated_fraction: float = 0.0,  # share of rows drawn from arc.data.generators tasks instead of `tasks`
    ):
        if not tasks:
            raise ValueError("no training tasks")
        super().__init__(max_len, seed, max_examples)
        self.tasks, self.rows = tasks, rows
        self.augment, self.keep_background = augment, keep_background
        self.any_pair_as_test, self.train_on_demo_outputs = any_pair_as_test, train_on_demo_outputs
        self.generated_fraction = generated_fraction

    def _draw(self, rng: np.random.Generator) -> EncodedRow | None:
        if self.generated_fraction > 0 and rng.random() < self.generated_fraction:
            task = generate_task(GENERATOR_FAMILIES[rng.integers(len(GENERATOR_FAMILIES))], rng)
        else:
            task = self.tasks[rng.integers(len(self.tasks))]
        pairs = [p for p in task.train + task.test if p.output is not None]
        if self.any_pair_as_test and len(pairs) >= 2:
            test_index = int(rng.integers(len(pairs)))
            example = Example(task.id, test_index, pairs[:test_index] + pairs[test_index + 1 :], pairs[test_index])
        else:
            test_index = int(rng.integers(len(task.test)))
            example = Example(task.id, test_index, task.train, task.test[test_index])
        if self.augment:
            aug = random_augmentation(rng, len(example.train), keep_background=self.keep_background)
            example = aug.apply(example)
        fitted = self.rows.fit(example, self.max_len)
        if fitted is None:
            return None
        return self.rows.encode(fitted, self.train_on_demo_outputs)


class PairSampler(Sampler):
    """Pair-layout rows: one pair of one task, with the task's embedding row and the D8 transform.

    The task table is the training tasks followed by the evaluated tasks (`task_ids`, saved in the
    checkpoint). A training task offers every pair with a known output (its test pairs too); an
    evaluated task offers its demonstration pairs, and with input_loss its test inputs (inputs only).
    Its test outputs must already be gone: evaluated tasks are passed through Task.without_test_outputs,
    and the sampler refuses any that still has one (the leak guard)."""

    def __init__(
        self,
        train_tasks: list[Task],
        evaluated_tasks: list[Task],
        rows: PairRows,
        max_len: int,
        seed: int,
        evaluated_share: float = 0.5,  # share of rows drawn from the evaluated tasks (when there are any)
        input_loss: bool = False,  # loss on the input grids too (and rows of the evaluated test inputs)
        augment: bool = True,  # a random D8 transform and colour permutation per row
        keep_background: bool = True,  # colour permutations keep 0 (black background) fixed
        max_examples: int | None = None,  # cycle through a fixed pool of this many rows
        colour_maps: int = 0,  # 0: a fresh random colour permutation per row | K: one of the task's K fixed ones (arc.data.augment.colour_map)
        first_task: int = 0,  # embedding row of the first task (tasks added to a trained table start after it)
    ):
        super().__init__(max_len, seed, max_examples)
        for task in evaluated_tasks:
            if any(p.output is not None for p in task.test):
                raise ValueError(f"evaluated task {task.id} still has a test output: it must never reach a training row")
        self.task_ids = [t.id for t in train_tasks] + [t.id for t in evaluated_tasks]
        if len(set(self.task_ids)) != len(self.task_ids):
            raise ValueError("a task id appears twice among the training and evaluated tasks")
        self.rows, self.input_loss, self.augment, self.keep_background = rows, input_loss, augment, keep_background
        self.colour_maps = colour_maps
        self.evaluated_share = evaluated_share if evaluated_tasks else 0.0
        # per group, per task: (task embedding row, the pairs it offers)
        offer = lambda t: [p for p in t.train + t.test if p.output is not None or input_loss]  # noqa: E731
        self.groups = [[(first_task + i, offer(t)) for i, t in enumerate(train_tasks)],
                       [(first_task + len(train_tasks) + i, offer(t)) for i, t in enumerate(evaluated_tasks)]]
        self.first_task = first_task
        if not self.groups[0] and not self.groups[1]:
            raise ValueError("no training tasks")

    def _draw(self, rng: np.random.Generator) -> EncodedRow | None:
        evaluated = not self.groups[0] or rng.random() < self.evaluated_share
        group = self.groups[1 if evaluated else 0]
        task, pairs = group[rng.integers(len(group))]
        pair = pairs[rng.integers(len(pairs))]
        example = Example(self.task_ids[task - self.first_task], 0, [], pair)
        transform = 0
        if self.augment:
            aug = random_augmentation(rng, 0, keep_background=self.keep_background)
            if self.colour_maps:
                aug = replace(aug, colours=colour_map(example.task_id, int(rng.integers(self.colour_maps)), self.keep_background))
            example, transform = aug.apply(example), aug.transform
        answer = None if pair.output is not None else 0  # an evaluated task's test input: the row ends at O
        if self.rows.fit(example, self.max_len, answer) is None:
            return None
        return self.rows.encode(example, self.input_loss, task, transform)

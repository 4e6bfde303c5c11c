"""Training rows and batches: pick a task -> choose its test pair -> augment -> fit -> encode -> pad.

Every row is a pure function of (seed, row index): the random generator for row i is seeded with
(seed, i). So a run is reproducible, a resumed run draws exactly the rows the uninterrupted run
would have drawn, and no data-loader state needs saving. Batches are cut from length-sorted chunks
of rows, so the rows of a batch have similar lengths and little compute goes to padding.

Two regimes:
    unlimited (default)  row i is a fresh draw: a random task (a training task, or with
                         --generated-fraction a freshly generated one from arc.generators), a random
                         choice of which of its pairs is the test, a random D8 transform, colour
                         permutation and demonstration order: the model rarely sees a row twice
    --max-examples N     the first N rows form a fixed pool that is cycled through, reshuffled every
                         epoch (the walkthrough's "1,000 augmented rows" experiment)
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from arc.augment import random_augmentation
from arc.data import Example, Task
from arc.generators import FAMILIES, generate_task
from arc.tokenizer import PAD, EncodedRow, GridTokenizer

IGNORE = -100  # target value that cross-entropy skips
# Rows are drawn for this many batches at a time and sorted by length before being cut into batches:
# padding falls from ~46% of the tokens (random batches of 8 ARC-AGI-1 training rows) to ~10%.
BUCKET_BATCHES = 8
GENERATOR_FAMILIES = sorted(FAMILIES)


class RowSampler:
    def __init__(
        self,
        tasks: list[Task],
        tokenizer: GridTokenizer,
        max_len: int,
        seed: int,
        augment: bool = True,  # D8 transform + colour permutation + demonstration order per row
        keep_background: bool = True,  # colour permutations keep 0 (black background) fixed
        any_pair_as_test: bool = True,  # any pair with a known output may serve as the test pair
        train_on_demo_outputs: bool = False,  # also put demonstration outputs (after the first) in the loss
        max_examples: int | None = None,  # cycle through a fixed pool of this many rows
        generated_fraction: float = 0.0,  # share of rows drawn from arc.generators tasks instead of `tasks`
    ):
        if not tasks:
            raise ValueError("no training tasks")
        self.tasks, self.tokenizer, self.max_len, self.seed = tasks, tokenizer, max_len, seed
        self.augment, self.keep_background = augment, keep_background
        self.any_pair_as_test, self.train_on_demo_outputs = any_pair_as_test, train_on_demo_outputs
        self.max_examples = max_examples
        self.generated_fraction = generated_fraction
        self.skipped = 0  # draws that could not fit in max_len even with one demonstration

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
        fitted = self.tokenizer.fit(example, self.max_len)
        if fitted is None:
            return None
        return self.tokenizer.encode_example(fitted, self.train_on_demo_outputs)

    def _fresh_row(self, index: int) -> EncodedRow:
        rng = np.random.default_rng([self.seed, index])
        for _ in range(100):
            row = self._draw(rng)
            if row is not None:
                return row
            self.skipped += 1
        raise ValueError(f"100 draws in a row did not fit in max_len={self.max_len}: raise --max-len")

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

    def batch(self, index: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number `index`: rows of similar length (bucketed within a chunk of batches), padded."""
        chunk, position = divmod(index, BUCKET_BATCHES)
        rows, order = self._chunk(chunk, batch_size)
        start = int(order[position]) * batch_size
        return collate(rows[start : start + batch_size])


def collate(rows: list[EncodedRow]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad rows to the longest: inputs (B, T) and next-token targets (B, T), IGNORE outside the loss."""
    T = max(len(r.ids) for r in rows) - 1
    inputs = torch.full((len(rows), T), PAD, dtype=torch.long)
    targets = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.ids) - 1
        inputs[b, :n] = torch.from_numpy(r.ids[:-1])
        targets[b, :n] = torch.from_numpy(np.where(r.loss_mask[1:], r.ids[1:], IGNORE))
    return inputs, targets


def heldout_rows(examples: list[Example], tokenizer: GridTokenizer, max_len: int) -> tuple[list[EncodedRow], int]:
    """Un-augmented rows for the eval loss (test output tokens only), and how many did not fit."""
    rows, skipped = [], 0
    for ex in examples:
        fitted = tokenizer.fit(ex, max_len)
        if fitted is None:
            skipped += 1
        else:
            rows.append(tokenizer.encode_example(fitted))
    return rows, skipped

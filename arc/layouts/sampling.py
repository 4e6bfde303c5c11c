"""Training batches: rows drawn as a pure function of (seed, row index), for any row layout.

Every row is a pure function of (seed, row index): the random generator for row i is seeded with
(seed, i). So a run is reproducible, a resumed run draws exactly the rows the uninterrupted run
would have drawn, and no data-loader state needs saving. Batches are cut from length-sorted chunks
of rows, so the rows of a batch have similar lengths and little compute goes to padding.

Sampler is the base; each layout's own samplers (arc.layouts.pair, arc.layouts.in_context) say how one
row is drawn (`_draw`), augmenting every row afresh (D8 transform, colour permutation, demonstration order).

Two regimes:
    unlimited (default)  row i is a fresh draw: the model rarely sees a row twice
    --max-examples N     the first N rows form a fixed pool that is cycled through, reshuffled every
                         epoch (the walkthrough's "1,000 augmented rows" experiment)
"""
from __future__ import annotations

import functools

import numpy as np

from arc.layouts.rows import Batch, EncodedRow, NoRows, collate

# Rows are drawn for this many batches at a time and sorted by length before being cut into batches:
# padding falls from ~46% of the tokens (random batches of 8 ARC-AGI-1 training rows) to ~10%.
BUCKET_BATCHES = 8


class Sampler:
    """Fresh rows from (seed, index), the fixed pool, length-bucketed batches. A subclass says how one
    row is drawn (`_draw`)."""

    def __init__(self, row_tokens: int, seed: int, max_examples: int | None):
        self.row_tokens, self.seed, self.max_examples = row_tokens, seed, max_examples
        self.skipped = 0  # draws that could not fit in row_tokens

    def _draw(self, rng: np.random.Generator, index: int) -> EncodedRow | None:
        """Row number `index`, drawn with rng (seeded by (seed, index)); None when it does not fit (drawn again)."""
        raise NotImplementedError

    def _fresh_row(self, index: int) -> EncodedRow:
        rng = np.random.default_rng([self.seed, index])
        for _ in range(100):
            row = self._draw(rng, index)
            if row is not None:
                return row
            self.skipped += 1
        # which flag sets the budget is the caller's to say (train.py's --max-row-tokens, evaluate.py's
        # --context-tokens)
        raise NoRows(f"100 draws in a row did not fit in {self.row_tokens} tokens")

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

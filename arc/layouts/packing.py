"""Packed batches: training rows laid end to end in sequences of one fixed length.

Every packed batch is `batch_size` sequences of `length` tokens (the run's row budget, so any row fits
in one), each holding whole rows one after another and padding only after the last one:

    sequence 0:  I <in> O <out> E  I <in> O <out> E  I <in> O <out> E  P P
    segments:    0 0 0 0 0 0 0 0 0 1 1 1 1 ...    1  2 ...           2  3 3
    sequence 1:  I <in> O <out> E  I <in> O <out> E  P P P P P P P P P P P
    ...

`segments` says which row each token belongs to; the model (arc.model.packed) keeps attention inside
each row and starts each row's positions afresh, so a packed row is computed exactly as it would be on
its own, and the loss is still the mean over the target tokens of the step. What changes is the
shape: every step is the same (batch_size, length), so torch.compile builds one graph for the whole
run, and ~98% of the tokens are real where length-bucketed padded batches of pair rows were ~73%.

Which rows: packing stays a pure function of (seed, index), like the rows themselves
(arc.layouts.sampling), so a resumed run packs exactly the batches the uninterrupted run would have.
Batches are packed in chunks of CHUNK_SEQUENCES sequences: chunk c takes the rows of its own index range
(sampler.row(c * ROWS_PER_CHUNK + k), k = 0, 1, ...) in order, each into the first sequence with room
for it, until a row fits nowhere; that row is left out and the chunk is cut into batches. Packing 32
sequences at a time fills them to ~98.7% (pair rows), and leaving the closing row out (more often a
long one) barely changes which rows are trained on: rows over 1,024 tokens hold 6.2% of the packed
tokens against 6.4% of freshly drawn ones (RESULTS.md). With a fixed pool of rows (--max-examples), each
chunk's range starts at its own place in the pool's reshuffled cycle: the rows are the pool's, drawn
evenly, but an epoch no longer serves each of them exactly once.
"""
from __future__ import annotations

import functools

import torch

from arc.data.tokenizer import PAD
from arc.layouts.rows import IGNORE, Batch, Batches, EncodedRow, PaddedBatches, shifted
from arc.layouts.sampling import Sampler

CHUNK_SEQUENCES = 32  # sequences packed together (at least one batch): more fill them better
ROWS_PER_CHUNK = 1 << 20  # each chunk's own range of row indexes: far more rows than 32 sequences can hold


def collate_packed(sequences: list[list[EncodedRow]], length: int) -> Batch:
    """Lay each sequence's rows end to end in `length` tokens: inputs, next-token targets (IGNORE outside
    each row's loss), per-token task and transform ids, and segments (the row each token belongs to;
    the padding after the last row is one more segment). A row of n ids takes n - 1 tokens, as in collate."""
    B = len(sequences)
    inputs = torch.full((B, length), PAD, dtype=torch.long)
    targets = torch.full((B, length), IGNORE, dtype=torch.long)
    segments, task, transform = (torch.zeros(B, length, dtype=torch.long) for _ in range(3))
    for b, rows in enumerate(sequences):
        at = 0
        for i, r in enumerate(rows):
            n = len(r.ids) - 1
            if at + n > length:
                raise ValueError(f"sequence {b}: its rows take more than {length} tokens")
            inputs[b, at : at + n], targets[b, at : at + n] = shifted(r)
            segments[b, at : at + n], task[b, at : at + n], transform[b, at : at + n] = i, r.task, r.transform
            at += n
        segments[b, at:] = len(rows)
    return Batch(inputs, targets, task, transform, segments)


class PackedBatches(Batches):
    """Fixed-shape packed batches of a sampler's rows: batches(index) is (batch_size, length) tokens."""

    def __init__(self, sampler: Sampler, batch_size: int, length: int):
        self.sampler, self.batch_size, self.length = sampler, batch_size, length
        self.batches_per_chunk = max(1, CHUNK_SEQUENCES // batch_size)

    @functools.lru_cache(maxsize=1)
    def _chunk(self, chunk: int) -> list[list[EncodedRow]]:
        """The chunk's sequences, each a list of rows, packed first-fit in drawing order."""
        sequences = [[] for _ in range(self.batches_per_chunk * self.batch_size)]
        free = [self.length] * len(sequences)
        first = chunk * ROWS_PER_CHUNK
        for k in range(ROWS_PER_CHUNK):
            row = self.sampler.row(first + k)
            n = len(row.ids) - 1
            fits = next((s for s, room in enumerate(free) if n <= room), None)
            if fits is None:
                break
            sequences[fits].append(row)
            free[fits] -= n
        return sequences

    def first_row(self, index: int) -> int:
        return index // self.batches_per_chunk * ROWS_PER_CHUNK

    def forget(self) -> None:
        self._chunk.cache_clear()

    def __call__(self, index: int) -> Batch:
        chunk, position = divmod(index, self.batches_per_chunk)
        first = position * self.batch_size
        return collate_packed(self._chunk(chunk)[first : first + self.batch_size], self.length)


def training_batches(sampler: Sampler, batch_size: int, row_tokens: int, packed: bool) -> Batches:
    """A sampler's training batches: batch_size sequences of row_tokens tokens, rows packed end to end
    (packed), else batch_size rows padded to the longest (arc.layouts.sampling)."""
    return PackedBatches(sampler, batch_size, row_tokens) if packed else PaddedBatches(sampler, batch_size)

"""Rows: how ARC examples become token sequences for training, scoring and prediction, in two layouts.

A row is one token sequence, a loss mask saying which of its tokens are trained on, and (pair layout)
the task and D8 transform whose embeddings the model adds to every token. Two layouts, one class each
with the same methods (fit, encode, prompt), chosen by name with `make_rows`:

in_context (the walkthrough's): every demonstration in the context, the rule inferred in one forward

    B I <demo 1 input> O <demo 1 output> E  I <demo 2 input> O <demo 2 output> E  I <test input> O | <test output> E

pair (mdlARC, TRM, HRM): one (input, output) pair per row; the rule lives in the task's learned
embedding, trained on the task's demonstrations (test-time training folded into training)

    I <input> O | <output> E          + task embedding + D8 transform embedding on every token

`|` marks where a prompt ends and the model writes. Grids are written as in arc.data.tokenizer (rows of
colour digits, each ended by a row token). Besides the layouts this module owns what every row
shares: collation into padded batches (IGNORE for tokens outside the loss), the answer length limit,
and the held-out rows that give the eval loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from arc.data.tasks import MAX_SIDE, Example
from arc.data.tokenizer import (
    MAX_OUTPUT_TOKENS,
    PAD,
    GridTokenizer,
    grid_length,
    grid_text,
)

IGNORE = -100  # target value that cross-entropy skips
LAYOUTS = ("in_context", "pair")


@dataclass
class EncodedRow:
    ids: np.ndarray  # (T,) int64 token ids
    loss_mask: np.ndarray  # (T,) bool: True where ids[t] is a target the model is trained to predict
    task: int = 0  # row of the task embedding table (pair layout; ignored by models without one)
    transform: int = 0  # D8 transform the row's grids went through (pair layout)


class Batch(NamedTuple):
    inputs: torch.Tensor  # (B, T) token ids, PAD after each row's end
    targets: torch.Tensor  # (B, T) next-token targets, IGNORE outside the loss
    task: torch.Tensor  # (B,) task embedding rows
    transform: torch.Tensor  # (B,) D8 transforms

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in self))


def collate(rows: list[EncodedRow]) -> Batch:
    """Pad rows to the longest: inputs and next-token targets, IGNORE outside the loss."""
    T = max(len(r.ids) for r in rows) - 1
    inputs = torch.full((len(rows), T), PAD, dtype=torch.long)
    targets = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.ids) - 1
        inputs[b, :n] = torch.from_numpy(r.ids[:-1])
        targets[b, :n] = torch.from_numpy(np.where(r.loss_mask[1:], r.ids[1:], IGNORE))
    task = torch.tensor([r.task for r in rows], dtype=torch.long)
    transform = torch.tensor([r.transform for r in rows], dtype=torch.long)
    return Batch(inputs, targets, task, transform)


def answer_budget(example: Example) -> int:
    """Tokens reserved for the answer: its true size when known (training), otherwise the largest
    demonstration output (prediction must not peek at the answer's size)."""
    if example.test.output is not None:
        return grid_length(example.test.output) + 1
    return max(grid_length(p.output) for p in example.train) + 1


def answer_limit(example: Example, slack: float) -> int:
    """The most tokens worth generating for the answer (with its end token), from the demonstrations
    only: per side, the larger of the largest demonstration output and the test input scaled by each
    demonstration's output/input ratio, times slack, capped at a 30x30 grid. slack 0: no limit but
    30x30. With slack 2 no ARC-AGI-1 test output, training or evaluation, is cut off (RESULTS.md),
    while a model that never writes its end token stops 2-3x sooner than at 30x30."""
    if slack <= 0:
        return MAX_OUTPUT_TOKENS
    h_in, w_in = example.test.input.shape
    h = max(max(p.output.shape[0], math.ceil(p.output.shape[0] * h_in / p.input.shape[0])) for p in example.train)
    w = max(max(p.output.shape[1], math.ceil(p.output.shape[1] * w_in / p.input.shape[1])) for p in example.train)
    return min(MAX_OUTPUT_TOKENS, int(slack * (min(h, MAX_SIDE) * (min(w, MAX_SIDE) + 1) + 1)))


class InContextRows:
    """The in-context layout: demonstrations, then the test input, then the answer.

    Loss mask: the test output's tokens (its rows and its E); with train_on_demo_outputs the
    demonstration outputs after the first as well (the first cannot be predicted: nothing before it
    shows the rule). A task too long for the context drops its longest demonstrations until it fits."""

    name = "in_context"
    options = ("train_on_demo_outputs", "generated_fraction")  # TrainConfig fields only this layout reads

    def __init__(self, tokenizer: GridTokenizer):
        self.tokenizer = tokenizer

    @staticmethod
    def _segments(example: Example, with_answer: bool) -> list[tuple[str, bool]]:
        """The sequence as (text, is_demo_output_or_answer) pieces; the flag drives the loss mask."""
        pieces: list[tuple[str, bool]] = [("B", False)]
        for i, pair in enumerate(example.train):
            pieces.append(("I" + grid_text(pair.input) + "O", False))
            pieces.append((grid_text(pair.output) + "E", i > 0))
        pieces.append(("I" + grid_text(example.test.input) + "O", False))
        if with_answer:
            pieces.append((grid_text(example.test.output) + "E", True))
        return pieces

    def encode(self, example: Example, train_on_demo_outputs: bool = False, task: int = 0, transform: int = 0) -> EncodedRow:
        """The full sequence with the test output, and which tokens are trained on."""
        if example.test.output is None:
            raise ValueError(f"task {example.task_id}: test[{example.test_index}] has no output to train on")
        pieces = self._segments(example, with_answer=True)
        ids = np.array(self.tokenizer.encode_text("".join(t for t, _ in pieces)), dtype=np.int64)
        mask = np.zeros(len(ids), dtype=bool)
        start = 0
        for k, (text, is_output) in enumerate(pieces):
            end = start + len(text)  # one token per character
            is_answer = k == len(pieces) - 1
            if is_answer or (is_output and train_on_demo_outputs):
                mask[start:end] = True
            start = end
        return EncodedRow(ids, mask, task, transform)

    def prompt(self, example: Example) -> list[int]:
        """Everything up to and including the test output marker 'O': what the decoder continues."""
        return self.tokenizer.encode_text("".join(t for t, _ in self._segments(example, with_answer=False)))

    @staticmethod
    def length(example: Example, answer_tokens: int) -> int:
        demos = sum(2 + grid_length(p.input) + grid_length(p.output) + 1 for p in example.train)
        return 1 + demos + 2 + grid_length(example.test.input) + answer_tokens

    def fit(self, example: Example, max_len: int, answer_tokens: int | None = None) -> Example | None:
        """Drop the longest demonstrations until the example fits in max_len tokens, keeping at least
        one; None when even one demonstration is too many. Each demonstration is measured once and the
        drop order (longest first, the first of equals first) comes from one sort, so a task with
        thousands of demonstrations fits in O(n log n), not one rescan per dropped demonstration."""
        answer = answer_budget(example) if answer_tokens is None else answer_tokens
        sizes = [2 + grid_length(p.input) + grid_length(p.output) + 1 for p in example.train]
        total = self.length(example, answer)
        dropped: set[int] = set()
        for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):  # stable: equals keep their order
            if total <= max_len:
                break
            if len(dropped) == len(sizes) - 1:
                return None
            dropped.add(i)
            total -= sizes[i]
        if total > max_len:
            return None
        train = [p for i, p in enumerate(example.train) if i not in dropped]
        return Example(example.task_id, example.test_index, train, example.test)


class PairRows:
    """The pair layout: one (input, output) pair per row, `I <input> O <output> E`.

    The row's task and transform ids travel with it (EncodedRow.task, .transform). Loss mask: the
    output's tokens and E; with input_loss the input's cells and row ends as well (predicting a grid
    from the task's embedding is signal too: mdlARC's argument). A row with no output (an evaluated
    task's test input, input_loss only) ends at O. Demonstrations are kept on the Example (the answer
    length limit reads them) but never written into the row."""

    name = "pair"
    options = ("evaluated_share", "input_loss", "colour_maps", "task_embedding")  # TrainConfig fields only this layout reads

    def __init__(self, tokenizer: GridTokenizer, colour_maps: int = 0, keep_background: bool = True):
        self.tokenizer = tokenizer
        # how training permuted colours, which prediction's views follow (arc.inference.ensemble.views_for)
        self.colour_maps, self.keep_background = colour_maps, keep_background

    def encode(self, example: Example, input_loss: bool = False, task: int = 0, transform: int = 0) -> EncodedRow:
        pair = example.test
        if pair.output is None and not input_loss:
            raise ValueError(f"task {example.task_id}: test[{example.test_index}] has no output to train on")
        prompt = "I" + grid_text(pair.input) + "O"
        answer = "" if pair.output is None else grid_text(pair.output) + "E"
        ids = np.array(self.tokenizer.encode_text(prompt + answer), dtype=np.int64)
        mask = np.zeros(len(ids), dtype=bool)
        mask[len(prompt):] = True
        if input_loss:
            mask[1 : len(prompt)] = True  # the input's rows and O; the first token is never a target
        return EncodedRow(ids, mask, task, transform)

    def prompt(self, example: Example) -> list[int]:
        return self.tokenizer.encode_text("I" + grid_text(example.test.input) + "O")

    @staticmethod
    def length(example: Example, answer_tokens: int) -> int:
        return 2 + grid_length(example.test.input) + answer_tokens

    def fit(self, example: Example, max_len: int, answer_tokens: int | None = None) -> Example | None:
        """The example itself when its row fits in max_len tokens, else None (nothing can be dropped)."""
        answer = answer_budget(example) if answer_tokens is None else answer_tokens
        return example if self.length(example, answer) <= max_len else None


Rows = InContextRows | PairRows


def make_rows(layout: str, tokenizer: GridTokenizer, colour_maps: int = 0, keep_background: bool = True) -> Rows:
    """The rows of a layout; colour_maps and keep_background (pair layout) say how training permuted colours."""
    if layout == "in_context":
        return InContextRows(tokenizer)
    if layout == "pair":
        return PairRows(tokenizer, colour_maps, keep_background)
    raise ValueError(f"unknown row layout {layout!r}: {' | '.join(LAYOUTS)}")


def heldout_rows(examples: list[Example], rows: Rows, max_len: int,
                 task_index: dict[str, int] | None = None) -> tuple[list[EncodedRow], int]:
    """Un-augmented rows for the eval loss (test output tokens only), and how many did not fit.
    task_index maps task ids to task embedding rows (pair layout)."""
    encoded, skipped = [], 0
    for ex in examples:
        fitted = rows.fit(ex, max_len)
        if fitted is None:
            skipped += 1
        else:
            encoded.append(rows.encode(fitted, task=(task_index or {}).get(ex.task_id, 0)))
    return encoded, skipped

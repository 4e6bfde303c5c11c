"""What every row layout shares: the encoded row, batches, the answer's token budget, and the Layout base.

A row is one token sequence, a loss mask saying which of its tokens are trained on, and the task and D8
transform whose embeddings a pair-layout model adds to every token (EncodedRow). The ids travel with
the row: a layout reads the task from the example's task id (its task table) and the transform from
the example itself (Example.transform, set by arc.data.augment), so no caller passes them alongside.

A layout (arc.layouts.pair, arc.layouts.in_context) is one class owning everything that differs between
the two ways of showing a task to the model:

    its rows            encode (a full row, with its loss mask), prompt (what the decoder continues),
                        length and fit (into a token budget)
    its samplers        the training rows of train.py, and the demonstration rows that test-time
                        training and adaptation learn from (arc.inference)
    its views           the augmented views a test input is predicted and scored under
    its batches         packed (arc.layouts.packing) or padded (batch_size rows): LayoutConfig.pack, else
                        the layout's way (`packs_by_default`)
    its options         the LayoutConfig fields only it reads (`options`), whether the model keeps a
                        learned row per task (`task_table`), its default number of views

Built from a run's layout settings (arc.layouts.config.LayoutConfig: the run's TrainConfig.layout, which
config.json records), so training and evaluation of one checkpoint see the same layout. `|` below marks
where a prompt ends.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from arc.data.augment import Augmentation
from arc.data.tasks import MAX_SIDE, Example, Task
from arc.data.tokenizer import MAX_OUTPUT_TOKENS, PAD, GridTokenizer, grid_length
from arc.layouts.config import OPTIONS, LayoutConfig

IGNORE = -100  # target value that cross-entropy skips


@dataclass
class EncodedRow:
    ids: np.ndarray  # (T,) int64 token ids
    loss_mask: np.ndarray  # (T,) bool: True where ids[t] is a target the model is trained to predict
    task: int = 0  # row of the task embedding table (pair layout; ignored by models without one)
    transform: int = 0  # D8 transform the row's grids went through (pair layout)


class Batch(NamedTuple):
    inputs: torch.Tensor  # (B, T) token ids, PAD after each row's end
    targets: torch.Tensor  # (B, T) next-token targets, IGNORE outside the loss
    task: torch.Tensor  # (B,) task embedding rows; (B, T), one per token, in a packed batch
    transform: torch.Tensor  # (B,) D8 transforms; (B, T) in a packed batch
    segments: torch.Tensor | None = None  # packed batches (arc.layouts.packing): (B, T), the row each token belongs to

    def to(self, device) -> "Batch":
        return Batch(*(None if t is None else t.to(device) for t in self))


def token_row(ids, task: int = 0, transform: int = 0) -> EncodedRow:
    """A row of just these token ids (no loss mask): a prompt to decode, for code that builds its own
    tokens (tests, benchmarks) rather than a layout's."""
    ids = np.asarray(ids, dtype=np.int64)
    return EncodedRow(ids, np.zeros(len(ids), dtype=bool), task, transform)


def shifted(row: EncodedRow) -> tuple[torch.Tensor, torch.Tensor]:
    """A row of n ids as n - 1 inputs and their next-token targets (IGNORE outside the loss): what a row
    puts into a batch, padded (collate) or packed (arc.layouts.packing)."""
    return torch.from_numpy(row.ids[:-1]), torch.from_numpy(np.where(row.loss_mask[1:], row.ids[1:], IGNORE))


def collate(rows: list[EncodedRow]) -> Batch:
    """Pad rows to the longest: inputs and next-token targets, IGNORE outside the loss."""
    T = max(len(r.ids) for r in rows) - 1
    inputs = torch.full((len(rows), T), PAD, dtype=torch.long)
    targets = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.ids) - 1
        inputs[b, :n], targets[b, :n] = shifted(r)
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


class NoRows(ValueError):
    """A sampler that can draw no row at all (say, every demonstration is longer than the token budget)."""


class Batches:
    """A sampler's training batches: batches(index) is batch number `index`, a pure function of (seed, index)."""

    def __call__(self, index: int) -> Batch:
        raise NotImplementedError

    def first_row(self, index: int) -> int:
        """The number of the first sampler row in batch `index` (exact to within the chunk of rows around it
        that is sorted or packed together): where a switch of the rows (PairSampler.final_phase) lands."""
        raise NotImplementedError

    def forget(self) -> None:
        """Drop what was built ahead from the sampler's rows (they changed: PairSampler.final_phase)."""


class PaddedBatches(Batches):
    """batch_size rows per batch, padded to the longest (Sampler.batch: length-bucketed within a chunk)."""

    def __init__(self, sampler, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size

    def __call__(self, index: int) -> Batch:
        return self.sampler.batch(index, self.batch_size)

    def first_row(self, index: int) -> int:
        return index * self.batch_size


class Layout:
    """The base of the row layouts: the task table and the settings a layout is built with. Subclasses
    define the rows (encode, prompt, length, fit), the samplers and the views."""

    name: str
    task_table: bool = False  # the model keeps a learned row per task: unseen tasks need one (arc.inference.adapt)
    packs_by_default: bool = False  # training batches when LayoutConfig.pack is unset: packed, or padded rows
    default_views: int = 1  # views a test input is predicted under when DecodeConfig.views is 0 ...
    budget_views: int = 1  # ... and under evaluate.py --minutes

    def __init__(self, tokenizer: GridTokenizer, config: LayoutConfig | None = None,
                 task_ids: list[str] | tuple[str, ...] = ()):
        """config: the run's layout settings (None: LayoutConfig's defaults for this layout). task_ids: the
        task table, row i is task_ids[i]."""
        config = LayoutConfig(name=self.name) if config is None else config
        if config.name != self.name:
            raise ValueError(f"a {config.name} layout's settings given to the {self.name} layout")
        self.tokenizer, self.config = tokenizer, config
        self.augment = config.augment  # a random view (D8, colours, order) per training row
        self.keep_background = config.keep_background  # colour permutations keep 0 fixed
        self.max_examples = config.max_examples  # a fixed pool of training rows (None: fresh rows)
        self.packs = self.packs_by_default if config.pack is None else config.pack  # packed training batches
        self.task_ids: list[str] = list(task_ids)
        self._rows = {task_id: i for i, task_id in enumerate(self.task_ids)}

    # ---- the task table ----------------------------------------------------------------------------

    def task_row(self, task_id: str) -> int:
        """The task's row in the model's task embedding table; 0 for a layout without one."""
        if not self.task_table:
            return 0
        if task_id not in self._rows:
            raise ValueError(f"task {task_id} has no row in the task table (adapt to it first: arc.inference.adapt)")
        return self._rows[task_id]

    @property
    def options(self) -> tuple[str, ...]:
        """The LayoutConfig fields only this layout reads (arc.layouts.config.OPTIONS)."""
        return OPTIONS[self.name]

    def knows(self, task_id: str) -> bool:
        return not self.task_table or task_id in self._rows

    def add_tasks(self, task_ids: list[str]) -> None:
        """Append rows for new tasks, in the order the model's table grows (Transformer.add_tasks)."""
        for task_id in task_ids:
            if task_id in self._rows:
                raise ValueError(f"task {task_id} already has a row")
            self._rows[task_id] = len(self.task_ids)
            self.task_ids.append(task_id)

    # ---- rows (subclasses) ---------------------------------------------------------------------------

    def encode(self, example: Example, train: bool = False) -> EncodedRow:
        """The full row of an example with its output; train: the loss mask training uses (the layout's
        options), else the answer's tokens only (scoring)."""
        raise NotImplementedError

    def prompt(self, example: Example) -> EncodedRow:
        """What the decoder continues (everything up to and including the answer's O), as a row with an
        empty loss mask: its ids, task and transform."""
        raise NotImplementedError

    def length(self, example: Example, answer_tokens: int) -> int:
        raise NotImplementedError

    def fit(self, example: Example, max_tokens: int, answer_tokens: int | None = None) -> Example | None:
        """The example as it fits in max_tokens (answer included), or None."""
        raise NotImplementedError

    # ---- samplers and views (subclasses) -------------------------------------------------------------

    def sampler(self, train_tasks: list[Task], evaluated_tasks: list[Task], row_tokens: int, seed: int):
        """Training rows (arc.layouts.sampling.Sampler). evaluated_tasks come without test outputs."""
        raise NotImplementedError

    def demonstration_sampler(self, tasks: list[Task], row_tokens: int, seed: int, augment: bool = True,
                              replay: list[Task] = (), replay_share: float = 0.0):
        """Rows from the tasks' demonstrations only (and what else a test-time learner may see), for
        test-time training and adaptation; NoRows when none can be built. replay: a layout with a task table
        mixes in rows of the tasks a checkpoint trained on, replay_share of them (adaptation)."""
        raise NotImplementedError

    def views(self, example: Example, k: int, seed: int) -> list[Augmentation]:
        """The k views an example is predicted (or scored) under, the identity first."""
        raise NotImplementedError

    def batches(self, sampler, batch_size: int, row_tokens: int) -> "Batches":
        """A sampler's training batches: batch_size sequences of row_tokens tokens with rows packed end to end
        when self.packs, else batch_size rows padded to the longest (arc.layouts.packing.training_batches)."""
        raise NotImplementedError

    # ---- shared --------------------------------------------------------------------------------------

    def _row(self, example: Example, ids: list[int], mask: np.ndarray | None = None) -> EncodedRow:
        ids = np.array(ids, dtype=np.int64)
        return EncodedRow(ids, np.zeros(len(ids), dtype=bool) if mask is None else mask,
                          self.task_row(example.task_id), example.transform)

    def scored_rows(self, examples: list[Example], max_tokens: int) -> tuple[list[EncodedRow], int]:
        """Un-augmented rows for the eval loss (test output tokens only), and how many did not fit."""
        encoded, skipped = [], 0
        for ex in examples:
            fitted = self.fit(ex, max_tokens)
            if fitted is None:
                skipped += 1
            else:
                encoded.append(self.encode(fitted))
        return encoded, skipped

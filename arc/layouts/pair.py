"""The pair layout (mdlARC, TRM, HRM): one (input, output) pair per row, the rule in a learned task embedding.

    I <input> O | <output> E          + task embedding + D8 transform embedding on every token

A row shows no demonstrations: the model learns each task's rule into that task's row of an embedding
table, trained on the task's pairs. So training covers the evaluated tasks' demonstrations too (never
their test outputs: test-time training folded into training), and a task the table lacks gets a row
at test time (arc.inference.adapt). The transform embedding tells the model which of the 8 D8 frames a
row is in; prediction votes over all 8 (`views`).

Training batches pack rows end to end in fixed-length sequences with `pack` (arc.layouts.packing): pair
rows are short (~330 tokens, up to ~1,900) and vary a lot, so padded batches waste a quarter of their tokens.

Loss mask: the output's tokens and E; with input_loss (a training option) the input's cells and row
ends as well (predicting a grid from the task's embedding is signal too: mdlARC's argument), and rows
of the evaluated tasks' test inputs, which end at O. Colours: a fresh random permutation per row, or
one of each task's K fixed maps (colour_maps K), which prediction's views then follow.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from arc.data.augment import Augmentation, colour_map, make_views, random_augmentation
from arc.data.tasks import Example, Pair, Task
from arc.data.tokenizer import grid_length, grid_text
from arc.layouts.packing import PackedBatches
from arc.layouts.rows import EncodedRow, Layout, NoRows, answer_budget
from arc.layouts.sampling import Sampler


class PairLayout(Layout):
    name = "pair"
    options = ("evaluated_share", "input_loss", "colour_maps", "task_embedding", "generated_tasks", "pack")
    default_views = 8  # trained under all 8 D8 transforms, each with its embedding: predict under all 8

    def __init__(self, tokenizer, settings: dict | None = None, task_ids=()):
        super().__init__(tokenizer, settings, task_ids)
        settings = settings or {}
        self.task_table = settings.get("task_embedding", True)  # a learned row per task (and per D8 transform)
        self.evaluated_share: float = settings.get("evaluated_share", 0.5)  # share of training rows from the evaluated tasks
        self.input_loss: bool = settings.get("input_loss", False)  # training rows put the input in the loss too
        self.colour_maps: int = settings.get("colour_maps", 0)  # 0: random colour permutations | K: each task's K fixed maps
        self.packs: bool = settings.get("pack", False)  # training batches: rows packed in fixed-length sequences

    # ---- rows ----------------------------------------------------------------------------------------

    def encode(self, example: Example, train: bool = False) -> EncodedRow:
        pair = example.test
        input_loss = train and self.input_loss
        if pair.output is None and not input_loss:
            raise ValueError(f"task {example.task_id}: test[{example.test_index}] has no output to train on")
        prompt = "I" + grid_text(pair.input) + "O"
        answer = "" if pair.output is None else grid_text(pair.output) + "E"
        ids = self.tokenizer.encode_text(prompt + answer)
        mask = np.zeros(len(ids), dtype=bool)
        mask[len(prompt):] = True
        if input_loss:
            mask[1 : len(prompt)] = True  # the input's rows and O; the first token is never a target
        return self._row(example, ids, mask)

    def prompt(self, example: Example) -> EncodedRow:
        return self._row(example, self.tokenizer.encode_text("I" + grid_text(example.test.input) + "O"))

    def length(self, example: Example, answer_tokens: int) -> int:
        return 2 + grid_length(example.test.input) + answer_tokens

    def fit(self, example: Example, max_tokens: int, answer_tokens: int | None = None) -> Example | None:
        """The example itself when its row fits in max_tokens, else None (nothing can be dropped).
        Demonstrations stay on the Example (the answer length limit reads them) but never enter the row."""
        answer = answer_budget(example) if answer_tokens is None else answer_tokens
        return example if self.length(example, answer) <= max_tokens else None

    # ---- samplers and views --------------------------------------------------------------------------

    def sampler(self, train_tasks: list[Task], evaluated_tasks: list[Task], row_tokens: int, seed: int) -> "PairSampler":
        return PairSampler(self, train_tasks, evaluated_tasks, row_tokens, seed, self.evaluated_share, self.augment,
                           self.max_examples)

    def demonstration_sampler(self, tasks: list[Task], row_tokens: int, seed: int, augment: bool = True) -> "PairSampler":
        """The tasks' demonstration pairs (and, with input_loss, their test inputs), under the training
        augmentations: what test-time training and adaptation learn from. Test outputs are dropped here."""
        tasks = [t.without_test_outputs() for t in tasks]
        if not any(self._fits(pair, row_tokens) for t in tasks for pair in t.train):
            raise NoRows(f"no demonstration fits in {row_tokens} tokens")
        return PairSampler(self, [], tasks, row_tokens, seed, augment=augment)

    def batches(self, sampler: Sampler, batch_size: int, row_tokens: int):
        """Packed (the pack setting): batch_size sequences of row_tokens tokens, rows end to end (arc.layouts.packing);
        otherwise batch_size rows, padded."""
        if self.packs:
            return PackedBatches(sampler, batch_size, row_tokens).batch
        return super().batches(sampler, batch_size, row_tokens)

    def _fits(self, pair: Pair, row_tokens: int) -> bool:
        """Whether the pair's row fits in some D8 frame (a transpose turns h*(w+1) tokens into w*(h+1))."""
        return any(self.fit(Example("", 0, [], Pair(g(pair.input), g(pair.output))), row_tokens) is not None
                   for g in (lambda x: x, np.transpose))

    def views(self, example: Example, k: int, seed: int) -> list[Augmentation]:
        """View v takes D8 transform v % 8 (each has its embedding) and, when the model was trained on each
        task's K fixed colour maps, the task's map v % K, else a random colour permutation."""
        if not self.colour_maps:
            return make_views(len(example.train), k, seed, self.keep_background, cover_transforms=True)
        order = tuple(range(len(example.train)))
        return [Augmentation(v % 8, colour_map(example.task_id, v % self.colour_maps, self.keep_background), order)
                for v in range(k)]


class PairSampler(Sampler):
    """Pair-layout rows: one pair of one task, in the task's row of the layout's table, under a random view.

    A training task offers every pair with a known output (its test pairs too); an evaluated task offers
    its demonstration pairs, and with the layout's input_loss its test inputs (inputs only). Its test
    outputs must already be gone: evaluated tasks are passed through Task.without_test_outputs, and the
    sampler refuses any that still has one (the leak guard)."""

    def __init__(
        self,
        layout: PairLayout,
        train_tasks: list[Task],
        evaluated_tasks: list[Task],
        row_tokens: int,
        seed: int,
        evaluated_share: float = 0.5,  # share of rows drawn from the evaluated tasks (when there are any)
        augment: bool = True,  # a random D8 transform and colour permutation per row
        max_examples: int | None = None,  # cycle through a fixed pool of this many rows
    ):
        super().__init__(row_tokens, seed, max_examples)
        for task in evaluated_tasks:
            if any(p.output is not None for p in task.test):
                raise ValueError(f"evaluated task {task.id} still has a test output: it must never reach a training row")
        ids = [t.id for t in train_tasks + evaluated_tasks]
        if len(set(ids)) != len(ids):
            raise ValueError("a task id appears twice among the training and evaluated tasks")
        if not ids:
            raise ValueError("no training tasks")
        self.layout, self.augment = layout, augment
        self.evaluated_share = evaluated_share if evaluated_tasks else 0.0
        # per group (training tasks, evaluated tasks), per task: (task id, the pairs it offers)
        offer = lambda t: [p for p in t.train + t.test if p.output is not None or layout.input_loss]  # noqa: E731
        self.groups = [[(t.id, offer(t)) for t in train_tasks], [(t.id, offer(t)) for t in evaluated_tasks]]

    def _draw(self, rng: np.random.Generator) -> EncodedRow | None:
        evaluated = not self.groups[0] or rng.random() < self.evaluated_share
        group = self.groups[1 if evaluated else 0]
        task_id, pairs = group[rng.integers(len(group))]
        pair = pairs[rng.integers(len(pairs))]
        example = Example(task_id, 0, [], pair)
        if self.augment:
            layout = self.layout
            aug = random_augmentation(rng, 0, keep_background=layout.keep_background)
            if layout.colour_maps:
                aug = replace(aug, colours=colour_map(task_id, int(rng.integers(layout.colour_maps)), layout.keep_background))
            example = aug.apply(example)
        answer = None if pair.output is not None else 0  # an evaluated task's test input: the row ends at O
        if self.layout.fit(example, self.row_tokens, answer) is None:
            return None
        return self.layout.encode(example, train=True)

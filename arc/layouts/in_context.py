"""The in-context layout (the walkthrough's, for pretrained LLMs): every demonstration in the context, the rule
inferred in one forward pass.

    B I <demo 1 input> O <demo 1 output> E  I <demo 2 input> O <demo 2 output> E  I <test input> O | <test output> E

Loss mask: the test output's tokens (its rows and its E); training rows (train_on_demo_outputs) also the
demonstration outputs after the first (the first cannot be predicted: nothing before it shows the rule).
A task too long for the context drops its longest demonstrations until it fits. Test-time training
learns from leave-one-out rows: each demonstration in turn is the test, the others its context.
"""
from __future__ import annotations

import numpy as np

from arc.data.augment import Augmentation, make_views, random_augmentation
from arc.data.generators import FAMILIES, generate_task
from arc.data.tasks import Example, Task
from arc.data.tokenizer import grid_length, grid_text
from arc.layouts.packing import training_batches
from arc.layouts.rows import EncodedRow, Layout, NoRows, answer_budget
from arc.layouts.sampling import Sampler

GENERATOR_FAMILIES = sorted(FAMILIES)


class InContextLayout(Layout):
    name = "in_context"

    def __init__(self, tokenizer, config=None, task_ids=()):
        super().__init__(tokenizer, config, task_ids)
        self.train_on_demo_outputs = self.config.train_on_demo_outputs  # demonstration outputs after the first: loss
        self.generated_fraction = self.config.generated_fraction  # share of training rows from generated tasks

    # ---- rows ----------------------------------------------------------------------------------------

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

    def encode(self, example: Example, train: bool = False) -> EncodedRow:
        if example.test.output is None:
            raise ValueError(f"task {example.task_id}: test[{example.test_index}] has no output to train on")
        demo_outputs = train and self.train_on_demo_outputs
        pieces = self._segments(example, with_answer=True)
        ids = self.tokenizer.encode_text("".join(t for t, _ in pieces))
        mask = np.zeros(len(ids), dtype=bool)
        start = 0
        for k, (text, is_output) in enumerate(pieces):
            end = start + len(text)  # one token per character
            is_answer = k == len(pieces) - 1
            if is_answer or (is_output and demo_outputs):
                mask[start:end] = True
            start = end
        return self._row(example, ids, mask)

    def prompt(self, example: Example) -> EncodedRow:
        text = "".join(t for t, _ in self._segments(example, with_answer=False))
        return self._row(example, self.tokenizer.encode_text(text))

    def length(self, example: Example, answer_tokens: int) -> int:
        demos = sum(2 + grid_length(p.input) + grid_length(p.output) + 1 for p in example.train)
        return 1 + demos + 2 + grid_length(example.test.input) + answer_tokens

    def fit(self, example: Example, max_tokens: int, answer_tokens: int | None = None) -> Example | None:
        """Drop the longest demonstrations until the example fits in max_tokens, keeping at least one;
        None when even one demonstration is too many. Each demonstration is measured once and the drop
        order (longest first, the first of equals first) comes from one sort, so a task with thousands of
        demonstrations fits in O(n log n), not one rescan per dropped demonstration."""
        answer = answer_budget(example) if answer_tokens is None else answer_tokens
        sizes = [2 + grid_length(p.input) + grid_length(p.output) + 1 for p in example.train]
        total = self.length(example, answer)
        dropped: set[int] = set()
        for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):  # stable: equals keep their order
            if total <= max_tokens:
                break
            if len(dropped) == len(sizes) - 1:
                return None
            dropped.add(i)
            total -= sizes[i]
        if total > max_tokens:
            return None
        kept = [p for i, p in enumerate(example.train) if i not in dropped]
        return Example(example.task_id, example.test_index, kept, example.test, example.transform)

    # ---- samplers and views --------------------------------------------------------------------------

    def sampler(self, train_tasks: list[Task], evaluated_tasks: list[Task], row_tokens: int,
                seed: int) -> "InContextSampler":
        """Rows of the training tasks only: an in-context model learns no task-specific weights, so the
        evaluated tasks are left to test-time training."""
        return InContextSampler(self, train_tasks, row_tokens, seed, self.augment, self.max_examples,
                                self.generated_fraction)

    def demonstration_sampler(self, tasks: list[Task], row_tokens: int, seed: int, augment: bool = True,
                              replay: list[Task] = (), replay_share: float = 0.0) -> "LeaveOneOutSampler":
        if replay:
            raise ValueError("the in-context layout has no task table: nothing to adapt, nothing to replay")
        return LeaveOneOutSampler(self, tasks, row_tokens, seed, augment)

    def views(self, example: Example, k: int, seed: int) -> list[Augmentation]:
        """make_views: random transforms, colours and demonstration orders, the task as given first."""
        return make_views(len(example.train), k, seed)

    def batches(self, sampler, batch_size: int, row_tokens: int):
        return training_batches(sampler, batch_size, row_tokens, self.packs)


class InContextSampler(Sampler):
    """In-context training rows: a task, which of its pairs is the test, the others as its demonstrations."""

    def __init__(self, layout: InContextLayout, tasks: list[Task], row_tokens: int, seed: int, augment: bool = True,
                 max_examples: int | None = None, generated_fraction: float = 0.0):
        if not tasks:
            raise ValueError("no training tasks")
        super().__init__(row_tokens, seed, max_examples)
        self.layout, self.tasks, self.augment, self.generated_fraction = layout, tasks, augment, generated_fraction

    def _draw(self, rng: np.random.Generator, index: int) -> EncodedRow | None:
        if self.generated_fraction > 0 and rng.random() < self.generated_fraction:
            task = generate_task(GENERATOR_FAMILIES[rng.integers(len(GENERATOR_FAMILIES))], rng)
        else:
            task = self.tasks[rng.integers(len(self.tasks))]
        pairs = [p for p in task.train + task.test if p.output is not None]
        if len(pairs) >= 2:  # any pair with a known output may serve as the test pair
            test_index = int(rng.integers(len(pairs)))
            example = Example(task.id, test_index, pairs[:test_index] + pairs[test_index + 1 :], pairs[test_index])
        else:
            test_index = int(rng.integers(len(task.test)))
            example = Example(task.id, test_index, task.train, task.test[test_index])
        if self.augment:
            view = random_augmentation(rng, len(example.train), keep_background=self.layout.keep_background)
            example = view.apply(example)
        fitted = self.layout.fit(example, self.row_tokens)
        return None if fitted is None else self.layout.encode(fitted, train=True)


class LeaveOneOutSampler(Sampler):
    """Test-time rows from demonstrations alone: one demonstration held out as the pseudo-test, the others
    its context, under a random view. The test pairs are never used, not even their inputs."""

    def __init__(self, layout: InContextLayout, tasks: list[Task], row_tokens: int, seed: int, augment: bool = True):
        super().__init__(row_tokens, seed, None)
        self.layout, self.augment = layout, augment
        self.tasks = [t for t in tasks if len(t.train) >= 2]
        if not self.tasks:
            n = min(len(t.train) for t in tasks) if tasks else 0
            raise NoRows(f"{n} demonstration(s): leave-one-out needs at least 2")
        if not any(self._fits(t, held) for t in self.tasks for held in range(len(t.train))):
            raise NoRows(f"no leave-one-out row fits in {row_tokens} tokens")

    def _example(self, task: Task, held: int) -> Example:
        return Example(task.id, 0, task.train[:held] + task.train[held + 1 :], task.train[held])

    def _fits(self, task: Task, held: int) -> bool:
        return self.layout.fit(self._example(task, held), self.row_tokens) is not None

    def _draw(self, rng: np.random.Generator, index: int) -> EncodedRow | None:
        task = self.tasks[rng.integers(len(self.tasks))]
        example = self._example(task, int(rng.integers(len(task.train))))
        if self.augment:
            view = random_augmentation(rng, len(example.train), keep_background=self.layout.keep_background)
            example = view.apply(example)
        fitted = self.layout.fit(example, self.row_tokens)
        return None if fitted is None else self.layout.encode(fitted, train=True)

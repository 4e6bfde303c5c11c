"""The pair layout (mdlARC, TRM, HRM): one (input, output) pair per row, the rule in a learned task embedding.

    I <input> O | <output> E          + task embedding + D8 transform embedding on every token

A row shows no demonstrations: the model learns each task's rule into that task's row of an embedding
table, trained on the task's pairs. So training covers the evaluated tasks' demonstrations too (never
their test outputs: test-time training folded into training), and a task the table lacks gets a row
at test time (arc.inference.adapt). The transform embedding tells the model which of the 8 D8 frames a
row is in; prediction votes over all 8 (`views`).

Training batches pack rows end to end in fixed-length sequences unless LayoutConfig.pack says otherwise
(arc.layouts.packing): pair rows are short (~330 tokens, up to ~1,900) and vary a lot, so padded batches
waste a quarter of their tokens.

Loss mask: the output's tokens and E; with input_loss (a training option) the input's cells and row
ends as well (predicting a grid from the task's embedding is signal too: mdlARC's argument), and rows
of the evaluated tasks' test inputs, which end at O. Colours: a fresh random permutation per row, or
one of each task's K fixed maps (colour_maps K), which prediction's views then follow, or each pair's
own pool of K views (view_pool K, PairSampler), each used once per cycle; prediction's views then
permute the test input's own colours, and adaptation draws from the demonstrations' pools.

The share of rows from the evaluated tasks is evaluated_share, and over a final phase of the run
(LayoutConfig.final_fraction) final_evaluated_share: the trainer tells the sampler from which row on
(PairSampler.final_phase).
"""
from __future__ import annotations

import functools
import math
from dataclasses import replace
from fractions import Fraction

import numpy as np

from arc.data.augment import (
    N_COLOURS,
    Augmentation,
    colour_map,
    make_views,
    own_colour_permutation,
    own_colours,
    random_augmentation,
    view_pool,
)
from arc.data.tasks import Example, Pair, Task
from arc.data.tokenizer import grid_length, grid_text
from arc.infra.errors import ConfigError
from arc.layouts.packing import training_batches
from arc.layouts.rows import EncodedRow, Layout, NoRows, answer_budget
from arc.layouts.sampling import Sampler

# The D8 transforms that keep a grid's shape, and those that swap its height and width (so a row's length)
SAME_SHAPE, SWAPPED_SHAPE = (0, 2, 5, 6), (1, 3, 4, 7)
# Tags in the seeds of the view pool's random streams, apart from each other and from the Sampler's (1 << 32, 2 << 32)
TASK_ROUNDS, PAIR_ROUNDS, VIEW_CYCLES, POOLS = 3 << 32, 4 << 32, 5 << 32, 6 << 32


class PairLayout(Layout):
    name = "pair"
    packs_by_default = True
    default_views = 8  # trained under all 8 D8 transforms, each with its embedding: predict under all 8
    # with a budget, 32 (each D8 transform 4 times, under other colour maps): 4/20 tune20 tasks against 2/20 for 8
    # after the same joint adaptation (RESULTS.md); the decodes take minutes of a 30-minute budget
    budget_views = 32

    def __init__(self, tokenizer, config=None, task_ids=()):
        super().__init__(tokenizer, config, task_ids)
        self.task_table = self.config.task_embedding  # a learned row per task (and per D8 transform)
        self.evaluated_share = self.config.evaluated_share  # share of training rows from the evaluated tasks
        self.input_loss = self.config.input_loss  # training rows put the input in the loss too
        self.colour_maps = self.config.colour_maps  # 0: random colour permutations | K: each task's K fixed maps
        self.view_pool = self.config.view_pool  # 0: a fresh random view per row | K: each pair's pool of K views

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
        Demonstrations stay on the Example (the answer length limit reads them) but never enter the row.
        A test input to predict (its answer unknown) fits when the context leaves room for an answer the size
        of the smallest demonstration output, not of the largest (answer_budget): decoding writes at most what
        the context leaves anyway (arc.inference.predict), so one large demonstration output does not keep an
        input that fits from being predicted."""
        if answer_tokens is None and example.test.output is None:
            answer_tokens = min(grid_length(p.output) for p in example.train) + 1
        answer = answer_budget(example) if answer_tokens is None else answer_tokens
        return example if self.length(example, answer) <= max_tokens else None

    # ---- samplers and views --------------------------------------------------------------------------

    def sampler(self, train_tasks: list[Task], evaluated_tasks: list[Task], row_tokens: int,
                seed: int) -> "PairSampler":
        return PairSampler(self, train_tasks, evaluated_tasks, row_tokens, seed, self.evaluated_share, self.augment,
                           self.max_examples, self.view_pool)

    def demonstration_sampler(self, tasks: list[Task], row_tokens: int, seed: int, augment: bool = True,
                              replay: list[Task] = (), replay_share: float = 0.0) -> "PairSampler":
        """The tasks' demonstration pairs (and, with input_loss, their test inputs), under the training
        augmentations (each pair's pool of views when the model was trained with view_pool): what test-time
        training and adaptation learn from. Test outputs are dropped here. With replay (tasks the checkpoint was
        trained on, arc.inference.adapt), replay_share of the rows come from their pairs instead, so that a
        fine-tune of every weight keeps what the table's other rows rely on."""
        tasks = [t.without_test_outputs() for t in tasks]
        if not any(self._fits(pair, row_tokens) for t in tasks for pair in t.train):
            raise NoRows(f"no demonstration fits in {row_tokens} tokens")
        return PairSampler(self, list(replay), tasks, row_tokens, seed, 1 - replay_share, augment=augment,
                           view_pool=self.view_pool)

    def batches(self, sampler: Sampler, batch_size: int, row_tokens: int):
        return training_batches(sampler, batch_size, row_tokens, self.packs)

    def _fits(self, pair: Pair, row_tokens: int) -> bool:
        """Whether the pair's row fits in some D8 frame (a transpose turns h*(w+1) tokens into w*(h+1))."""
        return any(self.fit(Example("", 0, [], Pair(g(pair.input), g(pair.output))), row_tokens) is not None
                   for g in (lambda x: x, np.transpose))

    def views(self, example: Example, k: int, seed: int) -> list[Augmentation]:
        """View v takes D8 transform v % 8 (each has its embedding) and, when the model was trained on each
        task's K fixed colour maps, the task's map v % K; when it was trained on each pair's pool of views,
        a permutation of the test input's own colours (the kind of colour change its pools made; view 0
        the test input as given); else a random colour permutation."""
        order = tuple(range(len(example.train)))
        if self.view_pool:
            return self._own_colour_views(example, k, seed, order)
        if not self.colour_maps:
            return make_views(len(example.train), k, seed, self.keep_background, cover_transforms=True)
        return [Augmentation(v % 8, colour_map(example.task_id, v % self.colour_maps, self.keep_background), order)
                for v in range(k)]

    def _own_colour_views(self, example: Example, k: int, seed: int, order: tuple[int, ...]) -> list[Augmentation]:
        """k distinct views: D8 transform v % 8, the input's colours as given in view 0, a random permutation of
        them in the others (more than 8 views: redrawn until each (transform, colours) is new, as make_views)."""
        rng, input_only = np.random.default_rng(seed), Pair(example.test.input)
        views, seen = [], set()
        for v in range(k):
            for _ in range(1000):
                colours = (tuple(range(N_COLOURS)) if v == 0
                           else own_colour_permutation(input_only, rng, self.keep_background))
                if (v % 8, colours) not in seen:
                    break
            else:
                raise ValueError(f"could not draw {k} distinct views of a test input with colours "
                                 f"{own_colours(input_only)}")
            seen.add((v % 8, colours))
            views.append(Augmentation(v % 8, colours, order))
        return views


def _cycled(key: tuple[int, ...], n: int, k: int) -> tuple[int, int]:
    """The k-th draw (k = 0, 1, ...) from n items drawn in rounds, each item once per round: (the item, the
    round). Round r = k // n takes the items in an order fixed by (key, r), so the round is also how many
    times the item was drawn before: a pure function of k, nothing counted."""
    round_, position = divmod(k, n)
    return int(_round_order(key, n, round_)[position]), round_


@functools.lru_cache(maxsize=4096)
def _round_order(key: tuple[int, ...], n: int, round_: int) -> np.ndarray:
    return np.random.default_rng([*key, round_]).permutation(n)


class PairSampler(Sampler):
    """Pair-layout rows: one pair of one task, in the task's row of the layout's table, under a view.

    A training task offers every pair with a known output (its test pairs too); an evaluated task offers
    its demonstration pairs, and with the layout's input_loss its test inputs (inputs only). Its test
    outputs must already be gone: evaluated tasks are passed through Task.without_test_outputs, and the
    sampler refuses any that still has one (the leak guard).

    Row i is a pure function of (seed, i), as every sampler's (arc.layouts.sampling), in two regimes:

    view_pool 0 (default)  a random draw seeded by (seed, i): the group (evaluated tasks with probability
                           share_at(i)), a task of it, a pair of that task, a fresh random view (or one
                           of the task's fixed colour maps)
    view_pool K            each pair has a pool of K distinct views (arc.data.augment.view_pool: D8 transform
                           x a permutation of the pair's own colours, the first the pair as given; fewer
                           when the pair has fewer) and shows them once each per cycle before any repeats
                           (mdlARC's scheme). "Once per cycle" needs to know how many times the pair was
                           drawn before row i; counting earlier rows would make row i cost i draws, so the
                           draws are made countable instead, by rounds at every level (_cycled):
                             group   the first floor(i * share) of rows 0..i-1 are the evaluated tasks'
                                     (share as an exact fraction; final_phase's share from its row on):
                                     row i is the j-th row of its group, j that count or i minus it
                             task    the j-th row of a group of T tasks is in task round j // T, which
                                     takes every task once in an order fixed by (seed, group, round): the
                                     task, and m = the round = the task's own draw count
                             pair    the task's m-th draw takes its pairs in rounds the same way: the pair,
                                     and k = its own draw count
                             view    the pair's k-th draw takes position k % K' of its pool (K' views) in
                                     an order fixed by (seed, pair, k // K'): K' distinct views per cycle
                           Every task of a group is drawn equally often, every pair of a task too (the
                           random regime's proportions, without their noise). Only pairs that fit in
                           row_tokens are drawn, under the transforms whose row fits.
    """

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
        view_pool: int = 0,  # 0: a fresh random view per row | K: each pair's pool of K views, once each per cycle
    ):
        super().__init__(row_tokens, seed, max_examples)
        for task in evaluated_tasks:
            if any(p.output is not None for p in task.test):
                raise ValueError(f"evaluated task {task.id} still has a test output: it must never reach a "
                                 "training row")
        ids = [t.id for t in train_tasks + evaluated_tasks]
        if len(set(ids)) != len(ids):
            raise ValueError("a task id appears twice among the training and evaluated tasks")
        if not ids:
            raise ValueError("no training tasks")
        self.layout, self.augment = layout, augment
        self.evaluated_share = evaluated_share if evaluated_tasks else 0.0
        self.final_from_row: int | None = None  # final_phase: from this row on ...
        self.final_share = 0.0  # ... this share of rows from the evaluated tasks
        # per group (training tasks, evaluated tasks), per task: (task id, the pairs it offers)
        offer = lambda t: [p for p in t.train + t.test if p.output is not None or layout.input_loss]  # noqa: E731
        self.groups = [[(t.id, offer(t)) for t in train_tasks], [(t.id, offer(t)) for t in evaluated_tasks]]
        self.view_pool = view_pool if augment else 0
        if self.view_pool:
            # per group, per task with a pair that fits: (task id, [(pair, the transforms whose row fits)])
            self.pooled = [[(task_id, fitting) for task_id, pairs in group
                            if (fitting := [(p, t) for p in pairs if (t := self._fitting_transforms(p))])]
                           for group in self.groups]
            if not any(self.pooled):
                raise ConfigError(f"no pair fits in {row_tokens} tokens: raise --max-row-tokens (and --max-seq-len)")
            self._pools: dict[tuple[int, int, int], list[Augmentation]] = {}

    # ---- the share of evaluated-task rows ----------------------------------------------------------------

    def final_phase(self, from_row: int, share: float) -> None:
        """From row number from_row on, draw `share` of the rows from the evaluated tasks (the trainer calls
        it with the first row of the run's final phase, LayoutConfig.final_fraction). Rows before from_row are
        unchanged; a chunk of rows drawn before this call is drawn again."""
        self.final_from_row, self.final_share = from_row, share if self.groups[1] else 0.0
        self._chunk.cache_clear()

    def share_at(self, index: int) -> float:
        """The share of rows from the evaluated tasks at row `index`."""
        if self.final_from_row is not None and index >= self.final_from_row:
            return self.final_share
        return self.evaluated_share

    def evaluated_before(self, index: int) -> int:
        """How many of rows 0..index-1 the view-pool regime draws from the evaluated tasks: share x rows rounded
        down, in exact fractions (so each row's group and its number in the group follow from its index)."""
        start = self.final_from_row if self.final_from_row is not None and index > self.final_from_row else index
        before = math.floor(start * Fraction(self.evaluated_share))
        return before + math.floor((index - start) * Fraction(self.final_share))

    # ---- drawing a row -----------------------------------------------------------------------------------

    def _draw(self, rng: np.random.Generator, index: int) -> EncodedRow | None:
        if self.view_pool:
            task_id, pair, view = self.pooled_choice(index)
            example = view.apply(Example(task_id, 0, [], pair))
        else:
            evaluated = not self.groups[0] or rng.random() < self.share_at(index)
            group = self.groups[1 if evaluated else 0]
            task_id, pairs = group[rng.integers(len(group))]
            pair = pairs[rng.integers(len(pairs))]
            example = Example(task_id, 0, [], pair)
            if self.augment:
                layout = self.layout
                aug = random_augmentation(rng, 0, keep_background=layout.keep_background)
                if layout.colour_maps:
                    colours = colour_map(task_id, int(rng.integers(layout.colour_maps)), layout.keep_background)
                    aug = replace(aug, colours=colours)
                example = aug.apply(example)
        answer = None if pair.output is not None else 0  # an evaluated task's test input: the row ends at O
        if self.layout.fit(example, self.row_tokens, answer) is None:
            return None
        return self.layout.encode(example, train=True)

    def pooled_choice(self, index: int) -> tuple[str, Pair, Augmentation]:
        """Row `index`'s task id, pair and view in the view-pool regime (see the class docstring)."""
        train, evaluated = self.pooled
        if train and evaluated:
            before = self.evaluated_before(index)
            group, j = (1, before) if self.evaluated_before(index + 1) > before else (0, index - before)
        else:
            group, j = (1 if evaluated else 0), index
        tasks = self.pooled[group]
        task, m = _cycled((self.seed, TASK_ROUNDS, group), len(tasks), j)
        task_id, pairs = tasks[task]
        pair, k = _cycled((self.seed, PAIR_ROUNDS, group, task), len(pairs), m)
        pool = self.pool(group, task, pair)
        view, _ = _cycled((self.seed, VIEW_CYCLES, group, task, pair), len(pool), k)
        return task_id, pairs[pair][0], pool[view]

    def pool(self, group: int, task: int, pair: int) -> list[Augmentation]:
        """The views of pair number `pair` of task number `task` of `group` (in self.pooled), drawn once from
        (seed, group, task, pair)."""
        key = (group, task, pair)
        if key not in self._pools:
            chosen, transforms = self.pooled[group][task][1][pair]
            rng = np.random.default_rng([self.seed, POOLS, *key])
            self._pools[key] = view_pool(chosen, self.view_pool, rng, self.layout.keep_background, transforms)
        return self._pools[key]

    def _fitting_transforms(self, pair: Pair) -> tuple[int, ...]:
        """The D8 transforms under which the pair's row fits in row_tokens (a row's length depends only on
        whether the transform swaps the grids' height and width)."""
        answer = None if pair.output is not None else 0
        fits = lambda p: self.layout.fit(Example("", 0, [], p), self.row_tokens, answer) is not None  # noqa: E731
        swapped = Pair(pair.input.T, None if pair.output is None else pair.output.T)
        return tuple(sorted((SAME_SHAPE if fits(pair) else ()) + (SWAPPED_SHAPE if fits(swapped) else ())))

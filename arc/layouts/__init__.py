"""Row layouts: how an ARC example becomes a token row, one class per layout.

    rows.py        what every layout shares: EncodedRow, Batch, collate, answer budgets, the Layout base
    sampling.py    Sampler: training rows as a pure function of (seed, index), length-bucketed batches
    pair.py        PairLayout: one (input, output) pair per row, a learned embedding per task
    in_context.py  InContextLayout: the demonstrations in the context

LAYOUTS maps each layout's name (TrainConfig.layout, saved in every checkpoint) to its class; a class's
`options` are the TrainConfig fields that only it reads. `make_layout` is the one place a name becomes a
layout: everything else holds the layout object and asks it.
"""
from arc.data.tokenizer import GridTokenizer
from arc.layouts.in_context import InContextLayout
from arc.layouts.pair import PairLayout
from arc.layouts.rows import Layout

LAYOUTS: dict[str, type[Layout]] = {cls.name: cls for cls in (InContextLayout, PairLayout)}


def make_layout(settings: dict, tokenizer: GridTokenizer | None = None, task_ids=()) -> Layout:
    """The layout a run's training settings name (settings["layout"]), built from those settings, with
    its task table (task_ids: row i of the model's task embedding is task_ids[i])."""
    name = settings["layout"]
    if name not in LAYOUTS:
        raise ValueError(f"unknown row layout {name!r}: {' | '.join(LAYOUTS)}")
    return LAYOUTS[name](tokenizer or GridTokenizer(), settings, task_ids)

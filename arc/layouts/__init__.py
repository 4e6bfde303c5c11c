"""Row layouts: how an ARC example becomes a token row, one class per layout.

    config.py      LayoutConfig: which layout a run trains with and every option of the layouts, their rules
    rows.py        what every layout shares: EncodedRow, Batch, collate, answer budgets, the Layout base
    sampling.py    Sampler: training rows as a pure function of (seed, index), length-bucketed batches
    packing.py     PackedBatches: rows laid end to end in fixed-length sequences
    pair.py        PairLayout: one (input, output) pair per row, a learned embedding per task
    in_context.py  InContextLayout: the demonstrations in the context

LAYOUTS maps each layout's name (LayoutConfig.name, saved in every checkpoint) to its class. `make_layout`
is the one place a config becomes a layout: everything else holds the layout object and asks it.
"""
from arc.data.tokenizer import GridTokenizer
from arc.layouts.config import LayoutConfig
from arc.layouts.in_context import InContextLayout
from arc.layouts.pair import PairLayout
from arc.layouts.rows import Layout

LAYOUTS: dict[str, type[Layout]] = {cls.name: cls for cls in (InContextLayout, PairLayout)}


def make_layout(config: LayoutConfig, tokenizer: GridTokenizer | None = None, task_ids=()) -> Layout:
    """The layout config names (config.name), built with its settings and its task table (task_ids: row i of
    the model's task embedding is task_ids[i])."""
    if config.name not in LAYOUTS:
        raise ValueError(f"unknown row layout {config.name!r}: {' | '.join(LAYOUTS)}")
    return LAYOUTS[config.name](tokenizer or GridTokenizer(), config, task_ids)

"""How long an answer may get: the decoding length limit from the demonstrations (arc.layouts.rows.answer_limit)
against the true answers of ARC-AGI-1, for several slacks.

A model that never writes its end token decodes until the limit, so the limit is most of the cost of a
wrong answer; an answer longer than the limit can never be produced. For each slack this prints how many
test outputs the limit would cut off and the mean limit in tokens (931 = a 30x30 grid, the fallback).

    python bench/answer_limit.py
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arc.data.tasks import load_tasks  # noqa: E402
from arc.data.tokenizer import grid_length  # noqa: E402
from arc.layouts.rows import answer_limit  # noqa: E402

SLACKS = (0.0, 1.0, 1.5, 2.0)


def main() -> None:
    print("| split | test outputs | slack | outputs cut off | mean limit (tokens) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for split in ("training", "evaluation"):
        examples = [e for task in load_tasks("arc1", split) for e in task.examples()]
        for slack in SLACKS:
            cut, total = 0, 0
            for ex in examples:
                limit = answer_limit(ex.hidden(), slack)  # the limit never sees the answer
                cut += grid_length(ex.test.output) + 1 > limit
                total += limit
            print(f"| {split} | {len(examples)} | {slack:g} | {cut} | {total / len(examples):.0f} |")


if __name__ == "__main__":
    main()

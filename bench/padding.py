"""How much of a training batch is padding: random batches vs the trainer's length-bucketed batches.

    python bench/padding.py [--rows 1024] [--batch-size 8] [--max-len 2048]

Draws training rows exactly as the trainer does for the in-context layout (InContextLayout's sampler on
ARC-AGI-1 training) and reports padded tokens / all tokens for batches of consecutive rows vs the sampler's
length-bucketed batches (arc.layouts.sampling.Sampler.batch).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arc.data.tasks import load_tasks  # noqa: E402
from arc.data.tokenizer import PAD, GridTokenizer  # noqa: E402
from arc.layouts.in_context import InContextLayout  # noqa: E402
from arc.layouts.sampling import BUCKET_BATCHES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=2048)
    args = parser.parse_args()

    sampler = InContextLayout(GridTokenizer()).sampler(load_tasks("arc1", "training"), [], args.max_len, seed=0)
    lengths = [len(sampler.row(i).ids) - 1 for i in range(args.rows)]  # inputs are one shorter than rows
    batches = [lengths[i : i + args.batch_size] for i in range(0, args.rows, args.batch_size)]
    random_total = sum(len(b) * max(b) for b in batches)
    random_padding = random_total - sum(lengths)

    bucketed_total = bucketed_padding = 0
    for index in range(args.rows // args.batch_size):
        inputs = sampler.batch(index, args.batch_size).inputs
        bucketed_total += inputs.numel()
        bucketed_padding += int((inputs == PAD).sum())

    print(f"{args.rows} rows, batch {args.batch_size}, max_len {args.max_len}, "
          f"mean row {sum(lengths) / len(lengths):.0f} tokens")
    print(f"padding, consecutive rows:            {random_padding / random_total:.1%}")
    print(f"padding, bucketed ({BUCKET_BATCHES} batches a chunk): {bucketed_padding / bucketed_total:.1%}")


if __name__ == "__main__":
    main()

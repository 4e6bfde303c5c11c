"""The grid tokenizer: 16 tokens, one token per cell, and the exact sequence layout of a task.

Vocabulary (id: text):
    0..9   the ten colours, written as the digits '0'..'9'
    10     '\\n'  end of a grid row
    11     'I'    an input grid follows
    12     'O'    an output grid follows
    13     'B'    begin of sequence
    14     'E'    end of an output grid (the model emits it to stop)
    15     'P'    padding (never attended to, never in the loss)

Sequence layout of one example (a task with one test input), shown for two demonstrations:

    B I <demo 1 input rows> O <demo 1 output rows> E
      I <demo 2 input rows> O <demo 2 output rows> E
      I <test input rows>   O | <test output rows> E
                              ^ the prompt ends here; the model writes the rest

A grid is written row by row, each row being its colour digits followed by '\\n', so a 2x3 grid
[[1,2,3],[4,5,6]] becomes "123\\n456\\n" (h * (w + 1) tokens). The layout is plain text, so the
`tokenizers` library does the encoding: a WordLevel model over the 16 symbols with a pre-tokenizer
that splits every character. The saved `tokenizer.json` loads with `tokenizers.Tokenizer.from_file`.

Loss mask: by default only the test output's tokens (its rows and its 'E') are trained on. With
`train_on_demo_outputs` the demonstration outputs after the first are trained on too (the first one
cannot be predicted: nothing before it shows the rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from arc.data import MAX_SIDE, Example, Grid

SYMBOLS = [str(c) for c in range(10)] + ["\n", "I", "O", "B", "E", "P"]
ROW, INPUT, OUTPUT, BEGIN, END, PAD = range(10, 16)
VOCAB_SIZE = len(SYMBOLS)
MAX_OUTPUT_TOKENS = MAX_SIDE * (MAX_SIDE + 1) + 1  # a 30x30 grid with its row ends, plus 'E'


def grid_text(grid: Grid) -> str:
    return "".join("".join(map(str, row)) + "\n" for row in grid.tolist())


def grid_length(grid: Grid) -> int:
    """Tokens a grid takes: one per cell plus one row end per row."""
    h, w = grid.shape
    return h * (w + 1)


@dataclass
class EncodedRow:
    ids: np.ndarray  # (T,) int64 token ids
    loss_mask: np.ndarray  # (T,) bool: True where ids[t] is a target the model is trained to predict


class GridTokenizer:
    def __init__(self, tokenizer: Tokenizer | None = None):
        self.tokenizer = tokenizer or self._build()
        vocab = self.tokenizer.get_vocab()
        expected = {s: i for i, s in enumerate(SYMBOLS)}
        if vocab != expected:
            raise ValueError(f"tokenizer vocabulary {vocab} is not the grid vocabulary {expected}")

    @staticmethod
    def _build() -> Tokenizer:
        tok = Tokenizer(models.WordLevel({s: i for i, s in enumerate(SYMBOLS)}, unk_token="P"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        return tok

    def save(self, path: str) -> None:
        self.tokenizer.save(path)

    @classmethod
    def load(cls, path: str) -> "GridTokenizer":
        return cls(Tokenizer.from_file(path))

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode_text(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    # --- examples -> ids -------------------------------------------------------------------------

    def _segments(self, example: Example, with_answer: bool) -> list[tuple[str, bool]]:
        """The sequence as (text, is_demo_output_or_answer) pieces; the flag drives the loss mask."""
        pieces: list[tuple[str, bool]] = [("B", False)]
        for i, pair in enumerate(example.train):
            pieces.append(("I" + grid_text(pair.input) + "O", False))
            pieces.append((grid_text(pair.output) + "E", i > 0))
        pieces.append(("I" + grid_text(example.test.input) + "O", False))
        if with_answer:
            pieces.append((grid_text(example.test.output) + "E", True))
        return pieces

    def encode_example(self, example: Example, train_on_demo_outputs: bool = False) -> EncodedRow:
        """The full sequence with the test output, and which tokens are trained on."""
        if example.test.output is None:
            raise ValueError(f"task {example.task_id}: test[{example.test_index}] has no output to train on")
        pieces = self._segments(example, with_answer=True)
        ids = np.array(self.encode_text("".join(t for t, _ in pieces)), dtype=np.int64)
        mask = np.zeros(len(ids), dtype=bool)
        start = 0
        for k, (text, is_output) in enumerate(pieces):
            end = start + len(text)  # one token per character
            is_answer = k == len(pieces) - 1
            if is_answer or (is_output and train_on_demo_outputs):
                mask[start:end] = True
            start = end
        return EncodedRow(ids, mask)

    def encode_prompt(self, example: Example) -> list[int]:
        """Everything up to and including the test output marker 'O': what the decoder continues."""
        return self.encode_text("".join(t for t, _ in self._segments(example, with_answer=False)))

    # --- fitting into the context ----------------------------------------------------------------

    @staticmethod
    def example_length(example: Example, answer_tokens: int) -> int:
        demos = sum(2 + grid_length(p.input) + grid_length(p.output) + 1 for p in example.train)
        return 1 + demos + 2 + grid_length(example.test.input) + answer_tokens

    @staticmethod
    def answer_budget(example: Example) -> int:
        """Tokens reserved for the answer: its true size when known (training), otherwise the largest
        demonstration output (prediction must not peek at the answer's size)."""
        if example.test.output is not None:
            return grid_length(example.test.output) + 1
        return max(grid_length(p.output) for p in example.train) + 1

    @staticmethod
    def answer_limit(example: Example, slack: float) -> int:
        """The most tokens worth generating for the answer (with its end token), from the demonstrations
        only: per side, the larger of the largest demonstration output and the test input scaled by each
        demonstration's output/input ratio, times slack, capped at a 30x30 grid. slack 0: no limit but
        30x30. With slack 2 no ARC-AGI-1 test output, training or evaluation, is cut off (measured:
        RESULTS.md), while a model that never writes its end token stops 2-3x sooner than at 30x30."""
        if slack <= 0:
            return MAX_OUTPUT_TOKENS
        h_in, w_in = example.test.input.shape
        h = max(max(p.output.shape[0], math.ceil(p.output.shape[0] * h_in / p.input.shape[0])) for p in example.train)
        w = max(max(p.output.shape[1], math.ceil(p.output.shape[1] * w_in / p.input.shape[1])) for p in example.train)
        return min(MAX_OUTPUT_TOKENS, int(slack * (min(h, MAX_SIDE) * (min(w, MAX_SIDE) + 1) + 1)))

    def fit(self, example: Example, max_len: int, answer_tokens: int | None = None) -> Example | None:
        """Drop the longest demonstrations until the example fits in max_len tokens, keeping at least
        one; None when even one demonstration is too many."""
        answer = self.answer_budget(example) if answer_tokens is None else answer_tokens
        train = list(example.train)
        while self.example_length(Example(example.task_id, example.test_index, train, example.test), answer) > max_len:
            if len(train) == 1:
                return None
            longest = max(range(len(train)), key=lambda i: grid_length(train[i].input) + grid_length(train[i].output))
            train.pop(longest)
        return Example(example.task_id, example.test_index, train, example.test)

    # --- ids -> grid ------------------------------------------------------------------------------

    @staticmethod
    def parse_grid(ids) -> tuple[Grid | None, str]:
        """Turn generated tokens (after the prompt's 'O') into a grid, or say why they are not one."""
        ids = list(ids)
        if END not in ids:
            return None, "no end token (hit the length limit)"
        ids = ids[: ids.index(END)]
        if not ids:
            return None, "empty output"
        if ids[-1] != ROW:
            return None, "last row is not terminated"
        rows, row = [], []
        for t in ids:
            if t == ROW:
                if not row:
                    return None, "empty row"
                rows.append(row)
                row = []
            elif t < 10:
                row.append(t)
            else:
                return None, f"unexpected token {SYMBOLS[t]!r} inside the grid"
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            return None, f"ragged rows (widths {sorted(widths)})"
        if len(rows) > MAX_SIDE or len(rows[0]) > MAX_SIDE:
            return None, f"grid {len(rows)}x{len(rows[0])} exceeds {MAX_SIDE}x{MAX_SIDE}"
        return np.array(rows, dtype=np.uint8), "ok"


"""The grid tokenizer: 16 tokens, one token per cell; a grid as text; generated tokens back to a grid.

Vocabulary (id: text):
    0..9   the ten colours, written as the digits '0'..'9'
    10     '\\n'  end of a grid row
    11     'I'    an input grid follows
    12     'O'    an output grid follows
    13     'B'    begin of sequence
    14     'E'    end of an output grid (the model emits it to stop)
    15     'P'    padding (never attended to, never in the loss)

How grids are put together into rows (the in-context and the pair layout), and which tokens are
trained on, is arc.layouts.rows.

A grid is written row by row, each row being its colour digits followed by '\\n', so a 2x3 grid
[[1,2,3],[4,5,6]] becomes "123\\n456\\n" (h * (w + 1) tokens). The layout is plain text, so the
`tokenizers` library does the encoding: a WordLevel model over the 16 symbols with a pre-tokenizer
that splits every character. The saved `tokenizer.json` loads with `tokenizers.Tokenizer.from_file`.
"""
from __future__ import annotations

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from arc.data.tasks import MAX_SIDE, Grid

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

    @staticmethod
    def parse_output(ids) -> tuple[Grid | None, str]:
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


"""Grid positions: where each token sits inside the grid it belongs to, as row and column indexes.

The model (arc.model.transformer, with ModelConfig.grid_positions) adds a learned embedding of each cell's row and
one of its column to the token embedding. They are computed here from the token ids alone, with the
layout of arc.data.tokenizer: a marker (I, O, B, E, P) starts a new grid, a row end ('\\n') starts the next
row. Computing them from the tokens means training rows, prompts and generated outputs need no extra
inputs, and the KV cache only has to carry a (row, col) state per slot for decoding to continue.

A packed training sequence holds several layout rows one after another (arc.layouts.packing); `starts`
marks the first token of each, where every count starts afresh, exactly as at a sequence's start.
"""
from __future__ import annotations

import torch

from arc.data.tokenizer import END, INPUT, MAX_SIDE, OUTPUT, ROW

# Grid positions: the embedding index of a token's row and of its column inside the grid it belongs to.
# 0 for the markers (I, O, B, E, P), 1..30 for the cells of a grid (a row end takes the column after its
# row's last cell), 31 for anything further out (only malformed generated grids get there).
GRID_INDEXES = MAX_SIDE + 2


def grid_positions(tokens: torch.Tensor, state: torch.Tensor,
                   starts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The row and column of every token in the grid it belongs to, counted from the last marker.

    tokens (B, T); state (B, 2): the 0-based (row, col) the first token would take as a cell, i.e. the
    state left by the tokens before them ((0, 0) at a sequence's start). starts (B, T) bool, or None:
    the first token of each packed row, before which the state is (0, 0) again (with starts, state must
    be zeros and starts[:, 0] true). Returns row and col embedding indexes, each (B, T), and the state
    after each token (B, T, 2). Read sequentially, the rule is: a marker resets (row, col) to (0, 0); a
    cell takes (row + 1, col + 1) and moves one column on; a row end takes (row + 1, col + 1) and moves
    to the next row's column 0. It is computed for all T at once with running counts, so a prefill, a
    training row and a one-token step agree exactly."""
    B, T = tokens.shape
    idx = torch.arange(T, device=tokens.device).expand(B, T)
    none = torch.full_like(idx, -1)
    is_marker = tokens > ROW
    is_row_end = tokens == ROW
    ends_before = is_row_end.long().cumsum(1) - is_row_end.long()  # row ends strictly before t
    # rows: row ends since the latest marker (or packed row start) at or before t, or since the chunk's
    # start plus state's row (a marker is no row end, so counting from it or just before it is the same)
    anchors = is_marker if starts is None else is_marker | starts
    anchor = torch.where(anchors, idx, none).cummax(1).values  # (B, T), -1 where none yet
    row = torch.where(anchor >= 0, ends_before - ends_before.gather(1, anchor.clamp(min=0)), ends_before + state[:, :1])
    # columns: tokens since the latest marker or row end strictly before t (a packed row's start counts
    # as one just before it), or since the start plus state's col
    last_reset = torch.where(is_marker | is_row_end, idx, none).cummax(1).values  # (B, T), inclusive of t
    before = torch.cat([none[:, :1], last_reset[:, :-1]], dim=1)  # strictly before t
    if starts is not None:
        before = torch.maximum(before, torch.where(starts, idx, none).cummax(1).values - 1)
    col = torch.where(before >= 0, idx - before - 1, idx + state[:, 1:])
    # the state each token leaves for the next one
    after_row = torch.where(is_marker, 0, row + is_row_end.long())
    after_col = torch.where(is_marker | is_row_end, 0, col + 1)
    cell = ~is_marker
    row = torch.where(cell, (row + 1).clamp(max=GRID_INDEXES - 1), 0)
    col = torch.where(cell, (col + 1).clamp(max=GRID_INDEXES - 1), 0)
    return row, col, torch.stack([after_row, after_col], dim=-1)


# The markers that open a new grid number: 'I' (an input follows), 'O' (an output follows) and 'E' (an
# output ended). B and P do not count, so left padding leaves every real token's number unchanged.
GRID_MARKERS = (INPUT, OUTPUT, END)


def grid_numbers(tokens: torch.Tensor, start: torch.Tensor, starts: torch.Tensor | None = None) -> torch.Tensor:
    """Which grid each token belongs to: `start` (B,) plus the grid markers up to and including it, (B, T);
    with starts (B, T) bool (packed rows, start zeros), the markers since its packed row's first token.

    In the pair layout `I <input> O <output> E` the input's tokens get 1, the output's 2 and E 3; in the
    in-context layout the number keeps counting through the demonstrations. It is the third coordinate
    of 3-D RoPE (arc.model.transformer): together with the row and column it tells the input's cell from the
    output's cell at the same place. The last token's number is the state the next chunk starts from."""
    is_marker = torch.isin(tokens, torch.tensor(GRID_MARKERS, device=tokens.device)).long()
    counts = is_marker.cumsum(1)
    if starts is not None:
        # minus the markers before the row's first token: the count there, less its own marker
        idx = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        first = torch.where(starts, idx, 0).cummax(1).values  # (B, T): the row's first token
        counts = counts - (counts - is_marker).gather(1, first)
    return start[:, None] + counts

"""Drawing with no plotting library: ARC grids as inline SVG and as ANSI-coloured terminal text, and
line charts (the loss curves) as SVG. One module serves the evaluation report, the training report
and `evaluate.py --show` (arc.reports.pages), so a colour or a chart looks the same everywhere.

Colours are the standard ARC palette of the official testing interface (fchollet/ARC,
apps/css/common.css), the one ARC researchers recognise at a glance.
"""
from __future__ import annotations

import math
import os
import re
from html import escape

import numpy as np

PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
           "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")  # 0 black .. 9 maroon

# A grid is drawn in a box of at most BOX pixels per side, each cell between MIN_CELL and MAX_CELL:
# a 3x3 grid gets large cells, a 30x30 one small cells, and every grid still shows its true size.
BOX, MIN_CELL, MAX_CELL = 200, 6, 24


def cell_size(grid: np.ndarray) -> int:
    return max(MIN_CELL, min(MAX_CELL, BOX // max(grid.shape)))


def palette_css() -> str:
    """CSS classes c0..c9 filling SVG shapes with the ARC colours (the grids below refer to them)."""
    return "".join(f".c{k}{{fill:{colour}}}" for k, colour in enumerate(PALETTE))


def grid_svg(grid: np.ndarray, wrong: np.ndarray | None = None, cell: int | None = None) -> str:
    """An inline <svg> of the grid in cell units (viewBox), `cell` pixels per cell; cells where `wrong`
    is True are outlined. The commonest colour is one background <rect>, each run of another colour along
    a row one more, and the grid lines one <path>, so a page of 30x30 grids stays small. Colours come
    from palette_css()."""
    grid = np.asarray(grid)
    h, w = grid.shape
    cell = cell or cell_size(grid)
    background = int(np.bincount(grid.ravel(), minlength=10).argmax())
    parts = [f'<svg class="grid" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w * cell}" '
             f'height="{h * cell}" shape-rendering="crispEdges"><title>{h}x{w}</title>',
             f'<rect class="c{background}" width="{w}" height="{h}"/>']
    for r in range(h):
        c = 0
        while c < w:
            end = c + 1
            while end < w and grid[r, end] == grid[r, c]:
                end += 1
            if grid[r, c] != background:
                parts.append(f'<rect class="c{int(grid[r, c])}" x="{c}" y="{r}" width="{end - c}" height="1"/>')
            c = end
    lines = "".join(f"M0 {r}H{w}" for r in range(1, h)) + "".join(f"M{c} 0V{h}" for c in range(1, w))
    if lines:
        parts.append(f'<path d="{lines}" stroke="#555" stroke-width="1" vector-effect="non-scaling-stroke"/>')
    if wrong is not None:
        for r, c in zip(*np.nonzero(wrong)):
            parts.append(f'<rect class="x" x="{c + 0.15:g}" y="{r + 0.15:g}" width="0.7" height="0.7"/>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------------
# The terminal: two spaces per cell on a 24-bit background colour (NO_COLOR=1 prints digits instead).
# --------------------------------------------------------------------------------------------------


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def grid_ansi(grid: np.ndarray, wrong: np.ndarray | None = None, colour: bool | None = None) -> list[str]:
    """The grid as terminal lines, two characters per cell; a wrong cell shows an "x"."""
    colour = not os.environ.get("NO_COLOR") if colour is None else colour
    lines = []
    for r, row in enumerate(np.asarray(grid)):
        cells = []
        for c, value in enumerate(row):
            mark = "x" if wrong is not None and wrong[r, c] else " "
            if colour:
                red, green, blue = _rgb(PALETTE[int(value)])
                ink = "30" if red + green + blue > 380 else "97"  # dark mark on light colours
                cells.append(f"\x1b[48;2;{red};{green};{blue}m\x1b[{ink}m{mark} \x1b[0m")
            else:
                cells.append(f"{int(value)}{mark}")
        lines.append("".join(cells))
    return lines


def side_by_side(blocks: list[tuple[str, list[str]]], width: int, gap: int = 3) -> list[str]:
    """Titled blocks of lines laid out left to right, wrapping to a new band when `width` is reached.
    Widths are measured without the ANSI escapes."""
    def visible(line: str) -> int:
        return len(ANSI_ESCAPE.sub("", line))

    out, band, used = [], [], 0
    def flush():
        if band:
            height = max(len(lines) for _, lines, _ in band)
            out.append("".join(title.ljust(w + gap) for title, _, w in band).rstrip())
            for k in range(height):
                out.append("".join((lines[k] + " " * (w - visible(lines[k])) if k < len(lines) else " " * w) + " " * gap
                                   for _, lines, w in band).rstrip())
    for title, lines in blocks:
        w = max([len(title)] + [visible(line) for line in lines])
        if band and used + w > width:
            flush()
            band, used = [], 0
        band.append((title, lines, w))
        used += w + gap
    flush()
    return out


# --------------------------------------------------------------------------------------------------
# Line charts (the loss curves of a training run).
# --------------------------------------------------------------------------------------------------

WIDTH, HEIGHT, MARGIN = 720, 400, 60


def line_chart(series: list[tuple[str, str, list[tuple[float, float]]]], title: str, x_label: str,
               log_y: bool = True, dots: tuple[str, ...] = ()) -> str:
    """An <svg> chart of (label, colour, [(x, y), ...]) series on a shared axis; the y axis is log-scaled
    with a half-decade grid (log_y) or linear with five ticks. Series named in `dots` also get a dot per
    point. Returns "" when there is no point to draw."""
    points = [p for _, _, s in series for p in s if not log_y or p[1] > 0]
    if not points:
        return ""
    max_x = max(x for x, _ in points) or 1
    if log_y:
        lo, hi = math.log10(min(y for _, y in points)), math.log10(max(y for _, y in points))
        lo, hi = math.floor(lo * 2) / 2, math.ceil(hi * 2) / 2 + (0.5 if hi == lo else 0)
        ticks = [10 ** (k / 2) for k in range(int(lo * 2), int(hi * 2) + 1)]
        scale = lambda y: math.log10(max(y, 1e-9))  # noqa: E731
    else:  # ticks at a round step (1, 2 or 5 times a power of ten), about five of them
        top = max(y for _, y in points) or 1.0
        unit = 10 ** math.floor(math.log10(top / 5))
        step = next(m * unit for m in (1, 2, 5, 10) if m * unit >= top / 5)
        lo, hi = 0.0, step * math.ceil(top / step)
        ticks = [k * step for k in range(round(hi / step) + 1)]
        scale = lambda y: y  # noqa: E731

    def xy(x: float, y: float) -> tuple[float, float]:
        return (MARGIN + (WIDTH - 2 * MARGIN) * x / max_x,
                HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (scale(y) - lo) / (hi - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
             f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for value in ticks:
        _, y = xy(0, value)
        parts.append(f'<line x1="{MARGIN}" x2="{WIDTH - MARGIN}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        shown = f'{value:{".3g" if log_y else ",.6g"}}'
        parts.append(f'<text x="{MARGIN - 6}" y="{y + 4:.1f}" text-anchor="end">{shown}</text>')
    for k in range(5):
        x, _ = xy(max_x * k / 4, ticks[0])
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - MARGIN + 18}" text-anchor="middle">{max_x * k / 4:.0f}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 15}" text-anchor="middle">{escape(x_label)}</text>')
    for n, (label, colour, data) in enumerate(series):
        data = [(x, y) for x, y in data if not log_y or y > 0]
        if not data:
            continue
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(*p) for p in data))
        wide = 2 if label in dots else 1
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="{wide}" points="{coords}"/>')
        if label in dots:
            parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in (xy(*p) for p in data)]
        parts.append(f'<text x="{WIDTH - MARGIN}" y="{40 + 16 * n}" text-anchor="end" fill="{colour}">'
                     f'{escape(label)}</text>')
    return "\n".join(parts + ["</svg>"])

"""A loss-curve picture (SVG) drawn from a run's metrics.jsonl, with no plotting library.

The trainer redraws `loss.svg` next to every checkpoint: training loss per logged step (grey) and the
eval loss on the held-out tasks (blue dots and line), on a log-scaled loss axis.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from arc.files import atomic_write_text

WIDTH, HEIGHT, MARGIN = 720, 400, 60


def read_metrics(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    train, evals = [], []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            train.append((record["step"], record["loss"]))
        if "eval_loss" in record:
            evals.append((record["step"], record["eval_loss"]))
    return train, evals


def loss_svg(train: list[tuple[int, float]], evals: list[tuple[int, float]], title: str) -> str:
    points = train + evals
    if not points:
        return ""
    max_step = max(s for s, _ in points) or 1
    losses = [v for _, v in points if v > 0]
    lo, hi = math.log10(min(losses)), math.log10(max(losses))
    lo, hi = math.floor(lo * 2) / 2, math.ceil(hi * 2) / 2 + (0.5 if hi == lo else 0)  # half-decade grid

    def xy(step: float, loss: float) -> tuple[float, float]:
        x = MARGIN + (WIDTH - 2 * MARGIN) * step / max_step
        y = HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (math.log10(max(loss, 1e-9)) - lo) / (hi - lo)
        return x, y

    def polyline(series, colour, width):
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(s, v) for s, v in series))
        return f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{coords}"/>'

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
             f'font-size="12"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for k in range(int(lo * 2), int(hi * 2) + 1):  # horizontal grid lines at 1, 3.16, 10, ...
        value = 10 ** (k / 2)
        _, y = xy(0, value)
        parts.append(f'<line x1="{MARGIN}" x2="{WIDTH - MARGIN}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{MARGIN - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    for k in range(5):
        step = max_step * k / 4
        x, _ = xy(step, 10 ** lo)
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - MARGIN + 18}" text-anchor="middle">{int(step)}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 15}" text-anchor="middle">optimizer step</text>')
    if train:
        parts.append(polyline(train, "#999", 1))
    if evals:
        parts.append(polyline(evals, "#1f5fbf", 2))
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1f5fbf"/>' for x, y in (xy(s, v) for s, v in evals)]
    parts.append(f'<text x="{WIDTH - MARGIN}" y="40" text-anchor="end" fill="#999">training loss (per output token)</text>')
    parts.append(f'<text x="{WIDTH - MARGIN}" y="56" text-anchor="end" fill="#1f5fbf">eval loss (held-out test outputs)</text>')
    return "\n".join(parts + ["</svg>"])


def write_loss_svg(metrics_path: Path, out_path: Path, title: str) -> None:
    train, evals = read_metrics(metrics_path)
    svg = loss_svg(train, evals, title)
    if svg:
        atomic_write_text(out_path, svg)

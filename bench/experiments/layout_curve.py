"""Eval loss and tasks solved against training minutes, one curve per row layout: the picture in RESULTS.md.

    python bench/experiments/layout_curve.py --run pair=checkpoints/pair --run in_context=checkpoints/base \
        --solved pair=/tmp/snap/step-450/eval/results.json@450 ... --out docs

Training minutes come from each run's metrics.jsonl (`elapsed_s` of the logged steps; a run continued
with --resume restarts its clock, so each leg's last time is carried into the next). A --solved point
is an evaluation's results.json (or the solved count itself, as RESULTS.md records it) and the training
step of the checkpoint it evaluated. A run started from another's checkpoint (train.py --init) is drawn
after it with --continues LABEL=EARLIER: its clock starts where the earlier run's ended. Writes
OUT/eval-loss-vs-minutes.svg and OUT/solved-vs-minutes.svg (OUT/PREFIX-... with --prefix).

    python bench/experiments/layout_curve.py --run pair=checkpoints/pair --run long=checkpoints/pair-long3 \
        --continues long=pair --solved pair=2@2400 --solved long=<results.json>@<step> --prefix long-run --out docs
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from arc.reports.draw import line_chart  # noqa: E402

COLOURS = {"pair": "#1f5fbf", "in_context": "#FF851B", "long": "#2ECC40"}


def minutes_by_step(metrics: Path) -> tuple[dict[int, float], list[tuple[int, float]]]:
    """Training minutes at each logged step, and the eval losses (one per step: a leg resumed from an
    earlier checkpoint logs some steps again, and its figures replace the first leg's). Minutes are the
    run's training clock (`training_s`, which a resume carries on) where it was logged; older runs have
    only `elapsed_s`, which restarts with each leg, so each leg's last time is added to the next."""
    minutes, evals, carried, last = {}, {}, 0.0, 0.0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "training_s" in record:
            minutes[record["step"]] = record["training_s"] / 60
        elif "elapsed_s" in record:
            if record["elapsed_s"] < last:  # a new leg: its clock started again
                carried += last
            last = record["elapsed_s"]
            minutes[record["step"]] = (carried + last) / 60
        if "eval_loss" in record:
            evals[record["step"]] = record["eval_loss"]
    return minutes, sorted(evals.items())


def at_step(minutes: dict[int, float], step: int) -> float:
    """The minutes of the logged step nearest to step."""
    return minutes[min(minutes, key=lambda s: abs(s - step))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], help="LABEL=run folder with metrics.jsonl")
    parser.add_argument("--solved", action="append", default=[], help="LABEL=results.json@STEP or LABEL=COUNT@STEP")
    parser.add_argument("--continues", action="append", default=[], help="LABEL=EARLIER: LABEL's clock starts at EARLIER's end")
    parser.add_argument("--prefix", default="", help="file names PREFIX-eval-loss-vs-minutes.svg, ...")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    earlier = dict(spec.split("=", 1) for spec in args.continues)
    clocks, loss_series = {}, []
    for spec in args.run:
        label, folder = spec.split("=", 1)
        minutes, evals = minutes_by_step(Path(folder) / "metrics.jsonl")
        if label in earlier:  # runs listed in order: the earlier one's clock is known
            start = max(clocks[earlier[label]].values())
            minutes = {step: start + m for step, m in minutes.items()}
        clocks[label] = minutes
        loss_series.append((f"{label} eval loss", COLOURS.get(label, "#555"), [(at_step(minutes, s), v) for s, v in evals]))
    solved: dict[str, list[tuple[float, float]]] = {}
    for spec in args.solved:
        label, rest = spec.split("=", 1)
        path, step = rest.rsplit("@", 1)
        count = float(path) if path.isdigit() else float(json.loads(Path(path).read_text())["tasks_solved"])
        solved.setdefault(label, []).append((at_step(clocks[label], int(step)), count))
    solved_series = [(f"{label} solved (seed20)", COLOURS.get(label, "#555"), sorted(points)) for label, points in solved.items()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = {"eval-loss-vs-minutes.svg": line_chart(loss_series, "eval loss per output token on seed20", "training minutes",
                                                      dots=tuple(s[0] for s in loss_series)),
             "solved-vs-minutes.svg": line_chart(solved_series, "seed20 tasks solved (pass@2)", "training minutes",
                                                 log_y=False, dots=tuple(s[0] for s in solved_series))}
    for name, svg in names.items():
        name = f"{args.prefix}-{name}" if args.prefix else name
        (out / name).write_text(svg)
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main()

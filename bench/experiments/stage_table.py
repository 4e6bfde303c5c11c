"""Inference stages side by side: one `evaluate.py` run per named setting, then a markdown table of what each
solved and what it cost (RESULTS.md's stage tables come from here).

    python bench/experiments/stage_table.py --out bench/ablation/stages-seed20 \\
        --common "--checkpoint checkpoints/pair --threads 1" \\
        --stage "greedy, 1 view=--views 1" --stage "8 views=" --stage "TTT 100=--ttt-steps 100"

Each --stage is "NAME=FLAGS" (FLAGS added to --common). A stage whose results.json already exists under
--out is not run again (so an interrupted table resumes), unless --rerun. The table is printed and
written to <out>/table.md: solved tasks, ARC score, eval loss per output token, seconds per task, and for
test-time training the mean first and last training loss.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run(name: str, flags: str, common: str, out: Path, rerun: bool) -> dict:
    folder = out / slug(name)
    if rerun or not (folder / "results.json").is_file():
        command = [sys.executable, "evaluate.py", *shlex.split(common), *shlex.split(flags), "--out", str(folder)]
        print(f"[{name}] {' '.join(command)}", flush=True)
        started = time.time()
        with open(out / f"{slug(name)}.log", "w") as log:
            subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
        print(f"[{name}] done in {time.time() - started:.0f}s", flush=True)
    return json.loads((folder / "results.json").read_text())


def row(name: str, flags: str, results: dict) -> str:
    # a task that took no step (skipped, or leave-one-out stopping chose 0) has no loss to average
    ttt = [e["ttt"] for e in results["tasks"].values() if e.get("ttt") and e["ttt"]["first_loss"] is not None]
    losses = (f"{sum(t['first_loss'] for t in ttt) / len(ttt):.3f} -> {sum(t['last_loss'] for t in ttt) / len(ttt):.3f}"
              f" ({len(ttt)} tasks trained)" if ttt else "-")
    score = "-" if results["score"] is None else f"{results['score']:.3f}"
    loss = "-" if results.get("eval_loss") is None else f"{results['eval_loss']:.4f}"
    return (f"| {name} | `{flags or '(defaults)'}` | {results['tasks_solved']}/{results['tasks_total']} | {score} | {loss} | "
            f"{results['seconds_per_task']:.1f} | {losses} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for each stage's evaluation and the table")
    parser.add_argument("--common", default="", help="flags every stage gets (checkpoint, task set, threads)")
    parser.add_argument("--stage", action="append", required=True, help='"NAME=FLAGS", in table order')
    parser.add_argument("--rerun", action="store_true", help="run stages again even when their results exist")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"`python evaluate.py {args.common} <flags>`", "",
             "| stage | flags | solved | score | eval loss | s/task | TTT loss (first -> last) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for stage in args.stage:
        name, _, flags = stage.partition("=")
        lines.append(row(name, flags, run(name, flags, args.common, out, args.rerun)))
        (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

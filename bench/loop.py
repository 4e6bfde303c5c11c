"""The real training loop's speed: train.py's steady tokens/s and MFU after warm-up and its warm-up seconds,
the same for the loop of a base commit (before packed batches), and the kernel step as the ceiling, all
measured in one run, taking turns on the machine.

    python bench/loop.py                          # this checkout's main job vs a6706f1's, 60 steps each, 1 thread
    python bench/loop.py --steps 120 --warmup-steps 20 --threads 2
    python bench/loop.py --flags "--pack --batch-size 3"   # this checkout's train.py with other flags
    python bench/loop.py --base none              # this checkout and the kernel only

Three processes:
    new      train.py of this checkout (its defaults plus --flags)
    base     train.py of the base commit, checked out by `git worktree add` in a temporary folder (removed
             afterwards), with its own defaults: the loop this one is compared with
    kernel   this file with --kernel: bench/speed.py's training step (forward, loss, backward, clipping,
             fused AdamW; arc.training.optim.optimizer_step), compiled as train.py compiles it, on the
             new loop's model, precision and batch shape: the very batches of the new loop's N steps,
             built before the clock starts, trained one after another with nothing in between (no rows
             to draw, no logging). What the loop would reach if everything but the step cost nothing.
They start together and take turns: each runs for --slice seconds while the others are stopped
(SIGSTOP/SIGCONT to its process group, so compiler workers stop too). All three meet the machine's
other load alike, at a few seconds' grain: a ratio between them is a measurement, even on a shared
machine. Each process writes a JSON line per step (train.py: metrics.jsonl at --log-every 1); the
seconds it was running between two of its lines give its rate, whatever happened while it was stopped.

Figures per process: warm-up = running seconds to the end of step W (--warmup-steps) minus W steady
steps (start-up, data loading and compiling: what a run pays before its steady pace); steady tokens/s
over steps W+1..N (real tokens: padding not counted); MFU = steady tokens/s x model FLOPs per token /
the machine's fp32 (or bf16) matmul peak measured by the same threads (bench/speed.py's formula, with
the attention term taken at the average row length a token sits in, ~570 tokens for pair rows: the
useful work, whatever the loop spends on padding); recompiles = torch.compile's "Recompiling" lines
(TORCH_LOGS=recompiles) in all and after step W: graphs built beyond the first, each costing compile time
inside the loop.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import speed  # noqa: E402  (bench/speed.py: the matmul peak)

BASE = "a6706f1"  # the commit before packed batches: the loop of `python train.py` then


def flops_per_token(model: torch.nn.Module, context: float) -> float:
    """Training FLOPs per token: 6 x the matmul weights (nn.Linear: embeddings are lookups) plus causal
    attention, 6 x n_layers x context x d_model (bench/speed.py's train_flops_per_token, its seq being
    the length of the row a token attends within)."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6 * linear + 6 * model.cfg.n_layers * context * model.cfg.d_model


def attention_context(lengths: list[int]) -> float:
    """The row length an average token sits in: sum(n^2) / sum(n) over rows of n tokens."""
    return sum(n * n for n in lengths) / sum(lengths)


# --- the kernel worker ---------------------------------------------------------------------------------

def kernel(argv: list[str], progress: Path, steps: int) -> None:
    """The new loop's step alone: train.py's set-up (model, data, compiling) from its flags, the batches of
    its first `steps` steps built beforehand, then those steps trained one after another with nothing
    else in between, a progress line per step."""
    from arc.infra.config import add_config_flags, build_config, given_flags
    from arc.infra.distributed import SINGLE
    from arc.training import trainer
    from arc.training.config import TrainConfig
    from arc.training.optim import optimizer_step

    parser = argparse.ArgumentParser()
    add_config_flags(parser, TrainConfig)
    cfg = build_config(TrainConfig, given_flags(parser.parse_args(argv), TrainConfig))
    run = trainer.set_up(cfg, trainer.RunFolder(cfg.out, False), {})
    batches = [[run.data.batches(i) for i in SINGLE.micro_batches(step, cfg.grad_accum)] for step in range(steps)]
    trained = [p for p in run.model.parameters() if p.requires_grad]
    tokens = 0
    with open(progress, "a") as f:
        for step, micro in enumerate(batches, 1):
            optimizer_step(run.forward, run.optimizer, trained, micro, cfg.grad_clip, run.device, run.amp_dtype)
            tokens += sum(int((b.inputs != trainer.PAD).sum()) for b in micro)
            f.write(json.dumps({"step": step, "tokens": tokens}) + "\n")
            f.flush()


# --- the harness ---------------------------------------------------------------------------------------

class Worker:
    """One measured process: its command, progress file and the running seconds behind each line."""

    def __init__(self, name: str, cmd: list[str], cwd: Path, progress: Path, env: dict):
        self.name, self.progress = name, progress
        self.stderr = progress.with_suffix(".stderr")
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=open(self.stderr, "w"),
                                     start_new_session=True)  # its own process group: compiler workers stop with it
        self.stop()
        self.active = 0.0  # seconds it has been running so far
        self.lines: list[tuple[dict, float]] = []  # (progress line, running seconds when it was seen)
        self.read_at = self.stderr_at = 0
        self.recompiles: list[int] = []  # for each TORCH_LOGS "Recompiling" line, the steps done when it appeared

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        self.signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.signal(signal.SIGCONT)

    def poll_lines(self) -> None:
        with open(self.stderr, errors="replace") as f:
            f.seek(self.stderr_at)
            text = f.read()
        self.stderr_at += len(text.encode(errors="replace"))
        done = self.lines[-1][0]["step"] if self.lines else 0
        self.recompiles += [done] * text.count("Recompiling function")
        if not self.progress.exists():
            return
        with open(self.progress) as f:
            f.seek(self.read_at)
            text = f.read()
        complete = text[: text.rfind("\n") + 1]
        self.read_at += len(complete)
        for line in complete.splitlines():
            record = json.loads(line)
            if "tokens" not in record and "tokens_per_s" not in record:
                continue  # an eval-loss line
            self.lines.append((record, self.active))

    def tokens(self, record: dict) -> float:
        # train.py's lines: throughput since the loop began and its wall seconds, so their product is
        # the real tokens trained so far (its wall clock includes stopped time; the product does not care)
        return record["tokens"] if "tokens" in record else record["tokens_per_s"] * record["elapsed_s"]

    def figures(self, warmup: int, last: int) -> dict:
        at = {r["step"]: (self.tokens(r), active) for r, active in self.lines}
        if warmup not in at or last not in at:
            raise RuntimeError(f"{self.name}: no progress line for step {warmup} or {last}; see {self.stderr}")
        (t0, a0), (t1, a1) = at[warmup], at[last]
        steady_step_s = (a1 - a0) / (last - warmup)
        return {"steady_tokens_per_s": (t1 - t0) / (a1 - a0), "steady_step_s": steady_step_s,
                "warmup_s": a0 - warmup * steady_step_s, "to_step_w_s": a0,
                "tokens_per_step": (t1 - t0) / (last - warmup)}


def take_turns(workers: list[Worker], slice_s: float) -> None:
    """Run the workers one at a time, slice_s seconds each, until all have exited."""
    alive = list(workers)
    while alive:
        for w in list(alive):
            w.cont()
            began = last = time.perf_counter()
            while time.perf_counter() - began < slice_s and w.proc.poll() is None:
                time.sleep(0.05)
                now = time.perf_counter()
                w.active += now - last
                last = now
                w.poll_lines()
            w.stop()
            w.poll_lines()
            if w.proc.poll() is not None:
                w.cont()  # let it finish exiting
                alive.remove(w)
                if w.proc.returncode != 0:
                    for other in alive:
                        other.cont(), other.proc.kill()
                    raise RuntimeError(f"{w.name} exited with {w.proc.returncode}: see {w.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="steps each process runs (N)")
    parser.add_argument("--warmup-steps", type=int, default=10, help="steps counted as warm-up (W): steady pace over W+1..N")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process (1 on a shared machine)")
    parser.add_argument("--slice", type=float, default=5.0, help="seconds each process runs before the next one's turn")
    parser.add_argument("--base", default=BASE, help="the commit whose loop is compared (none: skip it)")
    parser.add_argument("--flags", default="", help="extra train.py flags for this checkout's loop and the kernel")
    parser.add_argument("--base-flags", default="", help="extra train.py flags for the base's loop")
    parser.add_argument("--warm-cache", action="store_true", help="share torch's compile cache with earlier runs "
                        "(default: each process compiles from scratch, as a fresh machine would)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if not 0 < args.warmup_steps < args.steps:
        parser.error("--warmup-steps must be between 0 and --steps")

    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        tmp = Path(tmp)
        common = ["--threads", str(args.threads), "--max-steps", str(args.steps), "--log-every", "1",
                  "--eval-every", "1000000", "--save-every", "1000000"]

        def env(name: str) -> dict:
            e = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_LOGS": "recompiles"}
            if not args.warm_cache:
                e["TORCHINDUCTOR_CACHE_DIR"] = str(tmp / f"inductor-{name}")
            return e

        flags = shlex.split(args.flags)
        load_at_start = os.getloadavg()
        torch.set_num_threads(args.threads)
        device = torch.device("cpu")
        peak_before = speed.matmul_peak(torch.float32, 2048, device, 1.0)["flops_per_s"]
        runs = {"new": (REPO, [sys.executable, "train.py", *common, *flags, "--out", str(tmp / "new")], tmp / "new" / "metrics.jsonl")}
        if args.base != "none":
            base_dir = tmp / "base-checkout"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base_dir), args.base], check=True,
                           capture_output=True)
            runs["base"] = (base_dir, [sys.executable, "train.py", *common, *shlex.split(args.base_flags), "--out", str(tmp / "base")],
                            tmp / "base" / "metrics.jsonl")
        runs["kernel"] = (REPO, [sys.executable, __file__, "--kernel", str(tmp / "kernel.jsonl"), str(args.steps), "--",
                                 *common[:2], *flags, "--out", str(tmp / "kernel")], tmp / "kernel.jsonl")
        workers = []
        try:
            for name, (cwd, cmd, progress) in runs.items():
                progress.parent.mkdir(parents=True, exist_ok=True)
                workers.append(Worker(name, cmd, cwd, progress, env(name)))
            started = time.perf_counter()
            take_turns(workers, args.slice)
            wall = time.perf_counter() - started
        finally:
            for w in workers:
                w.cont()
                if w.proc.poll() is None:
                    w.proc.kill()
            if args.base != "none":
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "base-checkout")],
                               capture_output=True)
        peak = max(peak_before, speed.matmul_peak(torch.float32, 2048, device, 1.0)["flops_per_s"])
        load_at_end = os.getloadavg()

        results = {w.name: w.figures(args.warmup_steps, args.steps) for w in workers}
        for w in workers:
            # a recompile seen while step k + 1 ran (k steps done) belongs to step k + 1
            results[w.name]["graphs_after_warmup"] = sum(done >= args.warmup_steps for done in w.recompiles)
            results[w.name]["recompiles"] = len(w.recompiles)
        context, flops = model_flops(args.flags)
        for name, r in results.items():
            r["mfu"] = r["steady_tokens_per_s"] * flops / peak
        report(args, results, peak, context, flops, load_at_start, load_at_end, wall)
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "peak_flops_per_s": peak, "context": context,
                                                   "flops_per_token": flops, "load_at_start": load_at_start,
                                                   "load_at_end": load_at_end, "wall_s": wall, "results": results}, indent=2) + "\n")


def model_flops(flags: str) -> tuple[float, float]:
    """The new loop's model FLOPs per token, with attention at the average context of 2,000 of its rows."""
    from arc.infra.config import add_config_flags, build_config, given_flags
    from arc.training import data as data_module, trainer
    from arc.training.config import TrainConfig

    parser = argparse.ArgumentParser()
    add_config_flags(parser, TrainConfig)
    cfg = build_config(TrainConfig, given_flags(parser.parse_args(shlex.split(flags)), TrainConfig))
    train_tasks, heldout, _ = data_module.select_data(cfg)
    layout = trainer.make_layout(cfg.layout, trainer.GridTokenizer(), [t.id for t in train_tasks + heldout])
    row_tokens = cfg.max_row_tokens or cfg.model.max_seq_len
    data = data_module.training_data(layout, train_tasks, heldout, row_tokens, cfg.seed, batch_size=cfg.batch_size)
    context = attention_context([len(data.sampler.row(i).ids) - 1 for i in range(2000)])
    model = trainer.Transformer(trainer.replace(cfg.model, n_tasks=len(layout.task_ids), transform_embedding=True))
    return context, flops_per_token(model, context)


def report(args, results: dict, peak: float, context: float, flops: float, load_start, load_end, wall: float) -> None:
    print(f"\nbench/loop.py: {args.steps} steps each (steady over {args.warmup_steps + 1}..{args.steps}), "
          f"{args.threads} thread(s), {args.slice:.0f} s turns, {wall / 60:.1f} min; load average "
          f"{', '.join(f'{x:.2f}' for x in load_start)} at start, {', '.join(f'{x:.2f}' for x in load_end)} at end; "
          f"fp32 matmul peak {peak / 1e9:,.1f} GFLOP/s; {flops / 1e6:.2f} MFLOP per token (attention context {context:.0f})")
    print(f"new: train.py {args.flags or '(defaults)'}; base: {args.base} train.py {args.base_flags or '(defaults)'}\n")
    print("| loop | steady tokens/s | MFU | tokens/step | s/step | warm-up s | recompiles in all | after warm-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['steady_tokens_per_s']:,.0f} | {r['mfu']:.1%} | {r['tokens_per_step']:,.0f} | "
              f"{r['steady_step_s']:.2f} | {r['warmup_s']:.1f} | {r['recompiles']} | {r['graphs_after_warmup']} |")
    new = results["new"]
    if "base" in results:
        print(f"\nnew / base steady tokens/s: {new['steady_tokens_per_s'] / results['base']['steady_tokens_per_s']:.2f}x")
    print(f"new / kernel steady tokens/s: {new['steady_tokens_per_s'] / results['kernel']['steady_tokens_per_s']:.1%}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--kernel":
        # python bench/loop.py --kernel PROGRESS STEPS -- TRAIN.PY FLAGS
        kernel(sys.argv[5:], Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()

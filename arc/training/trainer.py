"""train.py's run: set up (or resume) a run, train it with the fitting loop, save it.

    train(cfg)
        open the run folder          refuse a folder that holds a checkpoint, or load the one to resume
        set up                       device, the layout, the training rows, the held-out rows, the model,
                                     the optimiser (and, resuming, their saved state)
        the loop (arc.training.fit)  AdamW (or Muon + AdamW), warmup + cosine (or warmup-stable-decay)
                                     schedule, accumulation and clipping, bf16 autocast where it pays; between
                                     steps a log line, the eval loss on the held-out tasks' test outputs, a
                                     checkpoint (atomic, exact resume)

The run's budget: --max-steps steps (the default; the schedule is a function of the step, and a killed
run resumed with --resume ends bitwise equal to an uninterrupted one), or --minutes M of training time
(TrainingClock: the time in the training steps, evals and saves left out, saved in every checkpoint and
restored on --resume, so a resumed run continues the same schedule and stops when the M minutes are
spent). A --minutes run's learning rate, its end and (with --final-fraction) the row at which its final
phase begins follow the clock, so it is not bitwise reproducible; its rows before that are.

The row layout (arc.layouts: pair or in-context) decides what a row is and which rows are drawn; in
the pair layout the evaluated tasks' demonstrations are trained on (never their test outputs).

Three modes, chosen by TrainConfig:
    from scratch        init=None: a fresh model of the configured size, every parameter trained
    full fine-tune      init=CKPT: start from CKPT's weights, every parameter trained
    LoRA fine-tune      init=CKPT, lora.rank=R: CKPT frozen, only the adapter trained and saved

Under torchrun the same loop runs on every rank, data-parallel (arc.infra.distributed): each rank its share of
a step's micro-batches, gradients all-reduced by DDP, rank 0 alone evaluating, logging and saving.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from arc.data.generators import generated_tasks
from arc.data.tasks import Task, check_no_leak, exclude_overlap, load_tasks, select_tasks
from arc.data.tokenizer import PAD, GridTokenizer
from arc.infra import distributed
from arc.infra.config import validate
from arc.infra.distributed import World
from arc.infra.errors import CheckpointError, ConfigError, DivergenceError
from arc.infra.prefetch import Ahead
from arc.infra.runlog import RunLog
from arc.infra.runtime import autocast, autocast_dtype, bf16_is_slow, compile_regions, compiled_graphs, eager, resolve_device, seed_everything
from arc.layouts import make_layout
from arc.layouts.rows import IGNORE, Batch, Batches, EncodedRow, Layout, NoRows
from arc.layouts.sampling import Sampler
from arc.model.checkpoint import RunFolder, load_model
from arc.model.config import ModelConfig
from arc.model.lora import add_lora, cast_frozen, fold_lora
from arc.model.schema import fits_problem
from arc.model.transformer import Transformer
from arc.reports.pages import duration, write_train_report
from arc.training.config import TrainConfig, read_training, resume_changes
from arc.training.fit import fit
from arc.training.optim import MuonAndAdamW, Schedule, auto_optimizer, last_part_start, make_optimizer
from arc.training.scoring import output_token_loss


def saved_train_config(config: dict, where: str = "the checkpoint") -> TrainConfig:
    """The TrainConfig a checkpoint's config.json records (for --resume), every value checked (read_training)."""
    return read_training(config, f"{where}: its config.json")


# --------------------------------------------------------------------------------------------------
# Setting up
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    sampler: Sampler  # draws the training rows
    batches: Batches  # training batch number i, padded or packed (the layout's choice)
    eval_rows: list[EncodedRow]  # the evaluated tasks' test outputs, un-augmented (the eval loss only)
    eval_skipped: int  # test outputs longer than the row budget (left out of the eval loss)
    n_train_tasks: int  # training tasks after the exclusions
    excluded: list[str]  # ids left out of the training tasks (evaluated, or copies of evaluated tasks)


def select_data(cfg: TrainConfig) -> tuple[list[Task], list[Task], list[str]]:
    """The training tasks, the evaluated (held-out) tasks with their test outputs, and the ids left out of
    the training tasks. The leak guard lives here: no evaluated task (by id or content) is a training task.
    Extra tasks (cfg.extra_data, e.g. ARC-AGI-2's training set) join the training tasks, less those already
    among them or evaluated; generated tasks (cfg.generated_tasks per generator family) join them too."""
    train_tasks, excluded = load_tasks(cfg.data, cfg.split), []
    heldout_tasks = select_tasks(load_tasks(cfg.eval_data, cfg.eval_split), task_set=cfg.eval_set)
    if cfg.extra_data and cfg.extra_data != "none":
        data, _, split = cfg.extra_data.partition(":")
        # ARC-AGI-2 training holds most ARC-AGI-1 training tasks (same id or reordered pairs): one row each
        extra, _ = exclude_overlap(load_tasks(data, split or "training"), train_tasks)
        extra, evaluated = exclude_overlap(extra, heldout_tasks)
        train_tasks, excluded = train_tasks + extra, evaluated
    if cfg.generated_tasks:
        train_tasks = train_tasks + generated_tasks(cfg.generated_tasks)
    if cfg.exclude_evaluated and cfg.exclude_evaluated != "none":
        data, _, split = cfg.exclude_evaluated.partition(":")
        train_tasks, dropped = exclude_overlap(train_tasks, load_tasks(data, split or "evaluation"))
        excluded += dropped
    if (cfg.eval_data, cfg.eval_split) == (cfg.data, cfg.split):
        # tasks held out of the training split itself (a dev set: --eval-split training --eval-set dev20)
        # leave the training tasks by id; any other copy of them is still refused below
        held = {t.id for t in heldout_tasks}
        excluded += sorted(held)
        train_tasks = [t for t in train_tasks if t.id not in held]
    check_no_leak(train_tasks, heldout_tasks)
    return train_tasks, heldout_tasks, excluded


def training_data(layout: Layout, train_tasks: list[Task], heldout_tasks: list[Task], row_tokens: int, seed: int,
                  excluded: list[str] = (), batch_size: int = 1) -> TrainingData:
    """The training rows' sampler, its batches and the held-out rows. The evaluated tasks reach the sampler
    only as a test-time learner sees them: their test outputs are dropped here (Task.without_test_outputs),
    and the pair sampler refuses any task that still has one."""
    sampler = layout.sampler(train_tasks, [t.without_test_outputs() for t in heldout_tasks], row_tokens, seed)
    eval_rows, skipped = layout.scored_rows([e for t in heldout_tasks for e in t.examples()], row_tokens)
    return TrainingData(sampler, layout.batches(sampler, batch_size, row_tokens), eval_rows, skipped,
                        len(train_tasks), list(excluded))


def refuse_too_large(model_cfg: ModelConfig, run: RunFolder, device: torch.device) -> None:
    """ConfigError when a fresh model with its gradients and AdamW state cannot fit in the device's free
    memory, naming the fields as the flags do, or when resuming, as the checkpoint's config.json does."""
    where, name = ("", lambda path: "--" + path[-1].replace("_", "-")) if run.resume is None else \
        (f"{run.resume.checkpoint / 'config.json'}: ", lambda path: "training.model." + path[-1])
    if problem := fits_problem(model_cfg, device, name, copies=4, what="its weights, gradients and AdamW state"):
        raise ConfigError(where + problem)


def build_model(cfg: TrainConfig, layout: Layout, init: tuple[Transformer, dict] | None, run: RunFolder,
                device: torch.device) -> tuple[Transformer, dict]:
    """The model to train, and the config.json entries that describe it: a fresh one sized by cfg.model
    (with a task table when the layout keeps one; refused when it cannot fit in the device's memory), or
    the init checkpoint's (init: its model and config; a LoRA run's adapter folded into its base), with
    grid positions added to a plain one and a LoRA adapter when cfg.lora.rank > 0."""
    if init is None:
        model_cfg = replace(cfg.model, n_tasks=len(layout.task_ids) if layout.task_table else 0,
                            transform_embedding=layout.task_table)
        refuse_too_large(model_cfg, run, device)  # before anything is allocated
        model = Transformer(model_cfg)
        return model, {"model": asdict(model.cfg)}
    model, init_config = init
    fold_lora(model)  # a LoRA run's adapter, merged for good: the fine-tune starts from what that run computes
    if layout.task_table and not model.cfg.n_tasks:
        raise ConfigError(f"--init {cfg.init}: the model has no task embeddings, which the {layout.name} layout needs: "
                          "train it with --layout in_context" + (" (or --no-task-embedding)" if "task_embedding" in layout.options else ""))
    if layout.task_table and init_config.get("task_ids", []) != layout.task_ids:
        raise ConfigError(f"{cfg.init} was trained with another task table than this run's tasks (--eval-set, --data)")
    if cfg.model.grid_positions and not model.cfg.grid_positions and cfg.lora.rank == 0:
        model.add_grid_positions()
        print(f"{cfg.init} has no grid position embeddings: added them, zero-initialised (--no-grid-positions keeps it plain)")
    described = {"model": asdict(model.cfg), **{k: v for k, v in init_config.items() if k == "hf_import"}}
    if cfg.lora.rank > 0:
        add_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets, cfg.lora.full_parameters)
        described.update(**run.base_reference(cfg.init), lora=asdict(cfg.lora))  # the base, relative to the run folder
    return model, described


class TrainingClock:
    """Seconds spent in training steps (drawing the batches, forward, backward, the optimiser step) over the
    whole run, resumes included: a --minutes run's progress. Started as a step begins and stopped as it ends,
    so evals and checkpoint saves are not counted (they are measurement, and their cost depends on
    --eval-every); a first step that compiles the model is."""

    now = staticmethod(time.perf_counter)  # the clock read (tests put a fake one here)

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds  # training time up to the last finished step (the checkpoint's, after a resume)
        self._started: float | None = None

    def start(self) -> None:
        self._started = self.now()

    def stop(self) -> None:
        self.seconds += self.now() - self._started
        self._started = None


@dataclass
class Run:
    """Everything the loop works with, set up by `set_up`."""

    cfg: TrainConfig
    folder: RunFolder
    world: World
    device: torch.device
    amp_dtype: torch.dtype | None
    tokenizer: GridTokenizer
    data: TrainingData
    model: Transformer  # eager and unwrapped: the eval loss and the checkpoints
    forward: Callable[..., torch.Tensor]  # the compiled (and, under torchrun, DDP-wrapped) model the steps train
    optimizer: torch.optim.Optimizer | MuonAndAdamW
    described: dict  # config.json entries describing the model (model config, task table, LoRA base, resumes)
    start_step: int
    metrics: dict  # the latest eval loss, saved with each checkpoint
    log: Callable[..., None]
    clock: TrainingClock  # training time so far (a --minutes run's budget), saved with each checkpoint
    final_phase_step: int | None = None  # the first step of the --final-fraction phase, once known
    compile_s: float = 0.0  # compiling the training step before the first step (its warm-up)


def set_up(cfg: TrainConfig, folder: RunFolder, changes: dict) -> Run:
    """The run's device, layout, data, model and optimiser; resuming (changes: the flags changed since the
    checkpoint), their saved state."""
    world, device = distributed.setup(resolve_device(cfg.device, cfg.threads))
    log = print if world.is_main else lambda *args, **kwargs: None  # rank 0 speaks for the run
    amp_dtype = autocast_dtype(device, cfg.precision)
    if cfg.optimizer == "auto":  # resolved here and saved with the config: a resume on any machine keeps it
        cfg.optimizer = auto_optimizer(amp_dtype, cfg.lora.rank)
        log(f"optimizer auto: {cfg.optimizer} ({'bf16' if amp_dtype == torch.bfloat16 else 'fp32'} run"
            f"{', LoRA' if cfg.lora.rank > 0 else ''})")
    seed_everything(cfg.seed)
    tokenizer = GridTokenizer()
    init = None
    if cfg.init:
        model, _, init_config = load_model(cfg.init, device)
        init = (model, init_config)
    # the longest row: the flag, else the model's limit (the checkpoint's, when fine-tuning one)
    max_seq_len = init[0].cfg.max_seq_len if init else cfg.model.max_seq_len
    row_tokens = cfg.max_row_tokens or max_seq_len
    if row_tokens > max_seq_len:
        raise ConfigError(f"--max-row-tokens {row_tokens} exceeds the model's max_seq_len {max_seq_len}")

    train_tasks, heldout_tasks, excluded = select_data(cfg)
    settings = asdict(cfg)
    # the task table: the training tasks, then the evaluated ones (the pair layout learns a row for each)
    layout = make_layout(settings, tokenizer, [t.id for t in train_tasks + heldout_tasks])
    data = training_data(layout, train_tasks, heldout_tasks, row_tokens, cfg.seed, excluded, cfg.batch_size)

    model, described = build_model(cfg, layout, init, folder, device)
    if cfg.lora.rank > 0 and cfg.lora_base_bf16 and device.type == "cuda":
        if cfg.precision == "fp32":
            raise ConfigError("--lora-base-bf16 needs bf16 autocast: drop --precision fp32")
        cast_frozen(model, torch.bfloat16)
    model = model.to(device)
    model.activation_checkpointing = cfg.activation_checkpointing
    described["task_ids"] = layout.task_ids if layout.task_table else []
    model.train()
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.optimizer, cfg.muon_lr)
    start_step, metrics, clock, final_phase_step = 0, {}, TrainingClock(), None
    if folder.resume:
        resumed = folder.resume
        folder.load_weights(model, device)
        try:  # a train_state.pt of another run, or crafted: torch's own errors, named as the file
            optimizer.load_state_dict(resumed.state["optimizer"])
            rng = resumed.state.get("torch_rng_ranks", [])  # each rank's own, saved by a data-parallel run of this size
            torch.set_rng_state(rng[world.rank] if len(rng) == world.size else resumed.state["torch_rng"])
            cuda_rng = resumed.state.get("cuda_rng_ranks", [])  # the GPU's generator: dropout's masks (--dropout) on CUDA
            if device.type == "cuda" and len(cuda_rng) == world.size:
                torch.cuda.set_rng_state(cuda_rng[world.rank], device)
        except (ValueError, RuntimeError, TypeError, KeyError, IndexError) as e:
            raise CheckpointError(f"{resumed.checkpoint / 'train_state.pt'}: does not fit the run it resumes "
                                  f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        if resumed.config.get("task_ids", []) != described["task_ids"]:
            raise ConfigError(f"{folder.path}: the checkpoint's task table differs from this run's tasks (changed --eval-set or data?)")
        start_step, metrics = resumed.state["step"], resumed.config.get("metrics", {})
        clock = TrainingClock(resumed.state.get("training_seconds", 0.0))
        final_phase_step = resumed.state.get("final_phase_step")  # where a --minutes run's final phase began
        described["resumed"] = resumed.config.get("resumed", []) + [{"at_step": start_step, "changed": changes}]
        log(f"resumed from {resumed.checkpoint} at step {start_step}" + (f", changed: {changes}" if changes else ""))

    if cfg.optimizer == "muon" and device.type == "cpu" and bf16_is_slow(device):
        # torch.optim.Muon orthogonalises each update in bf16, which a CPU without native bf16 emulates (about 28x
        # slower than fp32 here): measured 1.1 s per Muon step for the default model on the 2-core development CPU
        log("note: Muon's Newton-Schulz runs in bf16, emulated on this CPU (bf16 matmuls slower than fp32): "
            "expect it to dominate the step")
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"model: {model.num_params():,} parameters ({n_trainable:,} trained) on {device}, "
        f"autocast {amp_dtype or 'off (fp32)'}")
    extra = f" and {cfg.extra_data}" if cfg.extra_data and cfg.extra_data != "none" else ""
    log(f"data: {data.n_train_tasks} training tasks from {cfg.data}/{cfg.split}{extra} ({len(excluded)} excluded as evaluated or copies of "
        f"{cfg.exclude_evaluated} tasks: {' '.join(excluded[:8])}{' ...' if len(excluded) > 8 else ''}); eval loss on {len(data.eval_rows)} "
        f"test outputs of {cfg.eval_set} ({data.eval_skipped} longer than {row_tokens} tokens)")
    unit = f"sequences of {row_tokens} tokens, rows packed end to end" if layout.packs else "rows, padded"
    log(f"batches: {cfg.batch_size} {unit}" + (f", {cfg.grad_accum} per step" if cfg.grad_accum > 1 else ""))
    if world.launched:
        log(f"data-parallel: {world.size} ranks, {cfg.batch_size * cfg.grad_accum * world.size} {unit.split(',')[0]} per step")
    compile_s = compile_step(model, data.batches(0), device, amp_dtype, log) if cfg.compile else 0.0
    # wrapped in DDP after compiling (nanoGPT's order: compile's warm-up runs on each rank alone)
    forward = world.wrap(model)
    return Run(cfg, folder, world, device, amp_dtype, tokenizer, data, model, forward, optimizer, described,
               start_step, metrics, log, clock, final_phase_step, compile_s)


def compile_step(model: Transformer, batch: Batch, device: torch.device, amp_dtype: torch.dtype | None, log) -> float:
    """torch.compile the model's blocks (arc.infra.runtime.compile_regions: one graph serves all of them),
    compiled now by a forward and backward on `batch` (a training batch: the run's shape); returns the
    seconds it took. Packed batches all have that one shape: the graph is static and stays the only one.
    Padded batches vary in length: the graph is dynamic. The model's gradients are cleared afterwards."""
    packed = batch.segments is not None
    batch = batch.to(device)

    def warm_up():
        with autocast(device.type, amp_dtype):
            logits = model(batch.inputs, task=batch.task, transform=batch.transform, segments=batch.segments)
        F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE).backward()

    started = time.time()
    compiled = compile_regions(list(model.blocks), dynamic=not packed, warm_up=warm_up)
    model.zero_grad(set_to_none=True)
    seconds = time.time() - started
    if compiled:
        shape = f"one static shape, {batch.inputs.shape[0]} x {batch.inputs.shape[1]} tokens" if packed else "dynamic lengths"
        log(f"compiled the training step ({shape}): {compiled_graphs()} graph(s) in {seconds:.1f} s")
    return seconds


# --------------------------------------------------------------------------------------------------
# Saving, and the loop
# --------------------------------------------------------------------------------------------------


def save(run: Run, step: int) -> None:
    """A checkpoint of step `step` (every rank calls it; rank 0 writes), then the run's report.html."""
    rng = run.world.gather(torch.get_rng_state())
    cuda_rng = run.world.gather(torch.cuda.get_rng_state(run.device)) if run.device.type == "cuda" else None
    if not run.world.is_main:
        return
    config = {**run.described, "training": asdict(run.cfg), "step": step, "metrics": run.metrics}
    state = {"optimizer": run.optimizer.state_dict(), "torch_rng": rng[0], **({"torch_rng_ranks": rng} if run.world.launched else {}),
             **({"cuda_rng_ranks": cuda_rng} if cuda_rng is not None else {}), "training_seconds": run.clock.seconds,
             **({"final_phase_step": run.final_phase_step} if run.final_phase_step is not None else {})}
    run.folder.save(run.model, config, run.tokenizer, state, lora=run.cfg.lora.rank > 0)
    write_train_report(run.folder.path)  # report.html (loss curves, throughput, config) and loss.svg


def first_row(run: Run, step: int) -> int:
    """The number of the first training row of `step` (its first micro-batch's, arc.layouts.rows.Batches):
    exact to within the chunk of rows around it that is sorted by length (padded batches) or packed
    together (packed batches), so a switch of the rows at this row lands within that chunk."""
    return run.data.batches.first_row(step * run.world.size * run.cfg.grad_accum)  # rank 0's first micro-batch


def start_final_phase(run: Run, step: int) -> None:
    """From `step` on, the rows come from the evaluated tasks at --final-evaluated-share (pair layout)."""
    run.final_phase_step = step
    run.data.sampler.final_phase(first_row(run, step), run.cfg.final_evaluated_share)
    run.data.batches.forget()  # batches packed or sorted before the switch are built again
    run.log(f"final phase from step {step}: {run.cfg.final_evaluated_share:.0%} of the rows from the evaluated tasks")


def schedule_of(cfg: TrainConfig) -> Schedule:
    """The run's learning-rate schedule, over its --max-steps or its --minutes."""
    return Schedule(cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio, cfg.schedule, cfg.decay_fraction, cfg.max_steps,
                    None if cfg.minutes is None else cfg.minutes * 60)


def loop(run: Run) -> None:
    """fit() from the run's start step to its last (or, with --minutes, until its training time is spent), with
    a log line, the eval loss and a checkpoint between steps as the config asks. Each step's batches are
    built one step ahead in a background thread (arc.infra.prefetch), so a step never waits for Python to
    draw and pack rows; at the end a line says where the run's time went (compiling, steps, eval loss,
    checkpoints, waiting for batches)."""
    cfg, world, log, clock = run.cfg, run.world, run.log, run.clock
    run_log = None  # metrics.jsonl, written by rank 0
    if world.is_main:
        run.folder.path.mkdir(parents=True, exist_ok=True)
        run_log = RunLog(run.folder.path / "metrics.jsonl")
        run_log.start(run.start_step)  # lines past the checkpoint (logged before a kill) are dropped: each step is logged once
    schedule, timed = schedule_of(cfg), cfg.minutes is not None
    # the last step: a step budget's, or --stop-at-step (a --minutes run has none: its time ends it)
    last_step = cfg.stop_at_step if timed else min(cfg.max_steps, cfg.stop_at_step or cfg.max_steps)
    if cfg.final_fraction:  # a step budget's final phase is known from the start (a --minutes run's, once reached)
        at = run.final_phase_step if timed else last_part_start(cfg.max_steps, cfg.final_fraction)
        if at is not None:
            start_final_phase(run, at)
    started, tokens = time.time() - run.compile_s, [0]  # the elapsed time includes compiling
    spent = {"eval loss": 0.0, "checkpoints and reports": 0.0}

    def steps():
        """The steps to take, each yielded as it begins (its training time counted from there): up to
        last_step, and with --minutes while training time is left."""
        step = run.start_step
        while (last_step is None or step < last_step) and not schedule.over(clock.seconds):
            if cfg.final_fraction and run.final_phase_step is None and schedule.in_last_part(cfg.final_fraction, step, clock.seconds):
                start_final_phase(run, step)  # (a --minutes run: the batch built ahead for this step keeps its rows)
            clock.start()
            yield step
            step += 1

    def micro_batches(step: int) -> list[Batch]:
        return [run.data.batches(i) for i in world.micro_batches(step, cfg.grad_accum)]

    def counted(step: int) -> list[Batch]:
        micro = ahead(step)
        tokens[0] += sum(int((batch.inputs != PAD).sum()) for batch in micro)
        return micro

    def after_step(done: int, loss: float, lr: float) -> None:
        clock.stop()
        if timed and world.launched:  # the ranks' clocks differ: one mean, so every rank takes the same lr and stops together
            clock.seconds = world.sum(clock.seconds) / world.size
        last = done == last_step or schedule.over(clock.seconds)
        if done % cfg.log_every == 0 or last:
            elapsed = time.time() - started
            rate = world.sum(tokens[0]) / elapsed
            if timed:
                progress = f"step {done} | trained {duration(clock.seconds)} of {duration(schedule.seconds)}"
            else:
                eta = elapsed / (done - run.start_step) * (last_step - done)
                progress = f"step {done}/{cfg.max_steps}"
            log(f"{progress} | loss {loss:.4f} | lr {lr:.2e} | {rate:,.0f} tok/s | elapsed {duration(elapsed)}"
                f"{'' if timed else f' | eta {duration(eta)}'} | skipped rows {run.data.sampler.skipped} | graphs {compiled_graphs()}",
                flush=True)
            if run_log:
                run_log.append({"step": done, "loss": loss, "lr": lr, "tokens_per_s": rate, "elapsed_s": elapsed,
                                "training_s": clock.seconds, "graphs": compiled_graphs()})
        if (done % cfg.eval_every == 0 or last) and world.is_main and run.data.eval_rows:  # none: no eval loss, not 0
            began = time.time()
            with eager():  # its batches have other shapes than training's: no graphs of their own
                eval_loss = output_token_loss(run.model, run.data.eval_rows, run.amp_dtype)
            if not math.isfinite(eval_loss):
                raise DivergenceError(f"step {done}: the eval loss is {eval_loss}: training diverged")
            run.metrics = {"eval_loss": eval_loss, "eval_step": done}
            print(f"step {done} | eval loss {eval_loss:.4f} per output token on {cfg.eval_set}", flush=True)
            run_log.append({"step": done, "eval_loss": eval_loss})
            spent["eval loss"] += time.time() - began
        if done % cfg.save_every == 0 or last:
            began = time.time()
            save(run, done)
            spent["checkpoints and reports"] += time.time() - began

    trained = [p for p in run.model.parameters() if p.requires_grad]
    try:
        with Ahead(micro_batches, last_step) as ahead:
            report = fit(run.forward, run.optimizer, trained, counted, lambda step: schedule.lr(step, clock.seconds),
                         steps(), cfg.grad_clip, run.device, run.amp_dtype, world, after_step=after_step)
    except DivergenceError as error:
        raise DivergenceError(f"{error} (try a lower --lr, or --grad-clip > 0); nothing non-finite was saved, "
                              f"{run.folder.path} keeps {run.folder.kept()}") from None
    except NoRows as error:  # rows fit too rarely in the row budget
        raise ConfigError(f"{error}: raise --max-row-tokens (and --max-seq-len)") from None
    if report.steps == 0 and not run.folder.resume:
        save(run, run.start_step)  # e.g. --max-steps 0: an untrained checkpoint, the honest zero baseline
    elif report.steps and world.is_main:
        total = time.time() - started
        parts = {"compiling": run.compile_s, **spent, "waiting for batches": ahead.waited}
        parts = {"steps": total - sum(parts.values()), **parts}
        log(f"time: {duration(total)} in all: " + ", ".join(f"{k} {v:.1f} s ({v / total:.1%})" for k, v in parts.items()))
        run_log.append({"step": run.start_step + report.steps, "time_s": {"total": total, **parts}})


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Run (or continue) training; returns the run folder holding the final checkpoint."""
    validate(cfg)  # every flag, before any work (each field's rule, TrainConfig.problems)
    # locked (one trainer per folder: rank 0 writes it), refused, or its checkpoint loaded, before any work
    folder = RunFolder(cfg.out, resume, lock=distributed.launched_rank() == 0)
    try:
        # a resume may change the schedule, steps or logging, never the architecture or data (refused here)
        changes = resume_changes(saved_train_config(folder.resume.config, str(folder.path)), cfg) if resume else {}
        run = set_up(cfg, folder, changes)
    except BaseException:
        folder.discard()  # a set-up refused (bad data, a model too large): no empty run folder left behind
        raise
    loop(run)
    if not run.world.same_weights(run.model):
        raise RuntimeError("data-parallel ranks ended with different weights (a rank diverged)")
    run.world.barrier()  # no rank leaves (to read the checkpoint, say) before rank 0 has written it
    run.log(f"saved checkpoint to {folder.path}")
    return folder.path

"""train.py's run: set up (or resume) a run, train it with the fitting loop, save it.

    train(cfg)
        open the run folder   refuse a folder that holds a checkpoint, or load the one to resume
        set up                device, the layout, the training rows, the held-out rows, the model, the
                              optimiser (and, resuming, their saved state), the compiled training step
        the loop              the steps (arc.training.steps.take_steps) by the run's recipe (AdamW or Muon +
                              AdamW, warmup then cosine or warmup-stable-decay, clipping: arc.training.optim),
                              bf16 autocast where it pays; after each step, as the config asks:
                                  log_step        a log line and a metrics.jsonl line
                                  evaluate_step   the eval loss on the held-out tasks' test outputs
                                  save            a checkpoint (atomic, exact resume) and report.html

The run's budget: --max-steps steps (the default; the schedule is a function of the step, and a killed
run resumed with --resume ends bitwise equal to an uninterrupted one), or --minutes M of training time
(arc.training.steps.TrainingClock: the time in the training steps, evals and saves left out, saved in every
checkpoint and restored on --resume, so a resumed run continues the same schedule and stops when the M
minutes are spent). A --minutes run's learning rate, its end and (with --final-fraction) the row at which its final
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
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import torch

from arc.data.tokenizer import PAD, GridTokenizer
from arc.infra import distributed
from arc.infra.config import validate
from arc.infra.distributed import World
from arc.infra.errors import CheckpointError, ConfigError, DivergenceError
from arc.infra.prefetch import Ahead
from arc.infra.runlog import RunLog
from arc.infra.runtime import autocast_dtype, bf16_is_slow, compiled_graphs, eager, resolve_device, seed_everything
from arc.layouts import make_layout
from arc.layouts.rows import Batch, Layout, NoRows
from arc.model.checkpoint import load_model
from arc.model.config import ModelConfig
from arc.model.lora import add_lora, cast_frozen, fold_lora
from arc.model.schema import fits_problem
from arc.model.transformer import Transformer
from arc.reports.pages import duration, write_train_report
from arc.training.config import TrainConfig, read_training, resume_changes
from arc.training.data import TrainingData, select_data, training_data
from arc.training.optim import MuonAndAdamW, Schedule, auto_optimizer, last_part_start
from arc.training.run_folder import RunFolder
from arc.training.steps import TrainingClock, compile_training_step, compiled_shape, take_steps
from arc.training.scoring import output_token_loss


def saved_train_config(config: dict, where: str = "the checkpoint") -> TrainConfig:
    """The TrainConfig a checkpoint's config.json records (for --resume), every value checked (read_training)."""
    return read_training(config, f"{where}: its config.json")


# --------------------------------------------------------------------------------------------------
# Setting up
# --------------------------------------------------------------------------------------------------


def refuse_too_large(model_cfg: ModelConfig, run: RunFolder, device: torch.device) -> None:
    """ConfigError when a fresh model with its gradients and AdamW state cannot fit in the device's free
    memory, naming the fields as the flags do, or when resuming, as the checkpoint's config.json does."""
    if run.resume is None:
        where, name = "", lambda path: "--" + path[-1].replace("_", "-")
    else:
        where, name = f"{run.resume.checkpoint / 'config.json'}: ", lambda path: "training.model." + path[-1]
    if problem := fits_problem(model_cfg, device, name, copies=4, what="its weights, gradients and AdamW state"):
        raise ConfigError(where + problem)


def remap_tasks(model: Transformer, trained: list[str], wanted: list[str], cfg: TrainConfig) -> None:
    """A full fine-tune of a checkpoint on another set of tasks (--eval-set, --data): the rows of the tasks both
    tables hold are kept, the others start at the mean of the trained rows (as an unseen task's at evaluation).
    A LoRA run keeps its base's table: refused."""
    if cfg.lora.rank > 0:
        raise ConfigError(f"{cfg.init} was trained with another task table than this run's tasks (--eval-set, "
                          "--data): a LoRA run keeps its base's table; fine-tune every weight instead")
    index = {task_id: i for i, task_id in enumerate(trained)}
    model.remap_tasks([index.get(task_id) for task_id in wanted])
    kept = sum(task_id in index for task_id in wanted)
    print(f"--init {cfg.init}: its task table ({len(trained)} tasks) mapped onto this run's ({len(wanted)}): "
          f"{kept} rows kept, {len(wanted) - kept} new ones at the mean of the trained rows")


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
        other = " (or --no-task-embedding)" if "task_embedding" in layout.options else ""
        raise ConfigError(f"--init {cfg.init}: the model has no task embeddings, which the {layout.name} layout needs: "
                          f"train it with --layout in_context{other}")
    if layout.task_table and init_config.get("task_ids", []) != layout.task_ids:
        remap_tasks(model, init_config.get("task_ids", []), layout.task_ids, cfg)
    if cfg.model.grid_positions and not model.cfg.grid_positions and cfg.lora.rank == 0:
        model.add_grid_positions()
        print(f"{cfg.init} has no grid position embeddings: added them, zero-initialised (--no-grid-positions keeps "
              "it plain)")
    described = {"model": asdict(model.cfg), **{k: v for k, v in init_config.items() if k == "hf_import"}}
    if cfg.lora.rank > 0:
        add_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets, cfg.lora.full_parameters)
        described.update(**run.base_reference(cfg.init), lora=asdict(cfg.lora))  # the base, relative to the run folder
    return model, described


@dataclass
class Meter:
    """What the loop measures as it goes, for the log lines and the closing `time:` line."""

    started: float  # time.time() at the loop's start, less the compile before it (the elapsed time includes it)
    tokens: int = 0  # tokens trained on by this process since the loop started (padding not counted)
    eval_s: float = 0.0  # seconds in eval-loss measurements
    save_s: float = 0.0  # seconds in checkpoints and reports


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
    schedule: Schedule  # the learning rate over the run's --max-steps or --minutes
    described: dict  # config.json entries describing the model (model config, task table, LoRA base, resumes)
    start_step: int
    last_step: int | None  # the step to stop after (None: a --minutes run, stopped by its clock)
    metrics: dict  # the latest eval loss, saved with each checkpoint
    log: Callable[..., None]
    clock: TrainingClock  # training time so far (a --minutes run's budget), saved with each checkpoint
    final_phase_step: int | None = None  # the first step of the --final-fraction phase, once known
    compile_s: float = 0.0  # compiling the training step before the first step (its warm-up)
    run_log: RunLog | None = None  # metrics.jsonl (rank 0 only)
    meter: Meter | None = None  # set by the loop


def last_step_of(cfg: TrainConfig) -> int | None:
    """The last step: a step budget's, or --stop-at-step (a --minutes run has none: its time ends it)."""
    return cfg.stop_at_step if cfg.minutes is not None else min(cfg.max_steps, cfg.stop_at_step or cfg.max_steps)


def set_up(cfg: TrainConfig, folder: RunFolder, changes: dict) -> Run:
    """The run's device, layout, data, model and optimiser; resuming (changes: the flags changed since the
    checkpoint), their saved state; the compiled training step."""
    world, device = distributed.setup(resolve_device(cfg.device, cfg.threads))
    log = print if world.is_main else lambda *args, **kwargs: None  # rank 0 speaks for the run
    amp_dtype = autocast_dtype(device, cfg.precision)
    if cfg.optimizer == "auto":  # resolved here and saved with the config: a resume on any machine keeps it
        cfg.optimizer = auto_optimizer(amp_dtype, cfg.lora.rank)
        log(f"optimizer auto: {cfg.optimizer} ({'bf16' if amp_dtype == torch.bfloat16 else 'fp32'} run"
            f"{', LoRA' if cfg.lora.rank > 0 else ''})")
    seed_everything(cfg.seed)
    tokenizer = GridTokenizer()
    init = None  # (the model to start from, its config.json)
    if cfg.init:
        model, _, init_config = load_model(cfg.init, device)
        init = (model, init_config)
    # the longest row: the flag, else the model's limit (the checkpoint's, when fine-tuning one)
    max_seq_len = init[0].cfg.max_seq_len if init else cfg.model.max_seq_len
    row_tokens = cfg.max_row_tokens or max_seq_len
    if row_tokens > max_seq_len:
        raise ConfigError(f"--max-row-tokens {row_tokens} exceeds the model's max_seq_len {max_seq_len}")

    train_tasks, heldout_tasks, excluded = select_data(cfg)
    # the task table: the training tasks, then the evaluated ones (the pair layout learns a row for each)
    layout = make_layout(cfg.layout, tokenizer, [t.id for t in train_tasks + heldout_tasks])
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
    recipe = cfg.recipe()
    run = Run(cfg, folder, world, device, amp_dtype, tokenizer, data, model, model, recipe.optimizer_for(model),
              recipe.schedule_for(cfg.max_steps if cfg.minutes is None else 0,
                                  None if cfg.minutes is None else cfg.minutes * 60),
              described, 0, last_step_of(cfg), {}, log, TrainingClock())
    if folder.resume:
        resume(run, changes)
    describe(run, layout, row_tokens, excluded)
    if cfg.compile:
        run.compile_s = compile_training_step(model, data.batches(0), device, amp_dtype)
        if compiled_graphs():  # (none: the compiler failed, and said so; the steps run eagerly)
            log(f"compiled the training step ({compiled_shape(data.batches(0))}): {compiled_graphs()} graph(s) in "
                f"{run.compile_s:.1f} s")
    # wrapped in DDP after compiling (nanoGPT's order: compile's warm-up runs on each rank alone)
    run.forward = world.wrap(model)
    return run


def resume(run: Run, changes: dict) -> None:
    """Put the resumed checkpoint's weights, optimiser and random state, step, metrics and clock into the run."""
    resumed, world = run.folder.resume, run.world
    run.folder.load_weights(run.model, run.device)
    try:  # a train_state.pt of another run, or crafted: torch's own errors, named as the file
        run.optimizer.load_state_dict(resumed.state["optimizer"])
        rng = resumed.state.get("torch_rng_ranks", [])  # each rank's own, saved by a data-parallel run of this size
        torch.set_rng_state(rng[world.rank] if len(rng) == world.size else resumed.state["torch_rng"])
        cuda_rng = resumed.state.get("cuda_rng_ranks", [])  # the GPU's generator: dropout's masks on CUDA
        if run.device.type == "cuda" and len(cuda_rng) == world.size:
            torch.cuda.set_rng_state(cuda_rng[world.rank], run.device)
    except (ValueError, RuntimeError, TypeError, KeyError, IndexError) as e:
        raise CheckpointError(f"{resumed.checkpoint / 'train_state.pt'}: does not fit the run it resumes "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    if resumed.config.get("task_ids", []) != run.described["task_ids"]:
        raise ConfigError(f"{run.folder.path}: the checkpoint's task table differs from this run's tasks "
                          "(changed --eval-set or data?)")
    run.start_step, run.metrics = resumed.state["step"], resumed.config.get("metrics", {})
    run.clock = TrainingClock(resumed.state.get("training_seconds", 0.0))
    run.final_phase_step = resumed.state.get("final_phase_step")  # where a --minutes run's final phase began
    run.described["resumed"] = resumed.config.get("resumed", []) + [{"at_step": run.start_step, "changed": changes}]
    run.log(f"resumed from {resumed.checkpoint} at step {run.start_step}"
            + (f", changed: {changes}" if changes else ""))


def describe(run: Run, layout: Layout, row_tokens: int, excluded: list[str]) -> None:
    """The run's opening lines: the optimiser's cost where bf16 is emulated, the model, the data, the batches."""
    cfg, data, log = run.cfg, run.data, run.log
    if cfg.optimizer == "muon" and run.device.type == "cpu" and bf16_is_slow(run.device):
        # torch.optim.Muon orthogonalises each update in bf16, which a CPU without native bf16 emulates (about 28x
        # slower than fp32 here): measured 1.1 s per Muon step for the default model on the 2-core development CPU
        log("note: Muon's Newton-Schulz runs in bf16, emulated on this CPU (bf16 matmuls slower than fp32): "
            "expect it to dominate the step")
    n_trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    log(f"model: {run.model.num_params():,} parameters ({n_trainable:,} trained) on {run.device}, "
        f"autocast {run.amp_dtype or 'off (fp32)'}")
    extra = f" and {cfg.extra_data}" if cfg.extra_data and cfg.extra_data != "none" else ""
    shown = " ".join(excluded[:8]) + (" ..." if len(excluded) > 8 else "")
    log(f"data: {data.n_train_tasks} training tasks from {cfg.data}/{cfg.split}{extra} ({len(excluded)} excluded "
        f"as evaluated or copies of {cfg.exclude_evaluated} tasks: {shown}); eval loss on {len(data.eval_rows)} "
        f"test outputs of {cfg.eval_set} ({data.eval_skipped} longer than {row_tokens} tokens)")
    unit = f"sequences of {row_tokens} tokens, rows packed end to end" if layout.packs else "rows, padded"
    log(f"batches: {cfg.batch_size} {unit}" + (f", {cfg.grad_accum} per step" if cfg.grad_accum > 1 else ""))
    if run.world.launched:
        per_step = cfg.batch_size * cfg.grad_accum * run.world.size
        log(f"data-parallel: {run.world.size} ranks, {per_step} {unit.split(',')[0]} per step")


# --------------------------------------------------------------------------------------------------
# The loop, and what it does after a step
# --------------------------------------------------------------------------------------------------


def first_row(run: Run, step: int) -> int:
    """The number of the first training row of `step` (its first micro-batch's, arc.layouts.rows.Batches):
    exact to within the chunk of rows around it that is sorted by length (padded batches) or packed
    together (packed batches), so a switch of the rows at this row lands within that chunk."""
    return run.data.batches.first_row(step * run.world.size * run.cfg.grad_accum)  # rank 0's first micro-batch


def start_final_phase(run: Run, step: int) -> None:
    """From `step` on, the rows come from the evaluated tasks at --final-evaluated-share (pair layout)."""
    run.final_phase_step = step
    run.data.sampler.final_phase(first_row(run, step), run.cfg.layout.final_evaluated_share)
    run.data.batches.forget()  # batches packed or sorted before the switch are built again
    share = run.cfg.layout.final_evaluated_share
    run.log(f"final phase from step {step}: {share:.0%} of the rows from the evaluated tasks")


def step_indices(run: Run) -> Iterator[int]:
    """The steps to take, from the run's start: up to its last step, and with --minutes while training time
    is left. A --minutes run's final phase (--final-fraction) starts at the first step that falls in it."""
    step = run.start_step
    while (run.last_step is None or step < run.last_step) and not run.schedule.over(run.clock.seconds):
        fraction = run.cfg.layout.final_fraction
        if fraction and run.final_phase_step is None and run.schedule.in_last_part(fraction, step, run.clock.seconds):
            start_final_phase(run, step)  # (the batch built ahead for this step keeps its rows)
        yield step
        step += 1


def micro_batches(run: Run, step: int) -> list[Batch]:
    """This rank's micro-batches of `step` (built a step ahead, arc.infra.prefetch)."""
    return [run.data.batches(i) for i in run.world.micro_batches(step, run.cfg.grad_accum)]


def counted(run: Run, ahead: Ahead, step: int) -> list[Batch]:
    """The step's micro-batches, their tokens counted for the throughput."""
    batches = ahead(step)
    run.meter.tokens += sum(int((batch.inputs != PAD).sum()) for batch in batches)
    return batches


def log_step(run: Run, done: int, loss: float, lr: float) -> None:
    """One line on the terminal and one in metrics.jsonl: the step, loss, learning rate, throughput, time."""
    elapsed = time.time() - run.meter.started
    rate = run.world.sum(run.meter.tokens) / elapsed
    if run.cfg.minutes is not None:
        progress = f"step {done} | trained {duration(run.clock.seconds)} of {duration(run.schedule.seconds)}"
        eta = ""
    else:
        progress = f"step {done}/{run.cfg.max_steps}"
        eta = f" | eta {duration(elapsed / (done - run.start_step) * (run.last_step - done))}"
    run.log(f"{progress} | loss {loss:.4f} | lr {lr:.2e} | {rate:,.0f} tok/s | elapsed {duration(elapsed)}{eta} | "
            f"skipped rows {run.data.sampler.skipped} | graphs {compiled_graphs()}", flush=True)
    if run.run_log:
        run.run_log.append({"step": done, "loss": loss, "lr": lr, "tokens_per_s": rate, "elapsed_s": elapsed,
                            "training_s": run.clock.seconds, "graphs": compiled_graphs()})


def evaluate_step(run: Run, done: int) -> None:
    """The eval loss on the held-out tasks' test outputs (rank 0), kept for the next checkpoint and logged."""
    began = time.time()
    with eager():  # its batches have other shapes than training's: no graphs of their own
        eval_loss = output_token_loss(run.model, run.data.eval_rows, run.amp_dtype)
    if not math.isfinite(eval_loss):
        raise DivergenceError(f"step {done}: the eval loss is {eval_loss}: training diverged")
    run.metrics = {"eval_loss": eval_loss, "eval_step": done}
    print(f"step {done} | eval loss {eval_loss:.4f} per output token on {run.cfg.eval_set}", flush=True)
    run.run_log.append({"step": done, "eval_loss": eval_loss})
    run.meter.eval_s += time.time() - began


def save(run: Run, step: int) -> None:
    """A checkpoint of step `step` (every rank calls it; rank 0 writes), then the run's report.html."""
    began = time.time()
    rng = run.world.gather(torch.get_rng_state())
    cuda_rng = run.world.gather(torch.cuda.get_rng_state(run.device)) if run.device.type == "cuda" else None
    if run.world.is_main:
        config = {**run.described, "training": asdict(run.cfg), "step": step, "metrics": run.metrics}
        state = {"optimizer": run.optimizer.state_dict(), "torch_rng": rng[0], "training_seconds": run.clock.seconds,
                 **({"torch_rng_ranks": rng} if run.world.launched else {}),
                 **({"cuda_rng_ranks": cuda_rng} if cuda_rng is not None else {}),
                 **({"final_phase_step": run.final_phase_step} if run.final_phase_step is not None else {})}
        run.folder.save(run.model, config, run.tokenizer, state, lora=run.cfg.lora.rank > 0)
        write_train_report(run.folder.path, config)  # report.html (loss curves, throughput, config) and loss.svg
    if run.meter:
        run.meter.save_s += time.time() - began


def after_step(run: Run, done: int, loss: float, lr: float) -> None:
    """Between steps, as the config asks: a log line, the eval loss, a checkpoint (each also after the last step)."""
    cfg, world = run.cfg, run.world
    if cfg.minutes is not None and world.launched:  # one mean clock: every rank takes the same lr and stops together
        run.clock.seconds = world.sum(run.clock.seconds) / world.size
    last = done == run.last_step or run.schedule.over(run.clock.seconds)
    if done % cfg.log_every == 0 or last:
        log_step(run, done, loss, lr)
    if (done % cfg.eval_every == 0 or last) and world.is_main and run.data.eval_rows:  # none: no eval loss, not 0
        evaluate_step(run, done)
    if done % cfg.save_every == 0 or last:
        save(run, done)


def log_time(run: Run, steps: int, waited: float) -> None:
    """The closing `time:` line (and metrics.jsonl line): where the run's time went."""
    total = time.time() - run.meter.started
    parts = {"compiling": run.compile_s, "eval loss": run.meter.eval_s, "checkpoints and reports": run.meter.save_s,
             "waiting for batches": waited}
    parts = {"steps": total - sum(parts.values()), **parts}
    run.log(f"time: {duration(total)} in all: "
            + ", ".join(f"{k} {v:.1f} s ({v / total:.1%})" for k, v in parts.items()))
    run.run_log.append({"step": run.start_step + steps, "time_s": {"total": total, **parts}})


def loop(run: Run) -> None:
    """The run's steps from its start step to its last (or, with --minutes, until its training time is spent),
    after_step between them. Each step's batches are built one step ahead in a background thread
    (arc.infra.prefetch), so a step never waits for Python to draw and pack rows."""
    cfg = run.cfg
    if run.world.is_main:
        run.folder.path.mkdir(parents=True, exist_ok=True)
        run.run_log = RunLog(run.folder.path / "metrics.jsonl")
        run.run_log.start(run.start_step)  # lines past the checkpoint (logged before a kill) go: each step logged once
    if cfg.layout.final_fraction and cfg.minutes is None:  # a step budget's final phase is known from the start
        start_final_phase(run, last_part_start(cfg.max_steps, cfg.layout.final_fraction))
    elif cfg.layout.final_fraction and run.final_phase_step is not None:  # a --minutes run's, once it was reached
        start_final_phase(run, run.final_phase_step)
    run.meter = Meter(time.time() - run.compile_s)  # the elapsed time includes compiling
    trained = [p for p in run.model.parameters() if p.requires_grad]
    try:
        with Ahead(partial(micro_batches, run), run.last_step) as ahead:
            report = take_steps(run.forward, run.optimizer, trained, partial(counted, run, ahead), run.schedule,
                                step_indices(run), cfg.grad_clip, run.device, run.amp_dtype, run.world, run.clock,
                                partial(after_step, run))
    except DivergenceError as error:
        raise DivergenceError(f"{error} (try a lower --lr, or --grad-clip > 0); nothing non-finite was saved, "
                              f"{run.folder.path} keeps {run.folder.kept()}") from None
    except NoRows as error:  # rows fit too rarely in the row budget
        raise ConfigError(f"{error}: raise --max-row-tokens (and --max-seq-len)") from None
    if report.steps == 0 and not run.folder.resume:
        save(run, run.start_step)  # e.g. --max-steps 0: an untrained checkpoint, the honest zero baseline
    elif report.steps and run.world.is_main:
        log_time(run, report.steps, ahead.waited)


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

"""The training loop: AdamW, warmup + cosine schedule, gradient accumulation and clipping, bf16
autocast where it pays, periodic eval loss on held-out tasks, atomic checkpoints and exact resume.

Two row layouts (arc.layouts.rows), chosen by TrainConfig.layout:
    pair        one (input, output) pair per row, a learned embedding per task and per D8 transform;
                trained on the training tasks' pairs AND the evaluated tasks' demonstrations (never
                their test outputs, which give the eval loss), so the evaluated tasks get embeddings
    in_context  every demonstration in the context (the walkthrough's layout)

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

import torch

from arc.data.tasks import (
    Task,
    check_no_leak,
    exclude_overlap,
    load_tasks,
    select_tasks,
)
from arc.data.tokenizer import PAD, GridTokenizer
from arc.infra import distributed
from arc.infra.config import build_config, validate
from arc.infra.errors import CheckpointError, ConfigError, DivergenceError
from arc.infra.runlog import RunLog
from arc.infra.runtime import (
    autocast_dtype,
    maybe_compile,
    resolve_device,
    seed_everything,
)
from arc.layouts.rows import Rows, heldout_rows, make_rows
from arc.layouts.sampling import InContextSampler, PairSampler, Sampler
from arc.model.checkpoint import (
    base_reference,
    checkpoint_dir,
    has_checkpoint,
    load_model,
    load_train_state,
    model_config,
    read_config,
    save_checkpoint,
    tidy,
)
from arc.model.lora import add_lora, cast_frozen
from arc.model.transformer import Transformer
from arc.reports.pages import write_train_report
from arc.training.config import TrainConfig, resume_changes
from arc.training.optim import lr_at, make_optimizer, optimizer_step, set_lr
from arc.training.scoring import output_token_loss

# Keys of TrainConfig before the model and LoRA settings were nested, and before the pair layout.
_FLAT_MODEL_KEYS = ("d_model", "n_layers", "n_heads", "grid_positions", "rope")
_FLAT_LORA_KEYS = {"lora_rank": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_targets": "targets"}


def saved_train_config(config: dict, where: str = "the checkpoint") -> TrainConfig:
    """The TrainConfig a checkpoint's config.json records (for --resume), also from runs saved before the
    model and LoRA settings were nested (their flat keys are moved in; the old row budget max_len becomes
    max_row_tokens; keys that no longer exist, such as `extra`, are dropped)."""
    if not isinstance(config.get("training"), dict):
        raise CheckpointError(f"{where}: its config.json records no training config: not a run of train.py, so it cannot be resumed")
    training = dict(config["training"])
    if "model" not in training:
        training.setdefault("layout", "in_context")  # runs saved before the pair layout existed
        model = {k: training.pop(k) for k in _FLAT_MODEL_KEYS if k in training}
        model.setdefault("rope", "1d")
        if "max_len" in training:
            training["max_row_tokens"] = model["max_seq_len"] = training.pop("max_len")
        training["model"] = model
        training["lora"] = {new: training.pop(old) for old, new in _FLAT_LORA_KEYS.items() if old in training}
        training.pop("extra", None)
    if training.get("init") is not None and isinstance(training.get("model"), dict):
        # the checkpoint decided the model; runs saved before the model flags were refused beside --init
        # recorded their values anyway, which validate() would now refuse
        training["model"] = {k: v for k, v in training["model"].items() if k == "grid_positions"}
    return build_config(TrainConfig, training)


def build_model(cfg: TrainConfig, device: torch.device, n_tasks: int = 0) -> tuple[Transformer, dict]:
    """The model to train, and the config.json entries that describe it. n_tasks: rows of the task
    embedding table (pair layout)."""
    if cfg.init is None:
        embeddings = cfg.layout == "pair" and cfg.task_embedding
        model = Transformer(replace(cfg.model, n_tasks=n_tasks if embeddings else 0, transform_embedding=embeddings))
        return model.to(device), {"model": asdict(model.cfg)}
    model, _, init_config = load_model(cfg.init, device)
    if "hf_import" in init_config and cfg.layout != "in_context":
        raise ValueError(f"{cfg.init} is a Hugging Face model (no task embeddings): train it with --layout in_context")
    if cfg.model.grid_positions and not model.cfg.grid_positions and cfg.lora.rank == 0:
        model.add_grid_positions()
        print(f"{cfg.init} has no grid position embeddings: added them, zero-initialised (--no-grid-positions keeps it plain)")
    described = {"model": asdict(model.cfg), **{k: v for k, v in init_config.items() if k == "hf_import"}}
    if cfg.lora.rank > 0:
        add_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets, cfg.lora.full_parameters)
        described.update(**base_reference(cfg.init, cfg.out), lora=asdict(cfg.lora))  # the base, relative to the run folder
        if cfg.lora_base_bf16 and device.type == "cuda":
            if cfg.precision == "fp32":
                raise ConfigError("--lora-base-bf16 needs bf16 autocast: drop --precision fp32")
            cast_frozen(model, torch.bfloat16)
    return model.to(device), described


@dataclass
class TrainingData:
    sampler: Sampler  # draws the training batches
    heldout_tasks: list[Task]  # the evaluated tasks, with their test outputs (for the eval loss only)
    task_ids: list[str]  # the task embedding table (pair layout; empty otherwise)
    n_train_tasks: int  # training tasks after the exclusions
    excluded: list[str]  # ids left out of the training tasks (evaluated, or copies of evaluated tasks)


def training_data(cfg: TrainConfig, rows: Rows, row_tokens: int) -> TrainingData:
    """The training rows' sampler and the evaluated tasks, as the configuration asks. The leak guard
    lives here: no evaluated task (by id or content) is a training task, and in the pair layout the
    evaluated tasks reach the sampler only through Task.without_test_outputs."""
    train_tasks, excluded = load_tasks(cfg.data, cfg.split), []
    if cfg.exclude_evaluated and cfg.exclude_evaluated != "none":
        data, _, split = cfg.exclude_evaluated.partition(":")
        train_tasks, excluded = exclude_overlap(train_tasks, load_tasks(data, split or "evaluation"))
    heldout_tasks = select_tasks(load_tasks(cfg.eval_data, cfg.eval_split), task_set=cfg.eval_set)
    if (cfg.eval_data, cfg.eval_split) == (cfg.data, cfg.split):
        # tasks held out of the training split itself (a dev set: --eval-split training --eval-set dev20)
        # leave the training tasks by id; any other copy of them is still refused below
        held = {t.id for t in heldout_tasks}
        excluded += sorted(held)
        train_tasks = [t for t in train_tasks if t.id not in held]
    check_no_leak(train_tasks, heldout_tasks)
    if cfg.layout == "pair":
        # the evaluated tasks as a test-time learner sees them: their test outputs are dropped here,
        # before the sampler (which refuses any task that still has one) can see them
        evaluated = [t.without_test_outputs() for t in heldout_tasks]
        sampler = PairSampler(train_tasks, evaluated, rows, row_tokens, cfg.seed, cfg.evaluated_share, cfg.input_loss,
                              cfg.augment, cfg.keep_background, cfg.max_examples, cfg.colour_maps)
        task_ids = sampler.task_ids
    else:
        sampler = InContextSampler(
            train_tasks, rows, row_tokens, cfg.seed, augment=cfg.augment, keep_background=cfg.keep_background,
            train_on_demo_outputs=cfg.train_on_demo_outputs, max_examples=cfg.max_examples,
            generated_fraction=cfg.generated_fraction,
        )
        task_ids = []
    return TrainingData(sampler, heldout_tasks, task_ids, len(train_tasks), excluded)


def format_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Run (or continue) training; returns the run folder holding the final checkpoint."""
    validate(cfg)  # every flag, before any work (each field's rule, TrainConfig.problems)
    out = Path(cfg.out)
    if resume:
        tidy(out)  # leftovers of a save that was interrupted
        checkpoint = checkpoint_dir(out)  # the newest complete checkpoint (CheckpointError naming the folder if none)
        state = load_train_state(checkpoint)  # refused now, before any work, when it cannot be resumed
        changes = resume_changes(saved_train_config(read_config(checkpoint), str(out)), cfg)  # refuses another architecture or data
    elif has_checkpoint(out):
        raise ConfigError(f"--out {out}: already holds a checkpoint: continue it with --resume, or choose another --out")
    world, device = distributed.setup(resolve_device(cfg.device, cfg.threads))
    log = print if world.is_main else lambda *args, **kwargs: None  # rank 0 speaks for the run
    amp_dtype = autocast_dtype(device, cfg.precision)
    seed_everything(cfg.seed)
    tokenizer = GridTokenizer()
    rows = make_rows(cfg.layout, tokenizer, cfg.colour_maps, cfg.keep_background)
    # the longest row: the flag, else the model's limit (the checkpoint's, when fine-tuning one)
    max_seq_len = model_config(cfg.init).max_seq_len if cfg.init else cfg.model.max_seq_len
    row_tokens = cfg.max_row_tokens or max_seq_len
    if row_tokens > max_seq_len:
        raise ConfigError(f"--max-row-tokens {row_tokens} exceeds the model's max_seq_len {max_seq_len}")

    data = training_data(cfg, rows, row_tokens)
    sampler, heldout_tasks, task_ids = data.sampler, data.heldout_tasks, data.task_ids
    task_index = {task_id: i for i, task_id in enumerate(task_ids)}
    eval_rows, eval_skipped = heldout_rows([e for t in heldout_tasks for e in t.examples()], rows, row_tokens, task_index)

    if cfg.init and read_config(cfg.init).get("task_ids", []) not in ([], task_ids):
        raise ConfigError(f"{cfg.init} was trained with another task table than this run's tasks (--eval-set, --data)")
    model, described = build_model(cfg, device, len(task_ids))
    model.activation_checkpointing = cfg.activation_checkpointing
    described["task_ids"] = task_ids
    model.train()
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    start_step, metrics = 0, {}
    if resume:
        model.load_state_dict(load_model(checkpoint, device)[0].state_dict())
        optimizer.load_state_dict(state["optimizer"])
        rng = state.get("torch_rng_ranks", [])  # each rank's own, saved by a data-parallel run of this size
        torch.set_rng_state(rng[world.rank] if len(rng) == world.size else state["torch_rng"])
        saved = read_config(checkpoint)
        if saved.get("task_ids", []) != task_ids:
            raise ConfigError(f"{out}: the checkpoint's task table differs from this run's tasks (changed --eval-set or data?)")
        start_step, metrics = state["step"], saved.get("metrics", {})
        described["resumed"] = saved.get("resumed", []) + [{"at_step": start_step, "changed": changes}]
        log(f"resumed from {checkpoint} at step {start_step}" + (f", changed: {changes}" if changes else ""))

    lora = cfg.lora.rank > 0
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"model: {model.num_params():,} parameters ({n_trainable:,} trained) on {device}, "
        f"autocast {amp_dtype or 'off (fp32)'}")
    log(f"data: {data.n_train_tasks} training tasks from {cfg.data}/{cfg.split} ({len(data.excluded)} excluded as evaluated or copies of "
        f"{cfg.exclude_evaluated} tasks: {' '.join(data.excluded[:8])}{' ...' if len(data.excluded) > 8 else ''}); eval loss on {len(eval_rows)} "
        f"test outputs of {cfg.eval_set} ({eval_skipped} longer than {row_tokens} tokens)")
    if world.launched:
        log(f"data-parallel: {world.size} ranks, {cfg.batch_size * cfg.grad_accum * world.size} rows per step")

    def save(step: int) -> None:
        rng = world.gather(torch.get_rng_state())  # every rank calls save; rank 0 writes
        if not world.is_main:
            return
        config = {**described, "training": asdict(cfg), "step": step, "metrics": metrics}
        state = {"optimizer": optimizer.state_dict(), "torch_rng": rng[0], **({"torch_rng_ranks": rng} if world.launched else {})}
        save_checkpoint(out, model, config, tokenizer, state, lora=lora)
        write_train_report(out)  # report.html (loss curves, throughput, config) and loss.svg

    # compiled, then wrapped in DDP (nanoGPT's order: compile's warm-up runs on each rank alone); shares
    # model's parameters, while model itself stays eager and unwrapped (rank 0's eval loss, the checkpoints)
    forward = world.wrap(maybe_compile(model, cfg.compile))
    run_log = None  # metrics.jsonl, written by rank 0
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        run_log = RunLog(out / "metrics.jsonl")
        run_log.start(start_step)  # lines past the checkpoint (logged before a kill) are dropped: each step is logged once

    saved_step = start_step if resume else None  # the run folder's newest checkpoint

    def diverged(step: int, what: str, value: float) -> DivergenceError:
        kept = "no checkpoint" if saved_step is None else f"its checkpoint of step {saved_step}"
        return DivergenceError(f"step {step}: the {what} is {value}: training diverged (try a lower --lr, or "
                               f"--grad-clip > 0); nothing non-finite was saved, {out} keeps {kept}")

    started, tokens_seen = time.time(), 0
    last_step = min(cfg.max_steps, cfg.stop_at_step or cfg.max_steps)
    for step in range(start_step, last_step):
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        set_lr(optimizer, lr)
        micro = [sampler.batch(i, cfg.batch_size) for i in world.micro_batches(step, cfg.grad_accum)]
        trained = [p for p in model.parameters() if p.requires_grad]
        loss_sum = optimizer_step(forward, optimizer, trained, micro, cfg.grad_clip, device, amp_dtype, world)
        if not math.isfinite(loss_sum):
            raise diverged(step + 1, "training loss", loss_sum)
        tokens_seen += sum(int((batch.inputs != PAD).sum()) for batch in micro)

        done = step + 1
        if done % cfg.log_every == 0 or done == last_step:
            elapsed = time.time() - started
            rate = world.sum(tokens_seen) / elapsed
            eta = elapsed / (done - start_step) * (last_step - done)
            log(f"step {done}/{cfg.max_steps} | loss {loss_sum:.4f} | lr {lr:.2e} | {rate:,.0f} tok/s | "
                f"elapsed {format_seconds(elapsed)} | eta {format_seconds(eta)} | skipped rows {sampler.skipped}", flush=True)
            if run_log:
                run_log.append({"step": done, "loss": loss_sum, "lr": lr, "tokens_per_s": rate, "elapsed_s": elapsed})
        if (done % cfg.eval_every == 0 or done == last_step) and world.is_main:
            metrics = {"eval_loss": output_token_loss(model, eval_rows, amp_dtype), "eval_step": done}
            if not math.isfinite(metrics["eval_loss"]):
                raise diverged(done, "eval loss", metrics["eval_loss"])
            print(f"step {done} | eval loss {metrics['eval_loss']:.4f} per output token on {cfg.eval_set}", flush=True)
            run_log.append({"step": done, "eval_loss": metrics["eval_loss"]})
        if done % cfg.save_every == 0 or done == last_step:
            save(done)
            saved_step = done
    if start_step >= last_step and not resume:
        save(start_step)  # e.g. --max-steps 0: an untrained checkpoint, the honest zero baseline
    if not world.same_weights(model):
        raise RuntimeError("data-parallel ranks ended with different weights (a rank diverged)")
    world.barrier()  # no rank leaves (to read the checkpoint, say) before rank 0 has written it
    log(f"saved checkpoint to {out}")
    return out

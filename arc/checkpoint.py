"""Checkpoints: what a run folder holds, written so that a crash never leaves a half-written file.

A checkpoint folder holds
    model.safetensors   the weights (full runs), or
    adapter.safetensors the LoRA A/B matrices only (LoRA runs; config.json names the base checkpoint)
    config.json         model config, training config, step and latest metrics
    tokenizer.json      the grid tokenizer (loads with tokenizers.Tokenizer.from_file)
    train_state.pt      optimizer and RNG state, for --resume (not needed to evaluate)

Every file is written to a temporary name, flushed to disk and renamed into place (arc.files), and
config.json is renamed last: a crash part-way leaves either the old or the new version of each file,
and the step recorded inside each file tells `load_train_state` whether they belong together.

`load_model` also takes a Hugging Face Llama folder (arc.hf imports it), so --init and a LoRA run's base
can name one.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from arc.files import atomic_write
from arc.hf import import_hf, is_hf_folder, model_config as hf_model_config
from arc.lora import LoRAConfig, add_lora, load_adapter, save_adapter
from arc.model import ModelConfig, Transformer
from arc.tokenizer import GridTokenizer


def save_checkpoint(
    folder: str | Path,
    model: Transformer,
    config: dict,
    tokenizer: GridTokenizer,
    train_state: dict | None = None,
    lora: bool = False,
) -> None:
    """config must hold "model" (ModelConfig fields) and "step"; train_state is optimizer/RNG state."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"step": str(config["step"])}
    if lora:
        save_adapter(model, str(folder / "adapter.safetensors"), meta)  # atomic too
    else:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write(folder / "model.safetensors", lambda p: save_file(weights, p, metadata=meta))
    atomic_write(folder / "tokenizer.json", lambda p: tokenizer.save(str(p)))
    if train_state is not None:
        atomic_write(folder / "train_state.pt", lambda p: torch.save({**train_state, "step": config["step"]}, p))
    text = json.dumps(config, indent=2)
    atomic_write(folder / "config.json", lambda p: p.write_text(text))


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder}: no config.json: not a checkpoint folder")
    return json.loads(path.read_text())


def weights_step(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return int(f.metadata()["step"])


def is_lora_run(config: dict) -> bool:
    """Whether a config.json describes a LoRA run (adapter.safetensors on top of the base it names)."""
    return "lora" in config


def model_config(folder: str | Path) -> ModelConfig:
    """The ModelConfig of a checkpoint folder (of its base, for a LoRA run). Checkpoints written before
    the model's sequence limit was named max_seq_len call it max_len."""
    if is_hf_folder(folder):
        return hf_model_config(read_config(folder))
    config = read_config(folder)
    if is_lora_run(config):
        return model_config(config["base"])
    fields = dict(config["model"])
    if "max_len" in fields:
        fields["max_seq_len"] = fields.pop("max_len")
    return ModelConfig(**fields)


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Transformer, GridTokenizer, dict]:
    """The model a checkpoint folder describes; a LoRA run folder loads its base and adds the adapter
    (unmerged: call arc.lora.merge_lora explicitly for faster inference); a Hugging Face Llama folder is
    imported (arc.hf), its config the import's description of it."""
    folder = Path(folder)
    if is_hf_folder(folder):
        model, tokenizer, config = import_hf(folder)
        return model.to(device), tokenizer, config
    config = read_config(folder)
    if is_lora_run(config):
        model, _, _ = load_model(config["base"], device)
        lora = config["lora"]
        full = LoRAConfig(train_embeddings=lora.get("train_embeddings", False)).full_parameters
        add_lora(model, lora["rank"], lora["alpha"], lora.get("dropout", 0.0), tuple(lora["targets"]), full)
        load_adapter(model, str(folder / "adapter.safetensors"))
    else:
        model = Transformer(model_config(folder))
        state = load_file(str(folder / "model.safetensors"))
        model.load_state_dict(state)
    model.to(device)
    tokenizer = GridTokenizer.load(str(folder / "tokenizer.json"))
    return model, tokenizer, config


def load_train_state(folder: str | Path) -> dict:
    """Optimizer/RNG state for --resume, checked to belong to the same step as the weights."""
    folder = Path(folder)
    config = read_config(folder)
    state = torch.load(folder / "train_state.pt", weights_only=False)
    weights = folder / ("adapter.safetensors" if is_lora_run(config) else "model.safetensors")
    steps = {"config.json": config["step"], "train_state.pt": state["step"], weights.name: weights_step(weights)}
    if len(set(steps.values())) != 1:
        raise RuntimeError(f"{folder}: checkpoint files are from different steps {steps} (interrupted save?)")
    return state


"""Checkpoints: complete or absent. A kill at any instant, or a full disk, never leaves a checkpoint
that mixes two steps, and nothing in a checkpoint is unpickled freely.

A run folder (the path given to --out, --resume, --checkpoint, --init and --adapter) keeps its
checkpoint in a step folder:

    run/
      step-000200/            the checkpoint, complete, or not there at all
        model.safetensors     the weights (full runs), or
        adapter.safetensors   the LoRA A/B matrices only (LoRA runs; config.json names the base checkpoint)
        config.json           model config, training config, step and latest metrics
        tokenizer.json        the grid tokenizer (loads with tokenizers.Tokenizer.from_file)
        train_state.pt        optimizer and RNG state, for --resume (not needed to evaluate)
      metrics.jsonl, report.html, loss.svg, eval-*/     the run's log and reports, outside the checkpoint

Saving writes every file into a fresh temporary folder (`.step-000200.<random>.tmp`), flushes each one
to disk, then renames the folder into place: that rename is the commit. Only after it are the previous
step folder, leftovers of interrupted saves and the files of the older flat layout removed. So a kill
leaves the previous checkpoint, the new one, or both (the newer is taken); a failed save (a full disk)
removes its temporary folder and says which checkpoint was kept.

Reading (`checkpoint_dir`) takes the newest step folder. A folder written before step folders existed
(the files directly in the run folder, like the shipped checkpoints/base) is read as it is, and a
resumed flat run is saved in the new layout. Each weights and state file records its step, and a
checkpoint whose files disagree is refused with a message naming it, as is a file that cannot be read.

train_state.pt holds tensors and plain values only, and is loaded with torch.load(weights_only=True):
a crafted file cannot run code. A LoRA run's base is recorded relative to the run folder (and
absolutely, as a second choice), with its step: the adapter is refused on a base that has moved on.

`load_model` also takes a Hugging Face Llama folder (arc.model.hf imports it), so --init and a LoRA run's base
can name one.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_weights

from arc.data.tokenizer import GridTokenizer
from arc.infra.errors import CheckpointError, DivergenceError
from arc.infra.files import fsync_dir, json_text
from arc.model.config import LoRAConfig, ModelConfig
from arc.model.hf import import_hf, is_hf_folder
from arc.model.hf import model_config as hf_model_config
from arc.model.lora import add_lora, load_adapter, lora_state_dict
from arc.model.transformer import Transformer

STEP_FOLDER = re.compile(r"^step-(\d+)(?:-(\d+))?$")  # step-000200, or step-000200-2 when a same-step folder exists
FLAT_FILES = ("model.safetensors", "adapter.safetensors", "config.json", "tokenizer.json", "train_state.pt")


# --------------------------------------------------------------------------------------------------
# Finding the checkpoint of a folder
# --------------------------------------------------------------------------------------------------


def step_folders(run: str | Path) -> list[Path]:
    """The complete checkpoints (step folders) of a run folder, oldest first."""
    run = Path(run)
    if not run.is_dir():
        return []
    found = []
    for path in run.iterdir():
        match = STEP_FOLDER.match(path.name)
        if match and path.is_dir():
            found.append(((int(match[1]), int(match[2] or 1)), path))
    return [path for _, path in sorted(found)]


def checkpoint_dir(folder: str | Path) -> Path:
    """The folder holding the checkpoint files that `folder` names: its newest step folder, or folder
    itself when it holds config.json (a step folder, or a run saved in the flat layout)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    steps = step_folders(folder)
    if steps:
        return steps[-1]
    if (folder / "config.json").is_file():
        return folder
    raise CheckpointError(f"{folder}: no checkpoint here (no step-* folder and no config.json): "
                          "not a checkpoint folder, or a run killed before its first save")


def has_checkpoint(folder: str | Path) -> bool:
    folder = Path(folder)
    return bool(step_folders(folder)) or (folder / "config.json").is_file()


def run_folder(checkpoint: str | Path) -> Path:
    """The run folder a checkpoint folder belongs to (the parent of a step folder)."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent if STEP_FOLDER.match(checkpoint.name) else checkpoint


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: no {path.name}: not a checkpoint folder") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_config(folder: str | Path) -> dict:
    """The config.json of the checkpoint a folder names (see checkpoint_dir)."""
    return _read_json(checkpoint_dir(folder) / "config.json")


def is_lora_run(config: dict) -> bool:
    """Whether a config.json describes a LoRA run (adapter.safetensors on top of the base it names)."""
    return "lora" in config


def weights_step(path: Path) -> int | None:
    """The step a weights file records in its metadata (None when it records none)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            step = (f.metadata() or {}).get("step")
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: no {path.name}: incomplete checkpoint") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    return None if step is None else int(step)


# --------------------------------------------------------------------------------------------------
# A LoRA run's base
# --------------------------------------------------------------------------------------------------


def base_reference(base: str | Path, run: str | Path) -> dict:
    """config.json entries naming a LoRA run's base: relative to the run folder (so the pair of folders
    can move together, and the adapter loads from any working directory), absolute, and its step."""
    base, run = Path(base), Path(run)
    return {"base": os.path.relpath(base.resolve(), run.resolve()), "base_from": "run folder",
            "base_absolute": str(base.resolve()), "base_step": read_config(base).get("step")}


def adapter_base(folder: str | Path) -> Path:
    """The base checkpoint folder a LoRA run folder names, resolved. Its path is relative to the run
    folder; configs written before that was so name it relative to the working directory."""
    checkpoint = checkpoint_dir(folder)
    config = _read_json(checkpoint / "config.json")
    if not is_lora_run(config) or "base" not in config:
        raise CheckpointError(f"{folder}: not a LoRA run folder (its config.json names no base checkpoint)")
    run, base = run_folder(checkpoint), Path(config["base"])
    if config.get("base_from") == "run folder":
        candidates = [run / base, Path(config.get("base_absolute", run / base))]
    else:
        candidates = [base, run / base]
    for candidate in candidates:
        if candidate.is_dir():
            return Path(os.path.normpath(candidate))
    raise CheckpointError(f"{folder}: its base checkpoint {config['base']!r} is not found "
                          f"(tried {', '.join(str(c) for c in candidates)})")


# --------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> None:
    """Write one file of a checkpoint (inside its temporary folder) and flush it to disk. Every file is
    serialised in memory first and written here by Python, so a full disk is an OSError (ENOSPC) rather
    than torch's "unexpected pos" or a safetensors error."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _commit(tmp: Path, final: Path) -> None:
    """The instant the new checkpoint exists: its complete folder renamed into place."""
    os.rename(tmp, final)
    fsync_dir(final.parent)


def _free_name(run: Path, step: int) -> Path:
    name, n = f"step-{step:06d}", 1
    while (run / name).exists():  # only when a checkpoint of this very step exists: never overwritten
        n += 1
        name = f"step-{step:06d}-{n}"
    return run / name


def _remove_leftovers(run: Path, keep: Path | None = None) -> None:
    """Temporary folders and files of interrupted saves; with keep (the checkpoint just committed), also
    every other step folder and the files of the flat layout, which keep supersedes."""
    for path in run.iterdir():
        if path.name.startswith(".step-") and path.name.endswith(".tmp"):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.endswith(".tmp") and path.is_file():
            path.unlink(missing_ok=True)  # e.g. a file of the flat layout's atomic writes
        elif keep is not None and path != keep and STEP_FOLDER.match(path.name) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif keep is not None and path.name in FLAT_FILES and path.is_file():
            path.unlink(missing_ok=True)


def _describe_kept(run: Path) -> str:
    try:
        return f"the checkpoint of step {read_config(run).get('step')}"
    except CheckpointError:
        return "no complete checkpoint"


def tidy(run: str | Path) -> None:
    """Remove what interrupted saves left in a run folder: temporary folders, and step folders older than
    its newest (a kill between a commit and its clean-up). A resume calls it before anything else."""
    run = Path(run)
    if step_folders(run):
        _remove_leftovers(run, keep=step_folders(run)[-1])


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_checkpoint(
    folder: str | Path,
    model: Transformer,
    config: dict,
    tokenizer: GridTokenizer,
    train_state: dict | None = None,
    lora: bool = False,
) -> Path:
    """Save a complete checkpoint of run folder `folder` as its new newest step folder (returned).
    config must hold "model" (ModelConfig fields) and "step"; train_state is optimizer/RNG state
    (tensors and plain values). Non-finite weights are refused: they would only spread."""
    run = Path(folder)
    run.mkdir(parents=True, exist_ok=True)
    step = int(config["step"])
    if lora:
        weights, name = {k: v.contiguous().cpu() for k, v in lora_state_dict(model).items()}, "adapter.safetensors"
        if not weights:
            raise ValueError("save_checkpoint(lora=True): the model has no LoRA modules")
    else:
        weights, name = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, "model.safetensors"
    bad = _non_finite(weights)
    if bad:
        raise DivergenceError(f"step {step}: {len(bad)} weight tensor(s) hold NaN or infinity (e.g. {bad[0]}): "
                              f"not saved; {run} keeps its last finite checkpoint")
    files = {name: save_weights(weights, metadata={"step": str(step)}),
             "tokenizer.json": tokenizer.tokenizer.to_str(pretty=True).encode()}
    if train_state is not None:
        buffer = io.BytesIO()
        torch.save({**train_state, "step": step}, buffer)
        files["train_state.pt"] = buffer.getvalue()
    files["config.json"] = json_text(config, indent=2).encode()  # last: the order a reader of the old layout relied on
    _remove_leftovers(run)
    tmp = run / f".step-{step:06d}.{uuid.uuid4().hex}.tmp"
    tmp.mkdir()
    try:
        for file, data in files.items():
            _write(tmp / file, data)
        fsync_dir(tmp)
        final = _free_name(run, step)
        _commit(tmp, final)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError):
            kept = _describe_kept(run)
            cause = "disk full" if error.errno == errno.ENOSPC else f"{type(error).__name__}: {error}"
            raise CheckpointError(f"{cause} while saving the checkpoint of step {step} to {run}: "
                                  f"nothing of it was kept; the folder still holds {kept}") from error
        raise
    _remove_leftovers(run, keep=final)
    return final


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _model_config(config: dict, where: Path) -> ModelConfig:
    """The ModelConfig a (full run's) config.json records. Checkpoints written before the model's
    sequence limit was named max_seq_len call it max_len, and those written before 3-D RoPE have no rope."""
    fields = dict(config.get("model") or {})
    if "max_len" in fields:
        fields["max_seq_len"] = fields.pop("max_len")
    fields.setdefault("rope", "1d")  # written before 3-D RoPE existed (ModelConfig's default since): Llama's 1-D RoPE
    try:
        return ModelConfig(**fields)
    except TypeError as e:
        raise CheckpointError(f"{where}/config.json: its 'model' entry is not a model config ({e})") from None


def model_config(folder: str | Path) -> ModelConfig:
    """The ModelConfig of a checkpoint folder (of its base, for a LoRA run; imported, for a Hugging Face
    Llama folder)."""
    if is_hf_folder(folder):
        return hf_model_config(_read_json(Path(folder) / "config.json"))
    checkpoint = checkpoint_dir(folder)
    config = _read_json(checkpoint / "config.json")
    if is_lora_run(config):
        return model_config(adapter_base(checkpoint))
    return _model_config(config, checkpoint)


def _check_steps(checkpoint: Path, config: dict, files: dict[str, int | None]) -> None:
    steps = {"config.json": config.get("step"), **{k: v for k, v in files.items() if v is not None}}
    if len(set(steps.values())) != 1:
        raise CheckpointError(f"{checkpoint}: checkpoint files are from different steps {steps} "
                              "(an interrupted save of the older layout?): refused")


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Transformer, GridTokenizer, dict]:
    """The model a checkpoint folder describes; a LoRA run folder loads its base and adds the adapter
    (unmerged: call arc.model.lora.merge_lora explicitly for faster inference); a Hugging Face Llama folder is
    imported (arc.model.hf), its config the import's description of it."""
    if is_hf_folder(folder):
        model, tokenizer, config = import_hf(Path(folder))
        return model.to(device), tokenizer, config
    checkpoint = checkpoint_dir(folder)
    config = _read_json(checkpoint / "config.json")
    if is_lora_run(config):
        base = adapter_base(checkpoint)
        model, _, base_config = load_model(base, device)
        if config.get("base_step") is not None and base_config.get("step") != config["base_step"]:
            raise CheckpointError(f"{checkpoint}: its adapter was trained on {base} at step {config['base_step']}, "
                                  f"but {base} is now at step {base_config.get('step')}")
        lora = config["lora"]
        full = LoRAConfig(train_embeddings=lora.get("train_embeddings", False)).full_parameters
        add_lora(model, lora["rank"], lora["alpha"], lora.get("dropout", 0.0), tuple(lora["targets"]), full)
        weights = checkpoint / "adapter.safetensors"
        step = weights_step(weights)
        try:
            load_adapter(model, str(weights))
        except Exception as e:  # noqa: BLE001 - wrong keys or shapes (ValueError), a damaged file (safetensors' error)
            raise CheckpointError(f"{weights}: does not fit its base {base}: {e}") from None
    else:
        model = Transformer(_model_config(config, checkpoint))
        weights = checkpoint / "model.safetensors"
        step = weights_step(weights)
        try:
            state = load_file(str(weights))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            detail = " ".join(str(e).split())
            raise CheckpointError(f"{weights}: does not match the model its config.json describes: {detail[:300]}") from None
    _check_steps(checkpoint, config, {weights.name: step})
    model.to(device)
    try:
        tokenizer = GridTokenizer.load(str(checkpoint / "tokenizer.json"))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises its own exception type
        raise CheckpointError(f"{checkpoint / 'tokenizer.json'}: unreadable ({e})") from None
    return model, tokenizer, config


def load_train_state(folder: str | Path) -> dict:
    """Optimizer/RNG state for --resume, checked to belong to the same step as the weights. Loaded with
    weights_only=True: tensors and plain values only, so a crafted file cannot run code."""
    checkpoint = checkpoint_dir(folder)
    config = _read_json(checkpoint / "config.json")
    path = checkpoint / "train_state.pt"
    if not path.is_file():
        raise CheckpointError(f"{checkpoint}: no train_state.pt: this checkpoint cannot be resumed "
                              "(it can be evaluated, or fine-tuned with --init)")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - an unpickling error, a truncated file, ...
        # torch's message is paragraphs of advice (among it: retry with weights_only=False, which is what
        # must not happen here); keep the line that says what the file holds
        lines = [line for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if "GLOBAL" in line or "global" in line), lines[0] if lines else "")
        raise CheckpointError(f"{path}: refused, not a train state this program wrote (loaded with "
                              f"weights_only=True, which runs no code): {type(e).__name__}: {detail[:200]}") from None
    if not isinstance(state, dict) or not {"optimizer", "torch_rng", "step"} <= state.keys():
        raise CheckpointError(f"{path}: not a train state (expected optimizer, torch_rng and step)")
    weights = checkpoint / ("adapter.safetensors" if is_lora_run(config) else "model.safetensors")
    _check_steps(checkpoint, config, {"train_state.pt": state["step"], weights.name: weights_step(weights)})
    return state

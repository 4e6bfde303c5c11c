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
      .train.lock             flocked by the trainer writing the folder: one trainer per folder
                              (arc.training.run_folder)

Saving writes every file into a fresh temporary folder (`.step-000200.<random>.tmp`), flushes each one
to disk, then renames the folder into place: that rename is the commit. Only after it are the previous
step folder and leftovers of interrupted saves removed. So a kill leaves the previous checkpoint, the new
one, or both (the newer is taken); a failed save (a full disk) removes its temporary folder and says
which checkpoint was kept.

Reading (`checkpoint_dir`) takes the newest step folder of a run folder (a step folder may also be named
directly). Each weights and state file records its step, and a checkpoint whose files disagree is
refused with a message naming it, as is a file that cannot be read. Nothing a checkpoint says is trusted
before it is checked (arc.model.schema): config.json is read with a size cap and checked value by value by
the configs' own rules, the model's size is compared with the device's free memory before anything is
allocated, the weights' names and shapes are compared with the model's from the file's header before any
tensor is read, and weights holding NaN or infinity are refused naming the file and the tensor. The
trainer opens its run folder through arc.training.run_folder.RunFolder: one trainer per folder (a lock),
where a resumed run starts from, and where its checkpoints go.

train_state.pt holds tensors and plain values only, and is loaded with torch.load(weights_only=True):
a crafted file cannot run code. A LoRA run's base is recorded relative to the run folder (and
absolutely, as a second choice), with its step: the adapter is refused on a base that has moved on.

`load_model` also takes a Hugging Face Llama folder (arc.model.hf imports it), so --init and a LoRA run's base
can name one; a folder that is neither ours nor a Hugging Face Llama is refused by name.
"""
from __future__ import annotations

import errno
import io
import os
import re
import shutil
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as save_weights
from tokenizers import Tokenizer

from arc.data.tokenizer import GridTokenizer
from arc.infra.config import build_config
from arc.infra.errors import CheckpointError
from arc.infra.files import fsync_dir, json_text, read_capped, regular_file
from arc.model.config import LoRAConfig, ModelConfig
from arc.model.hf import hf_model_config, import_hf, is_hf_folder
from arc.model.lora import add_lora, fold_lora, load_adapter, lora_state_dict
from arc.model.rope import rope_table
from arc.model.schema import (
    MAX_TOKENIZER_BYTES,
    check_config,
    check_fits,
    hf_name,
    is_hugging_face,
    model_name,
    read_config_file,
)
from arc.model.transformer import Transformer

STEP_FOLDER = re.compile(r"^step-(\d+)(?:-(\d+))?$")  # step-000200, or step-000200-2 when a same-step folder exists


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
    itself when it holds config.json (a step folder named directly)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    steps = step_folders(folder)
    if steps:
        return steps[-1]
    if (folder / "config.json").exists():  # a config.json that is no regular file is refused by name when read
        return folder
    raise CheckpointError(f"{folder}: no checkpoint here (no step-* folder and no config.json): "
                          "not a checkpoint folder, or a run killed before its first save")


def has_checkpoint(folder: str | Path) -> bool:
    folder = Path(folder)
    return bool(step_folders(folder)) or (folder / "config.json").exists()


def run_folder(checkpoint: str | Path) -> Path:
    """The run folder a checkpoint folder belongs to (the parent of a step folder)."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent if STEP_FOLDER.match(checkpoint.name) else checkpoint


def _read_json(path: Path) -> dict:
    """A checkpoint's config.json, read with a size cap and checked value by value (arc.model.schema: a Hugging
    Face model's is checked when it is imported; a folder that is neither is refused by name)."""
    return check_config(read_config_file(path), path)


def read_config(folder: str | Path) -> dict:
    """The config.json of the checkpoint a folder names (see checkpoint_dir)."""
    return _read_json(checkpoint_dir(folder) / "config.json")


def is_lora_run(config: dict) -> bool:
    """Whether a config.json describes a LoRA run (adapter.safetensors on top of the base it names)."""
    return "lora" in config


def weights_step(path: Path) -> int | None:
    """The step a weights file records in its metadata (None when it records none)."""
    try:
        os.close(regular_file(path))  # a FIFO or a device named model.safetensors would hang or never end
        with safe_open(str(path), framework="pt") as f:
            step = (f.metadata() or {}).get("step")
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: no {path.name}: incomplete checkpoint") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if step is None:
        return None
    if not step.isdigit():
        raise CheckpointError(f"{path}: its metadata's step {step[:40]!r} is not a step number")
    return int(step)


# --------------------------------------------------------------------------------------------------
# A LoRA run's base
# --------------------------------------------------------------------------------------------------


def base_reference(base: str | Path, run: str | Path) -> dict:
    """config.json entries naming a LoRA run's base: relative to the run folder (so the pair of folders
    can move together, and the adapter loads from any working directory), absolute, and its step."""
    base, run = Path(base), Path(run)
    return {"base": os.path.relpath(base.resolve(), run.resolve()),
            "base_absolute": str(base.resolve()), "base_step": read_config(base).get("step")}


def adapter_base(folder: str | Path) -> Path:
    """The base checkpoint folder a LoRA run folder names, resolved: its path relative to the run folder,
    else its absolute path."""
    checkpoint = checkpoint_dir(folder)
    config = _read_json(checkpoint / "config.json")
    if not is_lora_run(config) or "base" not in config:
        raise CheckpointError(f"{folder}: not a LoRA run folder (its config.json names no base checkpoint)")
    run, base = run_folder(checkpoint), Path(config["base"])
    candidates = [run / base, Path(config.get("base_absolute", run / base))]
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
    every other step folder, which keep supersedes."""
    for path in run.iterdir():
        if path.name.startswith(".step-") and path.name.endswith(".tmp"):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.endswith(".tmp") and path.is_file():
            path.unlink(missing_ok=True)  # a file of an interrupted atomic write
        elif keep is not None and path != keep and STEP_FOLDER.match(path.name) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


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


BEYOND = 2.0**64  # above this a weight's square overflows fp32 (3.4e38): RMSNorm and AdamW turn it into inf


def unusable(tensor: torch.Tensor) -> bool:
    """Whether a weight tensor holds NaN, infinity or values beyond BEYOND."""
    return tensor.is_floating_point() and not bool((tensor.detach().float().abs() < BEYOND).all())


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the tensors holding NaN, infinity or values beyond BEYOND: weights no model computes
    with (a stream that large makes RMSNorm's mean square infinite, and its output 0 or NaN), even where
    the loss happens to stay finite."""
    return [k for k, v in tensors.items() if unusable(v)]


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
    (tensors and plain values). A trainer saves through arc.training.run_folder.RunFolder, which refuses
    weights that diverged first."""
    run = Path(folder)
    run.mkdir(parents=True, exist_ok=True)
    step = int(config["step"])
    if lora:
        weights, name = {k: v.contiguous().cpu() for k, v in lora_state_dict(model).items()}, "adapter.safetensors"
        if not weights:
            raise ValueError("save_checkpoint(lora=True): the model has no LoRA modules")
    else:
        weights, name = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, "model.safetensors"
    files = {name: save_weights(weights, metadata={"step": str(step)}),
             "tokenizer.json": tokenizer.tokenizer.to_str(pretty=True).encode()}
    if train_state is not None:
        buffer = io.BytesIO()
        torch.save({**train_state, "step": step}, buffer)
        files["train_state.pt"] = buffer.getvalue()
    files["config.json"] = json_text(config, indent=2).encode()
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


def _model_config(config: dict) -> ModelConfig:
    """The ModelConfig a run's config.json records (its values checked when it was read)."""
    return build_config(ModelConfig, config["model"])


def _check_steps(checkpoint: Path, config: dict, files: dict[str, int | None]) -> None:
    steps = {"config.json": config.get("step"), **{k: v for k, v in files.items() if v is not None}}
    if len(set(steps.values())) != 1:
        raise CheckpointError(f"{checkpoint}: checkpoint files are from different steps {steps} "
                              "refused")


def _refuse_non_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Weights that hold NaN or infinity (a diverged run saved by another program, a damaged file), or
    values beyond any a model computes with, refused at load time naming the file and the tensor: they would
    only show up later as a NaN eval loss, or as a model that scores 0 while it seems to work."""
    if bad := _non_finite(tensors):
        raise CheckpointError(f"{path}: tensor {bad[0]} holds NaN, infinity or values beyond {BEYOND:.1e}"
                              + (f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else "") + ": refused")


def _read_weights(path: Path, model: Transformer) -> dict[str, torch.Tensor]:
    """model.safetensors as the state dict of model: its tensor names and shapes compared with the
    model's from the file's header before any tensor is read, then each tensor read and checked finite."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            differ = sorted(set(expected) ^ set(shapes)) + sorted(k for k in expected.keys() & shapes.keys()
                                                                    if expected[k] != shapes[k])
            if differ:
                detail = ", ".join(f"{k} (file {shapes.get(k)}, model {expected.get(k)})" for k in differ[:4])
                raise CheckpointError(f"{path}: does not match the model its config.json describes: {len(differ)} "
                                      f"tensor(s) differ: {detail}")
            state = {k: f.get_tensor(k) for k in shapes}
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    _refuse_non_finite(path, state)
    if wrong := [k for k, v in state.items() if not v.is_floating_point()]:
        raise CheckpointError(f"{path}: tensor {wrong[0]} holds {state[wrong[0]].dtype} values, not weights")
    # weights saved in another precision (bf16, fp16) are held in the model's (fp32), as a copy into it would
    return {k: v.to(dtypes[k]) for k, v in state.items()}


def _read_tokenizer(path: Path) -> GridTokenizer:
    try:
        return GridTokenizer(Tokenizer.from_str(read_capped(path, MAX_TOKENIZER_BYTES).decode("utf-8")))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises its own exception type
        raise CheckpointError(f"{path}: unreadable ({e})") from None


def _load_hf(folder: Path, device: torch.device) -> tuple[Transformer, GridTokenizer, dict]:
    """A Hugging Face Llama folder, imported (arc.model.hf) once its config.json is checked and the model it
    describes is known to fit."""
    try:
        cfg = hf_model_config(folder)
        check_fits(cfg, device, folder / "config.json", hf_name)
        model, tokenizer, config = import_hf(folder)
    except ValueError as e:  # what the import refuses: a key, another architecture, a tokenizer, a tensor
        raise CheckpointError(str(e)) from None
    return model.to(device), tokenizer, config


def _load_lora(checkpoint: Path, config: dict, device: torch.device) -> tuple[Transformer, Path, int | None]:
    """A LoRA run: its base (loaded, with any adapter of its own folded in: adapters do not stack) and its
    adapter, unmerged; returns the model, the adapter file and the step it records."""
    base = adapter_base(checkpoint)
    model, _, base_config = load_model(base, device)
    if config.get("base_step") is not None and base_config.get("step") != config["base_step"]:
        raise CheckpointError(f"{checkpoint}: its adapter was trained on {base} at step {config['base_step']}, "
                              f"but {base} is now at step {base_config.get('step')}")
    fold_lora(model)  # a base that is itself a LoRA run: its adapter merged for good
    lora = build_config(LoRAConfig, config["lora"])
    add_lora(model, lora.rank, lora.alpha, lora.dropout, lora.targets, lora.full_parameters)
    weights = checkpoint / "adapter.safetensors"
    step = weights_step(weights)  # and a readable regular file
    try:
        load_adapter(model, str(weights))
    except Exception as e:  # noqa: BLE001 - wrong keys or shapes (ValueError), a damaged file (safetensors' error)
        raise CheckpointError(f"{weights}: does not fit its base {base}: {e}") from None
    _refuse_non_finite(weights, lora_state_dict(model))
    return model, weights, step


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Transformer, GridTokenizer, dict]:
    """The model a checkpoint folder describes; a LoRA run folder loads its base and adds the adapter
    (unmerged: call arc.model.lora.merge_lora explicitly for faster inference); a Hugging Face Llama folder is
    imported (arc.model.hf), its config the import's description of it. Every value of config.json is
    checked, and the model's size against the device's free memory, before the model is built
    (arc.model.schema); weights holding NaN or infinity are refused. A run folder still being trained into
    is read at a consistent step (open_checkpoint)."""
    return open_checkpoint(folder, device)[1:]


LIVE_RETRIES = 20  # step folders a reader may see superseded in a row (a trainer saving at every step)


def open_checkpoint(folder: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[Path, Transformer, GridTokenizer, dict]:
    """load_model(folder), and the step folder it read (folder itself for a step folder named directly or a
    Hugging Face folder). A trainer saving into a run folder commits a newer step folder and only then
    deletes the older one, possibly the one being read: a read that fails (a file gone, the folder gone)
    while a newer step folder has appeared is retried on that one. A step folder that is still the newest
    keeps its error (an incomplete or damaged checkpoint)."""
    folder, device = Path(folder), torch.device(device)
    if is_hf_folder(folder):
        return (folder, *_load_hf(folder, device))
    retries = 0
    while True:
        checkpoint = checkpoint_dir(folder)
        try:
            return (checkpoint, *_load_checkpoint(checkpoint, device))
        except CheckpointError:
            retries += 1
            if retries > LIVE_RETRIES or not _superseded(folder, checkpoint):
                raise


def _superseded(folder: Path, checkpoint: Path) -> bool:
    """Whether the run folder's newest step folder is no longer `checkpoint` (a trainer saved meanwhile)."""
    try:
        return checkpoint_dir(folder) != checkpoint
    except CheckpointError:
        return False


def _load_checkpoint(checkpoint: Path, device: torch.device) -> tuple[Transformer, GridTokenizer, dict]:
    """load_model of one step folder (or a folder holding config.json)."""
    config = _read_json(checkpoint / "config.json")
    if is_hugging_face(config):  # a Hugging Face folder's step folder, say
        return _load_hf(checkpoint, device)
    if is_lora_run(config):
        model, weights, step = _load_lora(checkpoint, config, device)
    else:
        cfg = _model_config(config)
        check_fits(cfg, device, checkpoint / "config.json", model_name)
        with torch.device("meta"):  # no random initialisation of weights that are about to be replaced
            model = Transformer(cfg)
        weights = checkpoint / "model.safetensors"
        step = weights_step(weights)  # and a readable regular file, before safetensors opens it
        model.load_state_dict(_read_weights(weights, model), assign=True)
        model.rope_cos, model.rope_sin = rope_table(cfg)  # the RoPE tables are not weights: computed for real
    _check_steps(checkpoint, config, {weights.name: step})
    model.to(device)
    return model, _read_tokenizer(checkpoint / "tokenizer.json"), config


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
        os.close(regular_file(path))  # a FIFO or a device would hang torch.load or never end
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

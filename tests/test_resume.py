"""Training that survives failures: a save that fails at any write (or on a full disk) is resumed to the
uninterrupted run's exact weights and log; a resume refuses another architecture; a diverging run stops
without saving NaN; a flat-layout run resumes into step folders; a LoRA run's base is found from anywhere;
a fine-tune of a LoRA run starts from what it computes; a model too large for the machine is refused first."""
import errno
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import SMALL, failing_at
from safetensors.torch import load_file

from arc.infra.errors import CheckpointError, ConfigError, DivergenceError
from arc.model.checkpoint import checkpoint_dir, load_model, read_config, step_folders
from arc.model import schema
from arc.model.config import LoRAConfig, ModelConfig
from arc.model.lora import LoRALinear, merge_lora
from arc.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture
def config(tiny_train_config):
    """4 steps, a checkpoint every 2, a log line every step."""
    return lambda out, **kw: tiny_train_config(out, **{"model": SMALL, "max_steps": 4, "save_every": 2, "log_every": 1, **kw})


def final_weights(run) -> dict:
    return load_file(str(checkpoint_dir(run) / "model.safetensors"))


def log_lines(run, evals: bool = True) -> list[tuple]:
    """metrics.jsonl without the wall-clock fields: (step, loss, lr, eval_loss) per line (the closing line
    of where a session's time went is wall clock alone)."""
    lines = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    lines = [r for r in lines if "time_s" not in r]
    return [tuple(r.get(k) for k in ("step", "loss", "lr", "eval_loss")) for r in lines if evals or "loss" in r]


def assert_same_run(a, b, evals: bool = True) -> None:
    """Bitwise-equal final weights, and each step logged once with the same values (evals=False: the
    training lines only, for a run whose early stop measured an extra eval loss)."""
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert log_lines(a, evals) == log_lines(b, evals)


# the save of step 4 (the second save) failing at each of its writes (4 per save), at its commit and
# at the clean-up after it; plus a full disk
FAULTS = [("write", 4, KeyboardInterrupt), ("write", 5, KeyboardInterrupt), ("write", 6, KeyboardInterrupt),
          ("write", 7, KeyboardInterrupt), ("commit", 1, KeyboardInterrupt), ("cleanup", 1, KeyboardInterrupt),
          ("write", 4, OSError(errno.ENOSPC, "No space left on device"))]


@pytest.mark.parametrize("point,n,error", FAULTS, ids=[f"{p}{n}-{getattr(e, '__name__', 'ENOSPC')}" for p, n, e in FAULTS])
def test_a_failed_save_then_resume_equals_the_uninterrupted_run(config, monkeypatch, point, n, error):
    whole = train(config("whole"))
    failing_at(monkeypatch, point, n, error)
    if error is KeyboardInterrupt:
        monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # as after a kill: nothing cleaned up
    with pytest.raises(CheckpointError if isinstance(error, OSError) else KeyboardInterrupt) as raised:
        train(config("cut"))
    if isinstance(error, OSError):
        assert "disk full while saving the checkpoint of step 4" in str(raised.value)
        assert "still holds the checkpoint of step 2" in str(raised.value)
    monkeypatch.undo()
    assert read_config(config("cut").out)["step"] == (4 if point == "cleanup" else 2)
    resumed = train(config("cut"), resume=True)
    assert_same_run(whole, resumed)
    assert [p.name for p in step_folders(resumed)] == ["step-000004"]
    assert not [p for p in resumed.iterdir() if p.name.endswith(".tmp")]


def test_resume_refuses_a_changed_architecture_and_a_fresh_run_over_a_checkpoint(config):
    out = train(config("run", stop_at_step=2))
    with pytest.raises(ConfigError, match=r"refused changes: --n-heads 2 -> 1"):
        train(replace(config("run"), model=replace(SMALL, n_heads=1)), resume=True)
    with pytest.raises(ConfigError, match="already holds a checkpoint: continue it with --resume"):
        train(config("run"))
    assert read_config(out)["step"] == 2  # untouched
    state_file = checkpoint_dir(out) / "train_state.pt"
    state = torch.load(state_file, weights_only=True)
    torch.save({**state, "torch_rng": torch.zeros(3, dtype=torch.uint8)}, state_file)  # another run's, or crafted
    with pytest.raises(CheckpointError, match=rf"{state_file}: does not fit the run it resumes \(RuntimeError: Expected"):
        train(config("run"), resume=True)


def test_divergence_stops_without_saving_non_finite_weights(config):
    with pytest.raises(DivergenceError, match=r"step \d+: .* training diverged"):
        train(config("nan", lr=1e30, grad_clip=0.0, warmup_steps=0, max_steps=6, save_every=1))
    out = Path(config("nan").out)
    for folder in step_folders(out):  # whatever was saved before the divergence is finite
        assert all(torch.isfinite(t).all() for t in load_file(str(folder / "model.safetensors")).values())
        json.loads((folder / "config.json").read_text(), parse_constant=pytest.fail)  # no NaN in JSON
    for line in (out / "metrics.jsonl").read_text().splitlines():
        assert all(v is None or not isinstance(v, float) or math.isfinite(v) for v in json.loads(line).values())


def test_a_lora_run_finds_its_base_from_any_working_directory(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(replace(config("base", max_steps=1), out="runs/base"))
    train(replace(config("lora", init="runs/base", model=ModelConfig(), lora=LoRAConfig(rank=2), max_steps=1), out="runs/lora"))
    assert read_config("runs/lora")["base"] == "../base"  # relative to the run folder, not to the working directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model, _, _ = load_model("../runs/lora")
    assert sum("lora_" in name for name, _ in model.named_parameters()) == 2 * 7 * SMALL.n_layers
    monkeypatch.chdir(tmp_path)
    train(replace(config("base", max_steps=2), out="runs/base"), resume=True)  # the base moves on to step 2
    with pytest.raises(CheckpointError, match=r"trained on runs/base at step 1, but runs/base is now at step 2"):
        load_model("runs/lora")


def test_a_fine_tune_of_a_lora_run_starts_from_what_it_computes(config, tmp_path):
    """--init on a LoRA run: its adapter is folded into its base. A full fine-tune (0 steps here) saves a plain
    checkpoint that loads (and evaluates) as the LoRA run merged; a new adapter goes on the folded model, and
    loads again from its run folder (adapters do not stack)."""
    train(config("base", max_steps=1))
    lora = train(config("lora", init=config("base").out, model=ModelConfig(), lora=LoRAConfig(rank=2), max_steps=2, lr=1e-2))
    merged, _, _ = load_model(lora)
    merge_lora(merged)
    full = train(config("full", init=str(lora), model=ModelConfig(), max_steps=0))
    folded, _, saved = load_model(full)
    assert "lora" not in saved and not any(isinstance(m, LoRALinear) for m in folded.modules())
    tokens = torch.tensor([[13, 11, 1, 2, 10, 12, 3, 10, 14]])
    with torch.no_grad():
        assert torch.equal(folded.eval()(tokens), merged.eval()(tokens))
    again = train(config("again", init=str(lora), model=ModelConfig(), lora=LoRAConfig(rank=2), max_steps=1))
    assert len([m for m in load_model(again)[0].modules() if isinstance(m, LoRALinear)]) == 7 * SMALL.n_layers


def test_a_fresh_model_too_large_for_the_memory_is_refused_before_it_is_built(config, monkeypatch):
    monkeypatch.setattr(schema, "available_memory", lambda device: 10**6)  # 1 MB free
    # 2 x 16 x 512 + 512 (embedding, head, norm) + 512 x 256 x 2 x 4 (attention) + 3 x 512 x 1408 (SwiGLU) + 1024 (norms)
    with pytest.raises(ConfigError, match=r"^a model of --n-layers 1, --d-model 512, --n-heads 2 needs 0.1 GB for its weights, "
                                          r"gradients and AdamW state \(3,229,184 parameters\), more than the 0.0 GB free on cpu"):
        train(config("big", model=replace(SMALL, d_model=512)))
    assert not Path(config("big").out).exists()  # refused before anything was written: no empty run folder

"""arc.training.trainer end to end on tiny tasks: exact resume, LoRA runs, untrained checkpoints, the leak guard,
learning one task, and the command-line flags of train.py."""
import argparse
import hashlib
import json
import runpy
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import TINY, predict, write_tasks
from safetensors.torch import load_file

from arc.data.tasks import DataError, load_tasks
from arc.inference.config import DecodeConfig
from arc.infra.config import add_config_flags, build_config, given_flags
from arc.layouts.in_context import InContextLayout
from arc.model.checkpoint import (
    checkpoint_dir,
    load_model,
    load_train_state,
    read_config,
)
from arc.model.config import LoRAConfig, ModelConfig
from arc.model.lora import LoRALinear, add_lora, load_adapter
from arc.model.transformer import Transformer
from arc.training.config import TrainConfig
from arc.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENS = torch.tensor([[13, 11, 1, 2, 10, 12, 3, 10, 14, 11, 5, 10, 12]])


def weights(run, name: str = "model.safetensors") -> dict:
    """The tensors of a run folder's newest checkpoint (its step folder, arc.model.checkpoint)."""
    return load_file(str(checkpoint_dir(run) / name))


def tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def flat_state(obj, prefix="") -> dict:
    """Every tensor in a nested dict/list (optimizer state), keyed by its path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in flat_state(value, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in flat_state(value, f"{prefix}/{i}").items()}
    return {}


def test_resumed_run_equals_uninterrupted_run(tiny_train_config):
    a = train(tiny_train_config("a", max_steps=6, save_every=3))
    b_cfg = tiny_train_config("b", max_steps=6, save_every=3, stop_at_step=3)
    train(b_cfg)
    assert read_config(b_cfg.out)["step"] == 3
    middle = weights(b_cfg.out)
    b = train(tiny_train_config("b", max_steps=6, save_every=3), resume=True)

    weights_a, weights_b = weights(a), weights(b)
    assert tensors_equal(weights_a, weights_b)
    assert not tensors_equal(weights_a, middle)  # steps 4..6 changed the weights
    state_a, state_b = load_train_state(a), load_train_state(b)
    assert state_a["step"] == state_b["step"] == 6
    opt_a, opt_b = flat_state(state_a["optimizer"]), flat_state(state_b["optimizer"])
    assert len(opt_a) > 0 and tensors_equal(opt_a, opt_b)
    assert read_config(a)["metrics"]["eval_loss"] == read_config(b)["metrics"]["eval_loss"]


@pytest.mark.parametrize("grid_positions", [False, True])
def test_max_steps_zero_writes_the_untrained_model(tiny_train_config, grid_positions):
    out = train(tiny_train_config("zero", max_steps=0, model=replace(TINY, grid_positions=grid_positions)))
    config = read_config(out)
    assert config["step"] == 0
    model_config = replace(TINY, grid_positions=grid_positions)
    assert config["model"] == asdict(model_config)
    assert load_train_state(out)["step"] == 0
    torch.manual_seed(0)  # the run's seed: the weights are exactly a fresh initialisation
    fresh = Transformer(model_config)
    assert tensors_equal(weights(out), {k: v for k, v in fresh.state_dict().items()})


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lora_run_trains_only_the_adapter(tiny_train_config):
    base = train(tiny_train_config("base", max_steps=2))
    base_hash = file_hash(checkpoint_dir(base) / "model.safetensors")
    out = train(tiny_train_config("lora", init=str(base), lora=LoRAConfig(rank=4), max_steps=3))

    names = {p.name for p in checkpoint_dir(out).iterdir()}
    assert "adapter.safetensors" in names and "model.safetensors" not in names
    assert {"config.json", "tokenizer.json", "train_state.pt"} <= names
    assert {p.name for p in out.iterdir()} == {"step-000003", "metrics.jsonl", "report.html", "loss.svg", ".train.lock"}
    assert file_hash(checkpoint_dir(base) / "model.safetensors") == base_hash  # the base checkpoint is untouched
    adapter = weights(out, "adapter.safetensors")
    assert len(adapter) == 2 * 7 * TINY.n_layers  # A and B of 7 projections per block
    assert any(k.endswith("lora_b") and v.abs().sum() > 0 for k, v in adapter.items())  # B moved from 0
    assert load_train_state(out)["step"] == 3

    config = read_config(out)
    assert config["base"] == "../base" and config["base_step"] == 2 and config["lora"]["rank"] == 4  # relative to the run folder
    model, _, _ = load_model(out)  # base + adapter, rebuilt from the run folder alone
    base_model, _, _ = load_model(base)
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 7 * TINY.n_layers
    base_weights = base_model.state_dict()
    for name, value in model.state_dict().items():  # every frozen weight bitwise equal to the base's
        if "lora_" not in name:
            assert torch.equal(value, base_weights[name.replace(".base.", ".")]), name

    manual, _, _ = load_model(base)
    add_lora(manual, rank=4, alpha=32.0)
    load_adapter(manual, str(checkpoint_dir(out) / "adapter.safetensors"))
    with torch.no_grad():
        assert torch.equal(model.eval()(TOKENS), manual.eval()(TOKENS))
        assert not torch.allclose(model(TOKENS), base_model.eval()(TOKENS))  # the adapter matters


def test_resumed_lora_run_equals_uninterrupted_run(tiny_train_config):
    base = str(train(tiny_train_config("base", max_steps=1)))
    a = train(tiny_train_config("a", init=base, lora=LoRAConfig(rank=4), max_steps=4))
    train(tiny_train_config("b", init=base, lora=LoRAConfig(rank=4), max_steps=4, stop_at_step=2))
    b = train(tiny_train_config("b", init=base, lora=LoRAConfig(rank=4), max_steps=4), resume=True)
    assert load_train_state(b)["step"] == 4
    assert tensors_equal(weights(a, "adapter.safetensors"), weights(b, "adapter.safetensors"))


def test_lora_rows_longer_than_the_base_takes_are_refused(tiny_train_config):
    base = train(tiny_train_config("base", max_steps=0))
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len"):
        train(tiny_train_config("lora", init=str(base), lora=LoRAConfig(rank=4), max_row_tokens=TINY.max_seq_len + 1))


def test_training_on_a_heldout_task_raises(tiny_train_config, task_dirs, tmp_path):
    train_dir, eval_dir = task_dirs
    heldout = json.loads((Path(eval_dir) / "heldout0.json").read_text())
    leaky = write_tasks(tmp_path / "leaky", {"t0": heldout, "renamed": heldout})
    with pytest.raises(DataError, match=r"2 training task\(s\) are also evaluated.*same content as heldout0"):
        train(tiny_train_config("leak", data=leaky))
    same_id = write_tasks(tmp_path / "same_id", {"heldout0": json.loads((Path(train_dir) / "t0.json").read_text())})
    with pytest.raises(DataError, match="heldout0 \\(same id\\)"):
        train(tiny_train_config("leak2", data=same_id))
    assert not (tmp_path / "leak").exists()  # refused before anything was written


# A 3x3 left-right flip with 3 demonstrations.
FLIP = {
    "train": [
        {"input": [[1, 0, 0], [0, 2, 0], [0, 0, 3]], "output": [[0, 0, 1], [0, 2, 0], [3, 0, 0]]},
        {"input": [[4, 4, 0], [0, 5, 0], [6, 0, 0]], "output": [[0, 4, 4], [0, 5, 0], [0, 0, 6]]},
        {"input": [[7, 0, 8], [0, 0, 0], [9, 9, 0]], "output": [[8, 0, 7], [0, 0, 0], [0, 9, 9]]},
    ],
    "test": [{"input": [[2, 3, 0], [0, 0, 5], [1, 0, 6]], "output": [[0, 3, 2], [5, 0, 0], [6, 0, 1]]}],
}


def test_tiny_model_learns_one_task(tiny_train_config, tmp_path):
    """Trained on one task (each of its 4 pairs in turn as the test, no augmentation), greedy decoding
    reproduces the test output exactly; the untrained model does not."""
    data = write_tasks(tmp_path / "flip", {"flip": FLIP})
    cfg = tiny_train_config("flip_run", data=data, model=replace(TINY, d_model=64), max_steps=150, batch_size=8, lr=3e-3,
                            warmup_steps=20, augment=False)
    out = train(cfg)
    model, tokenizer, _ = load_model(out)
    rows = InContextLayout(tokenizer)
    examples = load_tasks(data)[0].examples()
    [prediction] = predict(model.eval(), rows, examples, TINY.max_seq_len, DecodeConfig())
    assert prediction.status == "ok"
    assert prediction.attempts[0].tolist() == FLIP["test"][0]["output"]
    assert prediction.correct
    untrained, _, _ = load_model(train(replace(cfg, max_steps=0, out=str(tmp_path / "untrained"))))
    assert not predict(untrained.eval(), rows, examples, TINY.max_seq_len, DecodeConfig())[0].correct


# --- train.py's command line ------------------------------------------------------------------------


def parse(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, TrainConfig)
    return given_flags(parser.parse_args(argv), TrainConfig)


def test_cli_flags_parse_to_typed_values():
    given = parse(["--max-steps", "5", "--no-augment", "--lora-targets", "wq,wv", "--lr", "3e-4",
                   "--init", "ck/base", "--max-examples", "1000", "--train-on-demo-outputs", "--d-model", "64",
                   "--rope", "1d", "--lora-rank", "8", "--layout", "in_context", "--no-pack"])
    assert given == {"max_steps": 5, "lora": {"targets": ("wq", "wv"), "rank": 8}, "lr": 3e-4, "init": "ck/base",
                     "layout": {"name": "in_context", "augment": False, "max_examples": 1000,
                                "train_on_demo_outputs": True, "pack": False},
                     "model": {"d_model": 64, "rope": "1d"}}
    assert type(given["max_steps"]) is int and type(given["lr"]) is float
    config = build_config(TrainConfig, given)  # the flat flags build the nested config
    assert (config.model.d_model, config.model.n_layers, config.model.rope) == (64, 4, "1d")
    assert (config.layout.name, config.layout.augment, config.layout.pack, config.layout.view_pool) == (
        "in_context", False, False, 0)
    assert (config.lora.rank, config.lora.alpha, config.lora.targets) == (8, 32.0, ("wq", "wv"))


def test_cli_derived_model_fields_are_not_flags():
    with pytest.raises(SystemExit):
        parse(["--n-tasks", "3"])  # set from the data, never by hand


def test_cli_unset_flags_are_absent():
    assert parse([]) == {}
    assert parse(["--augment"]) == {"layout": {"augment": True}}


def test_cli_rejects_bad_values():
    with pytest.raises(SystemExit):
        parse(["--max-steps", "five"])


def test_train_script_resume_continues_a_stopped_run(tiny_train_config, monkeypatch):
    cfg = tiny_train_config("script", max_steps=4, stop_at_step=2)
    flags = ["--data", cfg.data, "--eval-data", cfg.eval_data, "--eval-set", "all", "--max-seq-len", "128", "--layout", "in_context",
             "--d-model", "32", "--n-layers", "2", "--n-heads", "4", "--batch-size", "2", "--warmup-steps", "1",
             "--precision", "fp32", "--no-compile", "--device", "cpu", "--max-steps", "4", "--out", cfg.out]
    script = str(Path(__file__).parent.parent / "train.py")
    monkeypatch.setattr(sys, "argv", ["train.py", *flags, "--stop-at-step", "2"])
    runpy.run_path(script, run_name="__main__")
    assert read_config(cfg.out)["step"] == 2
    monkeypatch.setattr(sys, "argv", ["train.py", "--resume", "--out", cfg.out])
    runpy.run_path(script, run_name="__main__")
    assert read_config(cfg.out)["step"] == 4  # "continue where it stopped"


def test_fine_tuning_a_plain_checkpoint_adds_zero_grid_positions(tiny_train_config):
    """--init of a model without grid positions (full fine-tune) adds the embeddings at zero: the
    fine-tuned model starts out computing exactly what the plain one did."""
    plain_dir = train(tiny_train_config("plain", max_steps=2, model=replace(TINY, grid_positions=False)))
    tuned_dir = train(tiny_train_config("tuned", max_steps=0, init=str(plain_dir), model=ModelConfig(grid_positions=True)))
    plain, _, _ = load_model(plain_dir)
    tuned, _, config = load_model(tuned_dir)
    assert config["model"]["grid_positions"] and tuned.cfg.grid_positions and not plain.cfg.grid_positions
    assert not tuned.embed_row.weight.any() and not tuned.embed_col.weight.any()
    tokens = torch.randint(0, 15, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(tuned(tokens), plain(tokens), atol=0, rtol=0)

"""arc.checkpoint: exact round trips, atomic writes, and detection of files from different steps."""
import json
import shutil
from dataclasses import asdict

import pytest
import torch

from arc import checkpoint
from arc.checkpoint import load_model, load_train_state, read_config, save_checkpoint, weights_step
from arc.model import Transformer
from arc.tokenizer import GridTokenizer
from conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

FILES = {"model.safetensors", "tokenizer.json", "train_state.pt", "config.json"}
TOKENS = torch.tensor([[13, 11, 1, 2, 10, 12, 3, 10, 14, 11, 5, 10, 12]])


def make_model(seed: int) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TINY).eval()


def save(folder, model, step: int) -> None:
    config = {"model": asdict(model.cfg), "step": step, "metrics": {"eval_loss": 1.5}}
    state = {"optimizer": {"marker": torch.full((3,), float(step))}, "torch_rng": torch.get_rng_state()}
    save_checkpoint(folder, model, config, GridTokenizer(), state)


def logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS)


def test_save_load_gives_identical_logits_and_config(tmp_path):
    model = make_model(0)
    save(tmp_path / "ck", model, step=7)
    loaded, tokenizer, config = load_model(tmp_path / "ck")
    assert loaded.cfg == TINY
    assert torch.equal(logits_of(loaded.eval()), logits_of(model))
    assert config == {"model": asdict(TINY), "step": 7, "metrics": {"eval_loss": 1.5}}
    assert read_config(tmp_path / "ck") == config
    assert tokenizer.encode_text("BI1\nO") == [13, 11, 1, 10, 12]
    assert weights_step(tmp_path / "ck" / "model.safetensors") == 7
    state = load_train_state(tmp_path / "ck")
    assert state["step"] == 7 and torch.equal(state["optimizer"]["marker"], torch.full((3,), 7.0))


def test_no_temporary_files_left(tmp_path):
    save(tmp_path / "ck", make_model(0), step=1)
    save(tmp_path / "ck", make_model(1), step=2)  # overwriting too
    assert {p.name for p in (tmp_path / "ck").iterdir()} == FILES
    assert read_config(tmp_path / "ck")["step"] == 2


def test_read_config_of_a_non_checkpoint_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        read_config(tmp_path)


def test_crash_while_writing_weights_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    old = make_model(0)
    save(folder, old, step=1)
    before = {name: (folder / name).read_bytes() for name in FILES}

    def crashing_save_file(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a safetensors file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crashing_save_file)
    with pytest.raises(OSError, match="disk full"):
        save(folder, make_model(1), step=2)
    monkeypatch.undo()

    assert {name: (folder / name).read_bytes() for name in FILES} == before  # every real file untouched
    loaded, _, config = load_model(folder)
    assert config["step"] == 1
    assert torch.equal(logits_of(loaded.eval()), logits_of(old))
    assert load_train_state(folder)["step"] == 1


def test_crash_before_config_is_written_is_detected(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    save(folder, make_model(0), step=1)
    real_atomic_write = checkpoint.atomic_write

    def crash_on_config(path, write):
        if path.name == "config.json":
            raise KeyboardInterrupt  # killed after the weights and train state were renamed into place
        real_atomic_write(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write", crash_on_config)
    with pytest.raises(KeyboardInterrupt):
        save(folder, make_model(1), step=2)
    monkeypatch.undo()

    assert read_config(folder)["step"] == 1
    assert weights_step(folder / "model.safetensors") == 2
    with pytest.raises(RuntimeError, match="different steps"):
        load_train_state(folder)


def test_load_train_state_detects_mixed_files(tmp_path):
    save(tmp_path / "a", make_model(0), step=3)
    save(tmp_path / "b", make_model(0), step=4)
    assert load_train_state(tmp_path / "a")["step"] == 3
    shutil.copy(tmp_path / "b" / "train_state.pt", tmp_path / "a" / "train_state.pt")
    with pytest.raises(RuntimeError, match="different steps"):
        load_train_state(tmp_path / "a")
    # weights from another step, config and train state agreeing
    shutil.copy(tmp_path / "b" / "model.safetensors", tmp_path / "c.safetensors")
    save(tmp_path / "d", make_model(0), step=3)
    shutil.copy(tmp_path / "c.safetensors", tmp_path / "d" / "model.safetensors")
    with pytest.raises(RuntimeError, match="different steps"):
        load_train_state(tmp_path / "d")


def test_config_json_is_plain_json(tmp_path):
    save(tmp_path / "ck", make_model(0), step=5)
    text = (tmp_path / "ck" / "config.json").read_text()
    assert json.loads(text)["model"]["d_model"] == TINY.d_model

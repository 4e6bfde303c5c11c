"""arc.model.checkpoint: exact round trips; complete-or-absent saves under a failure at every write; a full disk;
the older flat layout; no unpickling of train_state.pt; damaged files refused with their path."""
import errno
import json
import shutil
from dataclasses import asdict

import pytest
import torch
from conftest import TINY, failing_at
from safetensors.torch import load_file, save_file

from arc.data.tokenizer import GridTokenizer
from arc.infra.errors import CheckpointError, DivergenceError
from arc.model.checkpoint import (
    load_model,
    load_train_state,
    read_config,
    save_checkpoint,
    step_folders,
    weights_step,
)
from arc.model.transformer import Transformer

pytestmark = pytest.mark.usefixtures("one_thread")

FILES = {"model.safetensors", "tokenizer.json", "train_state.pt", "config.json"}
TOKENS = torch.tensor([[13, 11, 1, 2, 10, 12, 3, 10, 14, 11, 5, 10, 12]])


def make_model(seed: int) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(TINY).eval()


def save(folder, model, step: int):
    config = {"model": asdict(model.cfg), "step": step, "metrics": {"eval_loss": 1.5}}
    state = {"optimizer": {"marker": torch.full((3,), float(step))}, "torch_rng": torch.get_rng_state()}
    return save_checkpoint(folder, model, config, GridTokenizer(), state)


def logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS)


def test_save_load_gives_identical_logits_and_config(tmp_path):
    model = make_model(0)
    assert save(tmp_path / "ck", model, step=7) == tmp_path / "ck" / "step-000007"
    loaded, tokenizer, config = load_model(tmp_path / "ck")
    assert loaded.cfg == TINY
    assert torch.equal(logits_of(loaded.eval()), logits_of(model))
    assert config == {"model": asdict(TINY), "step": 7, "metrics": {"eval_loss": 1.5}}
    assert read_config(tmp_path / "ck") == read_config(tmp_path / "ck" / "step-000007") == config
    assert tokenizer.encode_text("BI1\nO") == [13, 11, 1, 10, 12]
    assert weights_step(tmp_path / "ck" / "step-000007" / "model.safetensors") == 7
    state = load_train_state(tmp_path / "ck")
    assert state["step"] == 7 and torch.equal(state["optimizer"]["marker"], torch.full((3,), 7.0))


def test_a_save_replaces_the_previous_step_folder_and_leaves_nothing_else(tmp_path):
    save(tmp_path / "ck", make_model(0), step=1)
    (tmp_path / "ck" / "metrics.jsonl").write_text("")  # the run's own files stay
    save(tmp_path / "ck", make_model(1), step=2)
    assert {p.name for p in (tmp_path / "ck").iterdir()} == {"step-000002", "metrics.jsonl"}
    assert {p.name for p in (tmp_path / "ck" / "step-000002").iterdir()} == FILES
    save(tmp_path / "ck", make_model(2), step=2)  # the same step again: a new folder, never an overwrite
    assert [p.name for p in step_folders(tmp_path / "ck")] == ["step-000002-2"]
    assert torch.equal(logits_of(load_model(tmp_path / "ck")[0].eval()), logits_of(make_model(2)))


def test_read_config_of_a_non_checkpoint_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        read_config(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        read_config(tmp_path / "missing")


# every write of a save (weights, tokenizer, train state, config), the rename, the clean-up after it
FAULTS = [("write", 0), ("write", 1), ("write", 2), ("write", 3), ("commit", 0), ("cleanup", 0)]


@pytest.mark.parametrize("point,n", FAULTS)
def test_a_save_that_fails_anywhere_leaves_a_complete_checkpoint(tmp_path, monkeypatch, point, n):
    folder = tmp_path / "ck"
    save(folder, make_model(0), step=1)
    failing_at(monkeypatch, point, n, KeyboardInterrupt())
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # as after a kill: the save cleans up nothing
    with pytest.raises(KeyboardInterrupt):
        save(folder, make_model(1), step=2)
    monkeypatch.undo()
    expected_step, expected_model = (2, make_model(1)) if point == "cleanup" else (1, make_model(0))
    loaded, _, config = load_model(folder)
    assert config["step"] == load_train_state(folder)["step"] == expected_step
    assert torch.equal(logits_of(loaded.eval()), logits_of(expected_model))
    save(folder, make_model(2), step=3)  # the next save clears whatever the failed one left
    assert {p.name for p in folder.iterdir()} == {"step-000003"}


def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    save(folder, make_model(0), step=1)
    failing_at(monkeypatch, "write", 0, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(CheckpointError, match=r"disk full while saving the checkpoint of step 2 .* holds the checkpoint of step 1"):
        save(folder, make_model(1), step=2)
    monkeypatch.undo()
    assert {p.name for p in folder.iterdir()} == {"step-000001"}  # its temporary folder is gone too
    assert read_config(folder)["step"] == 1


def test_non_finite_weights_are_never_saved(tmp_path):
    model = make_model(0)
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="NaN or infinity"):
        save(tmp_path / "ck", model, step=1)
    assert not step_folders(tmp_path / "ck")


def checkpoint_files(folder, model, step: int, weights_step_: int | None = None) -> None:
    """A checkpoint's files written straight into `folder` (a step folder named directly), the weights
    recording weights_step_ when given."""
    saved = save(folder / "tmp", model, step)
    for name in FILES:
        shutil.move(saved / name, folder / name)
    shutil.rmtree(folder / "tmp")
    if weights_step_ is not None:
        tensors = load_file(str(folder / "model.safetensors"))
        save_file(tensors, str(folder / "model.safetensors"), metadata={"step": str(weights_step_)})


def test_a_checkpoint_whose_files_are_from_two_steps_is_refused_naming_it(tmp_path):
    folder = tmp_path / "mixed"
    checkpoint_files(folder, make_model(0), step=4, weights_step_=5)  # files of two saves in one checkpoint folder
    with pytest.raises(CheckpointError, match=f"{folder}: checkpoint files are from different steps"):
        load_model(folder)  # evaluate.py refuses it too, instead of reporting the wrong step
    with pytest.raises(CheckpointError, match="different steps"):
        load_train_state(folder)


def test_a_crafted_train_state_runs_no_code(tmp_path):
    folder = tmp_path / "ck"
    saved = save(folder, make_model(0), step=1)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling would create the marker file

    torch.save({"optimizer": Exploit(), "torch_rng": torch.get_rng_state(), "step": 1}, saved / "train_state.pt")
    with pytest.raises(CheckpointError, match="train_state.pt: refused"):
        load_train_state(folder)
    assert not marker.exists()


def test_damaged_files_are_refused_with_their_path(tmp_path):
    saved = save(tmp_path / "a", make_model(0), step=1)
    (saved / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes()[:7])
    with pytest.raises(CheckpointError, match=r"step-000001/model.safetensors: not a readable safetensors file"):
        load_model(tmp_path / "a")
    saved = save(tmp_path / "b", make_model(0), step=1)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"step-000001/config.json: unreadable"):
        load_model(tmp_path / "b")
    saved = save(tmp_path / "c", make_model(0), step=1)
    config = json.loads((saved / "config.json").read_text())
    config["model"]["d_model"] = 64
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model.safetensors: does not match the model its config.json describes"):
        load_model(tmp_path / "c")


def test_config_json_is_plain_json(tmp_path):
    saved = save(tmp_path / "ck", make_model(0), step=5)
    text = (saved / "config.json").read_text()
    assert json.loads(text)["model"]["d_model"] == TINY.d_model

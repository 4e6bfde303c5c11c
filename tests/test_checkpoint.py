"""arc.model.checkpoint: exact round trips; complete-or-absent saves under a failure at every write; a full disk;
the older flat layout; no unpickling of train_state.pt; damaged files refused with their path; crafted config.json
values, models too large for the machine, non-finite weights and foreign folders refused before anything is
built (arc.model.schema); one trainer per run folder."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import TINY, failing_at
from safetensors.torch import load_file, save_file

from arc.data.tokenizer import GridTokenizer
from arc.infra.errors import CheckpointError, ConfigError, DivergenceError
from arc.infra.runlog import RunLog
from arc.model import checkpoint, schema
from arc.model.checkpoint import (
    load_model,
    load_train_state,
    open_checkpoint,
    read_config,
    save_checkpoint,
    step_folders,
    weights_step,
)
from arc.model.transformer import Transformer
from arc.training.run_folder import LOCK_FILE, RunFolder

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
    config = {"model": asdict(model.cfg), "step": 1}
    with pytest.raises(DivergenceError, match="NaN or infinity"):
        RunFolder(tmp_path / "ck", resume=False).save(model, config, GridTokenizer(), {}, lora=False)
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


# --- nothing unchecked gets in: crafted config.json values, each refused naming the file and the field --------------


def crafted(tmp_path, change) -> Path:
    """A saved checkpoint whose config.json is then changed: change(config) edits the dict in place, or
    returns the text to write instead."""
    saved = save(tmp_path / "ck", make_model(0), step=1)
    config = json.loads((saved / "config.json").read_text())
    text = change(config)
    (saved / "config.json").write_text(text if isinstance(text, str) else json.dumps(config))
    return saved / "config.json"


def model_field(name, value):
    return lambda config: config["model"].update({name: value})


CRAFTED = [  # (change, the message after "<file>: ")
    (model_field("d_model", 10**9), "model.d_model 1000000000: must be an integer >= 1 and <= 65536"),
    (model_field("max_seq_len", 10**9), "model.max_seq_len 1000000000: must be an integer >= 8 and <= 131072"),
    (model_field("mlp_hidden", 10**12), "model.mlp_hidden 1000000000000: must be an integer >= 0 and <= 1048576"),
    (model_field("n_tasks", 10**8), "model.n_tasks 100000000: must be an integer >= 0 and <= 1048576"),
    (model_field("n_layers", 10**6), "model.n_layers 1000000: must be an integer >= 1 and <= 1024"),
    (model_field("d_model", -32), "model.d_model -32: must be an integer >= 1"),
    (model_field("d_model", "32"), 'model.d_model "32": must be an integer'),
    (model_field("n_heads", 0), "model.n_heads 0: must be an integer >= 1"),
    (model_field("n_kv_heads", 3), "model.n_heads 4 model.n_kv_heads 3: n_heads must be a multiple of n_kv_heads"),
    (model_field("rope_theta", None), "model.rope_theta null: must not be null"),
    (model_field("widht", 3), "model.widht: unknown field"),
    (lambda c: c.update(model=[1]), "neither a checkpoint of train.py"),
    (lambda c: c.update(step="1"), 'step "1": must be an integer >= 0'),
    (lambda c: c.update(task_ids=["a", "b"]), "task_ids: 2 ids for a task table of model.n_tasks 0 rows"),
    (lambda c: c.update(lora={"rank": -1}, base="../x"), "lora.rank -1: must be an integer >= 0"),
    (lambda c: "[1, 2]", "expected a JSON object, got list"),
    (lambda c: "{not json", "unreadable (not JSON"),
    (lambda c: json.dumps(c) + " " * (9 << 20), "unreadable (larger than the 8 MB"),
]


@pytest.mark.parametrize("change,message", CRAFTED, ids=[m[:30] for _, m in CRAFTED])
def test_a_crafted_config_json_is_refused_naming_the_file_and_the_field(tmp_path, change, message):
    path = crafted(tmp_path, change)
    with pytest.raises(CheckpointError) as refused:
        load_model(tmp_path / "ck")
    assert str(refused.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize("kind", ["dev_zero", "fifo"])
def test_a_config_json_that_is_no_regular_file_is_refused_at_once(tmp_path, kind):
    saved = save(tmp_path / "ck", make_model(0), step=1)
    (saved / "config.json").unlink()
    (saved / "config.json").symlink_to("/dev/zero") if kind == "dev_zero" else os.mkfifo(saved / "config.json")
    with pytest.raises(CheckpointError, match="config.json: unreadable .not a regular file"):
        load_model(tmp_path / "ck")


def test_size_terms_count_exactly_the_parameters_a_model_has():
    for cfg in (TINY, replace(TINY, grid_positions=True, n_tasks=7, transform_embedding=True, rope="3d", d_model=48),
                replace(TINY, n_kv_heads=2, head_size=12, mlp_hidden=40)):
        model = Transformer(cfg)
        assert schema.parameter_count(cfg) == model.num_params()
        assert schema.size_terms(cfg)[-1][0] == model.rope_cos.numel() + model.rope_sin.numel()


def test_a_model_larger_than_the_free_memory_is_refused_before_it_is_built(tmp_path, monkeypatch):
    """16 blocks of TINY: 16 x 16,448 parameters (attention 32 x 8 x 2 x 8, SwiGLU 3 x 32 x 128, two norms)
    + 1,056 (embedding, head, final norm) = 264,224, 4 bytes each, plus the RoPE table."""
    path = crafted(tmp_path, model_field("n_layers", 16))
    needed = 4 * (264_224 + TINY.max_seq_len * TINY.head_dim)
    monkeypatch.setattr(schema, "available_memory", lambda device: needed - 1)
    with pytest.raises(CheckpointError, match=rf"^{path}: a model of model.n_layers 16, model.d_model 32, model.n_heads 4 "
                                              r"needs 0.0 GB for its weights \(264,224 parameters\), more than the 0.0 GB free on cpu"):
        load_model(tmp_path / "ck")
    monkeypatch.setattr(schema, "available_memory", lambda device: needed)  # it fits: built, then its weights differ
    with pytest.raises(CheckpointError, match="model.safetensors: does not match the model its config.json describes"):
        load_model(tmp_path / "ck")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
def test_weights_holding_nan_infinity_or_absurd_values_are_refused_naming_file_and_tensor(tmp_path, value):
    saved = save(tmp_path / "ck", make_model(0), step=1)
    tensors = load_file(str(saved / "model.safetensors"))
    tensors["blocks.1.mlp.w_up.weight"][3, 4] = value
    save_file(tensors, str(saved / "model.safetensors"), metadata={"step": "1"})
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor blocks.1.mlp.w_up.weight holds NaN, infinity or values beyond"):
        load_model(tmp_path / "ck")


FOREIGN = [  # (config.json of a folder, the message)
    ("{nope", r"config.json: unreadable \(not JSON"),
    ({"name": "something else"}, r"neither a checkpoint of train.py \(no 'model' section\) nor a Hugging Face model"),
    ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "only Llama checkpoints import .* not gpt2"),
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64}, "num_attention_heads: missing"),
    ({"model_type": "llama", "hidden_size": 65536, "num_attention_heads": 512, "num_hidden_layers": 1024,
      "intermediate_size": 8, "vocab_size": 32}, "a model of num_hidden_layers 1024, hidden_size 65536"),
    ({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
      "intermediate_size": 8, "vocab_size": 32}, "no tokenizer.json"),
]


@pytest.mark.parametrize("config,message", FOREIGN, ids=[m[:20] for _, m in FOREIGN])
def test_a_folder_that_is_not_ours_nor_a_hugging_face_llama_is_refused_by_name(tmp_path, config, message):
    (tmp_path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    with pytest.raises(CheckpointError, match=f"^{tmp_path}.*{message}"):
        load_model(tmp_path)


# another train.py holding a run folder, as RunFolder does (without importing torch: a fast test)
HOLDER = ("import os, sys, time; from arc.infra.files import hold_lock; hold_lock(sys.argv[1], str(os.getpid())); "
          "print('held', flush=True); time.sleep(60)")


def test_one_trainer_per_run_folder_and_a_killed_one_never_blocks_resume(tmp_path):
    run, root = tmp_path / "run", Path(__file__).resolve().parent.parent
    save(run, make_model(0), step=1)  # as the first trainer would
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(run / LOCK_FILE)], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        for resume in (False, True):  # refused at once, before a resume could tidy the first one's files away
            with pytest.raises(ConfigError, match=rf"--out {run}: in use by another train.py \(process {first.pid} holds"):
                RunFolder(run, resume=resume)
    finally:
        first.send_signal(signal.SIGKILL)  # killed: its lock file stays, its lock does not
        first.wait()
    assert RunFolder(run, resume=True).resume.state["step"] == 1


def test_a_planted_lock_link_or_an_unusable_out_is_one_line_and_nothing_is_written(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run = tmp_path / "run"
    save(run, make_model(0), step=1)  # someone else's run folder, continued with --resume
    (run / LOCK_FILE).symlink_to(victim)
    for resume in (False, True):
        with pytest.raises(ConfigError, match=rf"^--out {run}: its lock file {run / LOCK_FILE} is a symbolic link: "
                                              "refused, nothing written"):
            RunFolder(run, resume=resume)
    assert victim.read_text() == "keep me"
    (run / LOCK_FILE).unlink()
    (run / LOCK_FILE).mkdir()  # was an IsADirectoryError
    with pytest.raises(ConfigError, match=rf"^--out {run}: its lock file {run / LOCK_FILE} is a folder: refused"):
        RunFolder(run, resume=True)
    with pytest.raises(ConfigError, match=r"^--out /proc/no/run: cannot create the run folder \(No such file"):
        RunFolder("/proc/no/run", resume=False)  # was a FileNotFoundError


def test_a_step_folder_superseded_while_read_is_retried_and_a_newest_incomplete_one_keeps_its_message(tmp_path,
                                                                                                       monkeypatch):
    run = tmp_path / "run"
    save(run, make_model(0), step=1)
    real = checkpoint._read_tokenizer

    def trainer_saves_meanwhile(path):  # the last file read: the trainer commits step 2 and deletes step 1 first
        if path.parent.name == "step-000001":
            save(run, make_model(1), step=2)
        return real(path)

    monkeypatch.setattr(checkpoint, "_read_tokenizer", trainer_saves_meanwhile)
    read, model, _, config = open_checkpoint(run)
    assert (read.name, config["step"]) == ("step-000002", 2) and torch.equal(logits_of(model), logits_of(make_model(1)))
    (read / "model.safetensors").unlink()  # the newest, and incomplete: no newer one to read instead
    with pytest.raises(CheckpointError, match=rf"^{read}: no model.safetensors: incomplete checkpoint$"):
        open_checkpoint(run)


def test_a_planted_run_log_link_is_refused_and_appends_never_follow_one(tmp_path):
    (tmp_path / "run").mkdir()
    log = RunLog(tmp_path / "run" / "metrics.jsonl")
    log.path.symlink_to(tmp_path / "created")  # dangling: appending through it would create a file outside --out
    with pytest.raises(ConfigError, match=r"metrics\.jsonl: a symbolic link or no regular file: refused"):
        log.start(0)
    with pytest.raises(OSError):
        log.append({"step": 1})
    assert not (tmp_path / "created").exists()
    log.path.unlink()
    log.start(0)
    log.append({"step": 1})
    assert log.path.read_text() == '{"step": 1}\n'

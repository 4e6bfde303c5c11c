"""configs/*.toml, the named runs, and arc.infra.config.load_config_file: configs/main.toml is exactly train.py's
defaults, every file loads and validates, flags override a file, and a bad key or value in a file is one line
naming the file and the key; a file that is no regular file, too large, binary or absurdly nested is one too."""
import argparse
import os
import runpy
import sys
from pathlib import Path

import pytest

from arc.inference.config import EvalConfig
from arc.infra.config import MAX_CONFIG_FILE_BYTES, add_config_flags, build_config, load_config_file, settings, validate
from arc.infra.errors import ConfigError
from arc.model.checkpoint import read_config
from arc.training.config import TrainConfig

ROOT = Path(__file__).parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))
PLACEHOLDERS = {"llama-lora.toml": {"init": str(ROOT / "checkpoints" / "base")}}  # the user's --init replaces it


def config_class(path: Path) -> type:
    """configs/eval-*.toml are evaluate.py's settings, the others train.py's."""
    return EvalConfig if path.name.startswith("eval-") else TrainConfig


def load(path: Path, flags: dict | None = None):
    cls = config_class(path)
    return build_config(cls, load_config_file(path, cls, flags))


def test_main_toml_is_the_main_job():
    assert load(ROOT / "configs" / "main.toml") == TrainConfig()
    assert load(ROOT / "configs" / "eval-seed20.toml") == EvalConfig()


@pytest.mark.parametrize("name,cls,unset", [
    ("main.toml", TrainConfig, {"out"}),  # out: train.py names a fresh run folder
    ("eval-seed20.toml", EvalConfig, set()),
])
def test_the_defaults_files_state_every_setting(name, cls, unset):
    """Every setting is written out, but those TOML cannot write (a default of None) and those named in unset:
    a field added to the config without a line here fails."""
    stated = {".".join(path) for path in _paths(load_config_file(ROOT / "configs" / name, cls))}
    defaults = cls()
    expected = {name for name in settings(cls) if _value(defaults, name) is not None} - unset
    assert stated == expected


def _paths(tree: dict, path: tuple = ()):
    for key, value in tree.items():
        yield from _paths(value, path + (key,)) if isinstance(value, dict) else [path + (key,)]


def _value(config, dotted: str):
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_file_loads_and_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the files name folders relative to the repository (checkpoints/...)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and f"--config configs/{path.name}" in path.read_text()  # what it is, the command
    validate(load(path, PLACEHOLDERS.get(path.name)))


def test_the_llama_placeholder_is_refused_until_init_is_given(monkeypatch):
    monkeypatch.chdir(ROOT)
    config = load(ROOT / "configs" / "llama-lora.toml")
    assert (config.init, config.lora.rank, config.grad_accum, config.layout.name) == ("path/to/Llama-3.2-1B", 32, 4, "in_context")
    with pytest.raises(ConfigError, match=r"^--init path/to/Llama-3.2-1B: must be a checkpoint folder"):
        validate(config)


def test_flags_override_the_file():
    config = load(ROOT / "configs" / "gpu.toml", {"model": {"n_layers": 2}, "lr": 1e-4})
    assert (config.model.d_model, config.model.n_layers, config.lr, config.batch_size) == (256, 2, 1e-4, 10)
    assert config.model.n_heads == 8 and config.warmup_steps == 500  # the file's, where no flag is given


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("layuot = 'pair'\n", "layuot: unknown key (did you mean layout?)"),
    ("[model]\nd_modle = 64\n", "model.d_modle: unknown key (did you mean model.d_model?)"),
    ("[model]\nn_tasks = 3\n", "model.n_tasks: unknown key"),  # derived by the program: no setting
    ("config_file = 'x.toml'\n", "config_file: unknown key"),
    ("lr = 'fast'\n", 'lr = "fast": must be a number'),
    ("max_steps = 1.5\n", "max_steps = 1.5: must be an integer"),
    ("[layout]\naugment = 1\n", "layout.augment = 1: must be true or false"),
    ("augment = true\n", "augment: unknown key (did you mean layout.augment?)"),  # a file from before LayoutConfig
    ("[lora]\ntargets = 'wq'\n", 'lora.targets = "wq": must be a list of strings'),
    ("model = 3\n", "model = 3: must be a table ([model])"),
    ("batch_size = 0\n", "batch_size = 0: must be an integer >= 1 and <= 4096"),
    ("[model]\nrope = '2d'\n", 'model.rope = "2d": must be one of 1d, 3d'),
    ("batch_size = 0\nlayuot = 'pair'\n", "layuot: unknown key (did you mean layout?); batch_size = 0: must be an integer >= 1 and <= 4096"),
])
def test_a_bad_key_or_value_is_one_line_naming_the_file_and_the_key(text, message, tmp_path):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config_file(path, TrainConfig)
    assert str(raised.value) == f"{path}: {message}"


def test_a_value_a_flag_replaces_is_not_checked_and_the_dead_flag_is_no_key(tmp_path):
    path = write(tmp_path, "batch_size = 0\n")
    assert load_config_file(path, TrainConfig, {"batch_size": 4}) == {"batch_size": 4}
    path = write(tmp_path, "[ttt.lora]\ntrain_embeddings = true\n")
    with pytest.raises(ConfigError, match=r"ttt\.lora\.train_embeddings: unknown key"):
        load_config_file(path, EvalConfig)


def test_a_file_that_is_not_toml_or_is_missing(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.toml: not valid TOML: "):
        load_config_file(write(tmp_path, "batch_size =\n"), TrainConfig)
    with pytest.raises(ConfigError, match=r"^--config .*nothing\.toml: cannot read it"):
        load_config_file(tmp_path / "nothing.toml", TrainConfig)


def test_a_config_file_is_read_as_every_user_file_is_checked_and_capped(tmp_path):
    # each refused at once as one line naming the file: no read until memory runs out, no hang, no traceback
    (tmp_path / "zero.toml").symlink_to("/dev/zero")  # read whole, it would fill memory
    os.mkfifo(tmp_path / "fifo.toml")  # opened for reading, it would wait for a writer forever
    (tmp_path / "binary.toml").write_bytes(b"batch_size = 2\n\xff\xfe\x00")
    (tmp_path / "deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "big.toml").write_text("# padding\n" * (MAX_CONFIG_FILE_BYTES // 10 + 1))
    for name, message in (("zero", "not a regular file"), ("fifo", "not a regular file"),
                          ("binary", "not UTF-8 text"), ("deep", "TOML nested too deeply"), ("big", "larger than")):
        with pytest.raises(ConfigError) as raised:
            load_config_file(tmp_path / f"{name}.toml", TrainConfig)
        assert str(raised.value).startswith(f"{tmp_path / name}.toml: {message}") and "\n" not in str(raised.value)


def test_train_script_reads_the_file_flags_override_it_and_the_run_records_it(task_dirs, tmp_path, monkeypatch):
    train_dir, eval_dir = task_dirs
    path = write(tmp_path, f"""data = "{train_dir}"\neval_data = "{eval_dir}"\neval_set = "all"
max_steps = 4\nbatch_size = 2\nprecision = "fp32"\ncompile = false\ndevice = "cpu"\n
[layout]\nname = "in_context"\n[model]\nd_model = 32\nn_layers = 2\nmax_seq_len = 128\n""")
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["train.py", "--config", str(path), "--max-steps", "0", "--out", str(out)])
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    saved = read_config(out)
    assert saved["step"] == 0 and saved["model"]["d_model"] == 32  # the flag's steps, the file's model
    assert saved["training"]["config_file"] == str(path)


def test_resume_refuses_a_config_file(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["train.py", "--resume", "--out", "checkpoints/pair", "--config", "configs/main.toml"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    assert exit_.value.code == 1
    assert capsys.readouterr().err == ("error: --config configs/main.toml: --resume continues the run with its saved config "
                                       "(config.json); give only the flags to change\n")


@pytest.mark.parametrize("cls", [TrainConfig, EvalConfig])
def test_every_flag_has_its_help_text_beside_its_field(cls):
    """option(..., help=...): each setting's meaning is data on its field, what `-h` prints."""
    parser = argparse.ArgumentParser()
    add_config_flags(parser, cls)
    missing = [a.option_strings[0] for a in parser._actions if a.help and a.help.startswith(" (default:")]
    assert missing == [] and len(parser._actions) > 40

"""arc.infra.config.validate (each field's rule and each config's problems) and arc.infra.errors: every bad flag
refused before any work, with its flag, its value and what is allowed; the entry points print a known error as one
line and exit 1, without a traceback."""
import argparse
import re
import runpy
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import train_config

from arc.inference.config import AdaptConfig, DecodeConfig, EvalConfig, TTTConfig
from arc.infra.config import add_config_flags, build_config, given_flags, settings, validate
from arc.infra.errors import CheckpointError, ConfigError
from arc.infra.runtime import resolve_device
from arc.model.checkpoint import read_config
from arc.model.config import LoRAConfig, ModelConfig
from arc.training.config import TrainConfig, read_training, resume_changes

ROOT = Path(__file__).parent.parent

TRAIN_CASES = [  # (changes, the message's start)
    (dict(batch_size=0), "--batch-size 0: must be an integer >= 1"),
    (dict(batch_size=-3), "--batch-size -3: must be an integer >= 1"),
    (dict(save_every=0), "--save-every 0: must be an integer >= 1"),
    (dict(max_examples=0), "--max-examples 0: must be an integer >= 1"),
    (dict(grad_accum=0), "--grad-accum 0: must be an integer >= 1"),
    (dict(max_steps=-5), "--max-steps -5: must be an integer >= 0"),
    (dict(precision="bogus"), "--precision bogus: must be one of auto, bf16, fp32"),
    (dict(layout="rows"), "--layout rows: must be one of in_context, pair"),
    (dict(evaluated_share=1.5), "--evaluated-share 1.5: must be a finite number >= 0 and <= 1"),
    (dict(generated_fraction=-0.1), "--generated-fraction -0.1: must be a finite number >= 0 and <= 1"),
    (dict(lr=float("nan")), "--lr nan: must be a finite number > 0"),
    (dict(lr=0.0), "--lr 0.0: must be a finite number > 0"),
    (dict(grad_clip=-1.0), "--grad-clip -1.0: must be a finite number >= 0"),
    (dict(device="gpu"), "--device gpu: must be auto, cpu, cuda or cuda:N"),
    (dict(eval_set="seed21"), "--eval-set seed21: must be one of seed20, next20, tune20, dev20, all"),
    (dict(split="train"), "--split train: must be one of training, evaluation (for arc1)"),
    (dict(data="no/such/folder"), "--data no/such/folder: must be arc1, arc2, an existing folder"),
    (dict(exclude_evaluated="arc1:test"), "--exclude-evaluated arc1:test: must be none or DATA:SPLIT"),
    (dict(model=replace(ModelConfig(rope="3d"), d_model=30)), "--d-model 30 --n-heads 4: d_model must be a multiple of n_heads"),
    (dict(model=ModelConfig(d_model=12, n_heads=4, rope="1d")), "--d-model 12 --n-heads 4: the head width d_model / n_heads = 3 must be even"),
    (dict(model=ModelConfig(d_model=16, n_heads=4, rope="3d")), "--d-model 16 --n-heads 4 --rope 3d: the head width 4 must be >= 6"),
    (dict(model=ModelConfig(rope="2d")), "--rope 2d: must be one of 1d, 3d"),
    (dict(model=ModelConfig(max_seq_len=4)), "--max-seq-len 4: must be an integer >= 8"),
    (dict(max_row_tokens=4096), "--max-row-tokens 4096: must be <= --max-seq-len 2048"),
    (dict(lora=LoRAConfig(rank=4)), "--lora-rank 4: a LoRA run fine-tunes a checkpoint: give --init too"),
    (dict(lora=LoRAConfig(rank=4, targets=("wq", "wz")), init="."), "--lora-targets wq,wz: must be a non-empty"),
    (dict(init="no/such/run"), "--init no/such/run: must be a checkpoint folder"),
    (dict(seed=-1), "--seed -1: must be an integer >= 0"),
    (dict(model=ModelConfig(d_model=10**9)), "--d-model 1000000000: must be an integer >= 1 and <= 65536"),
    (dict(model=ModelConfig(d_model=32, n_heads=2, n_kv_heads=3)),
     "--n-heads 2 --n-kv-heads 3: n_heads must be a multiple of n_kv_heads (each key/value head serves n_heads / n_kv_heads query heads)"),
    (dict(model=ModelConfig(n_layers=10**6)), "--n-layers 1000000: must be an integer >= 1 and <= 1024"),
    # bounded where the unit is converted: 1e307 minutes is inf seconds (an OverflowError in the report)
    (dict(minutes=1e307), "--minutes 1e+307: must be a finite number > 0 and <= 10000000"),
]


@pytest.mark.parametrize("changes,message", TRAIN_CASES)
def test_bad_training_flags_are_refused_with_flag_value_and_rule(changes, message):
    with pytest.raises(ConfigError) as raised:
        validate(train_config(**changes))
    assert str(raised.value).startswith(message)


EVAL_CASES = [
    (dict(decoding=DecodeConfig(attempts=0)), "--attempts 0: must be an integer >= 1"),
    (dict(decoding=DecodeConfig(samples=0)), "--samples 0: must be an integer >= 1"),
    (dict(decoding=DecodeConfig(top_k=0)), "--top-k 0: must be an integer >= 1 and <= 16"),
    (dict(decoding=DecodeConfig(select="bogus")), "--select bogus: must be one of vote, poe"),
    (dict(decoding=DecodeConfig(decode="beam")), "--decode beam: must be one of greedy, sample, dfs"),
    (dict(decoding=DecodeConfig(temperature=0.0)), "--temperature 0.0: must be a finite number >= 1e-06"),
    (dict(decoding=DecodeConfig(dfs_threshold=0.0)), "--dfs-threshold 0.0: must be a finite number > 0 and <= 1"),
    (dict(ttt=TTTConfig(steps=-1)), "--ttt-steps -1: must be an integer >= 0"),
    (dict(ttt=TTTConfig(steps=4, train="lora", lora=LoRAConfig(rank=0))), "--ttt-rank 0: test-time training"),
    (dict(ttt=TTTConfig(steps=4, lora=LoRAConfig(rank=8))), "--ttt-rank 8: applies to --ttt-train lora only (this run: --ttt-train full)"),
    (dict(precision="bogus"), "--precision bogus: must be one of auto, bf16, fp32"),
    (dict(max_tasks=0), "--max-tasks 0: must be an integer >= 1"),
    (dict(tasks=("a", "b", "a")), "--tasks a,b,a: each task id at most once (repeated: a)"),
    (dict(checkpoint="no/such/run"), "--checkpoint no/such/run: must be a checkpoint folder"),
    (dict(out=str(ROOT / "README.md")), f"--out {ROOT / 'README.md'}: must be a folder, not an existing file"),
    # time budgets bounded where they become seconds (adaptation: seconds per task x tasks)
    (dict(ttt=TTTConfig(steps=1, seconds=1e308)),
     "--ttt-seconds 1e+308: must be a finite number >= 0 and <= 600000000"),
    (dict(adapt=AdaptConfig(seconds=1e308)), "--adapt-seconds 1e+308: must be a finite number >= 0 and <= 600000000"),
    (dict(minutes=1e307), "--minutes 1e+307: must be a finite number > 0 and <= 10000000"),
    (dict(decoding=DecodeConfig(decode="dfs", dfs_time_limit_s=1e308)), "--dfs-time-limit-s 1e+308: must be a finite"),
    (dict(decoding=DecodeConfig(decode="sample", temperature=1e-308)),
     "--temperature 1e-308: must be a finite number >= 1e-06"),
]


@pytest.mark.parametrize("changes,message", EVAL_CASES)
def test_bad_evaluation_flags_are_refused_with_flag_value_and_rule(changes, message):
    with pytest.raises(ConfigError) as raised:
        validate(replace(EvalConfig(), **changes))
    assert str(raised.value).startswith(message)


BASE = str(ROOT / "checkpoints" / "base")  # a shipped checkpoint: a valid --init
LORA_RUN = dict(init=BASE, layout="in_context", lora=LoRAConfig(rank=4))

IGNORED_CASES = [  # (config, the whole message): a flag the run would silently ignore is refused
    (train_config(layout="in_context", colour_maps=8), "--colour-maps 8: applies to the pair layout only (this run: --layout in_context)"),
    (train_config(layout="in_context", evaluated_share=0.25), "--evaluated-share 0.25: applies to the pair layout only (this run: --layout in_context)"),
    (train_config(layout="in_context", input_loss=True), "--input-loss: applies to the pair layout only (this run: --layout in_context)"),
    (train_config(layout="in_context", task_embedding=False), "--no-task-embedding: applies to the pair layout only (this run: --layout in_context)"),
    (train_config(generated_fraction=0.25), "--generated-fraction 0.25: applies to the in_context layout only (this run: --layout pair)"),
    (train_config(train_on_demo_outputs=False), "--no-train-on-demo-outputs: applies to the in_context layout only (this run: --layout pair)"),
    (TrainConfig(init=BASE, model=ModelConfig(d_model=64)),
     "--d-model 64: the checkpoint decides the model with --init (only --grid-positions may be given)"),
    (TrainConfig(init=BASE, model=ModelConfig(rope="1d", max_seq_len=4096)),
     "--max-seq-len 4096: the checkpoint decides the model with --init (only --grid-positions may be given); "
     "--rope 1d: the checkpoint decides the model with --init (only --grid-positions may be given)"),
    (train_config(**{**LORA_RUN, "model": ModelConfig(grid_positions=True)}),
     "--grid-positions: adds grid positions in a full fine-tune only (this run: --lora-rank 4)"),
    (TrainConfig(lora=LoRAConfig(alpha=16.0)), "--lora-alpha 16.0: applies to a LoRA adapter only (this run: --lora-rank 0)"),
    (TrainConfig(lora=LoRAConfig(dropout=0.1)), "--lora-dropout 0.1: applies to a LoRA adapter only (this run: --lora-rank 0)"),
    (TrainConfig(lora=LoRAConfig(targets=("wq",))), "--lora-targets wq: applies to a LoRA adapter only (this run: --lora-rank 0)"),
    (TrainConfig(lora=LoRAConfig(train_embeddings=True)), "--lora-train-embeddings: applies to a LoRA adapter only (this run: --lora-rank 0)"),
    (TrainConfig(lora_base_bf16=True), "--lora-base-bf16: applies to a LoRA adapter only (this run: --lora-rank 0)"),
    (EvalConfig(decoding=DecodeConfig(dfs_threshold=0.2)), "--dfs-threshold 0.2: applies to --decode dfs only (this run: --decode greedy)"),
    (EvalConfig(decoding=DecodeConfig(decode="sample", dfs_keep_greedy=False)),
     "--no-dfs-keep-greedy: applies to --decode dfs only (this run: --decode sample)"),
    (EvalConfig(decoding=DecodeConfig(samples=4)), "--samples 4: applies to --decode sample only (this run: --decode greedy)"),
    (EvalConfig(decoding=DecodeConfig(decode="dfs", temperature=0.5)), "--temperature 0.5: applies to --decode sample only (this run: --decode dfs)"),
    (EvalConfig(decoding=DecodeConfig(top_k=4)), "--top-k 4: applies to --decode sample only (this run: --decode greedy)"),
    (EvalConfig(decoding=DecodeConfig(score_views=4)), "--score-views 4: applies to --select poe only (this run: --select vote)"),
    (EvalConfig(ttt=TTTConfig(lr=1e-2)), "--ttt-lr 0.01: applies to test-time training only (this run: --ttt-steps 0)"),
    (EvalConfig(ttt=TTTConfig(lora=LoRAConfig(rank=8))), "--ttt-rank 8: applies to test-time training only (this run: --ttt-steps 0)"),
    (EvalConfig(ttt=TTTConfig(augment=False)), "--no-ttt-augment: applies to test-time training only (this run: --ttt-steps 0)"),
]


@pytest.mark.parametrize("config,message", IGNORED_CASES)
def test_a_flag_the_run_would_ignore_is_refused(config, message):
    with pytest.raises(ConfigError) as raised:
        validate(config)
    assert str(raised.value) == message


def test_the_same_flags_pass_where_they_apply():
    validate(train_config(colour_maps=8, input_loss=True, task_embedding=False, evaluated_share=0.25))
    validate(train_config(layout="in_context", generated_fraction=0.25, train_on_demo_outputs=False))
    validate(TrainConfig(init=BASE, model=ModelConfig(grid_positions=True)))  # adds grid positions to a plain checkpoint
    validate(train_config(**{**LORA_RUN, "lora": LoRAConfig(rank=4, alpha=16.0, dropout=0.1, targets=("wq",), train_embeddings=True)},
                         lora_base_bf16=True))
    validate(EvalConfig(decoding=DecodeConfig(decode="dfs", dfs_threshold=0.2, dfs_keep_greedy=False, select="poe", score_views=4)))
    validate(EvalConfig(decoding=DecodeConfig(decode="sample", samples=4, temperature=0.5, top_k=4)))
    validate(EvalConfig(ttt=TTTConfig(steps=4, lr=1e-2, train="lora", lora=LoRAConfig(rank=8), augment=False)))


def test_the_dead_ttt_train_embeddings_flag_is_gone():
    """Test-time training never trains the embeddings: TTTConfig's adapter leaves that LoRAConfig field out."""
    parser = argparse.ArgumentParser()
    add_config_flags(parser, EvalConfig)
    with pytest.raises(SystemExit):
        parser.parse_args(["--ttt-train-embeddings"])
    assert "ttt.lora.train_embeddings" not in settings(EvalConfig) and "lora.train_embeddings" in settings(TrainConfig)


def test_one_default_per_field_3d_rope():
    """train.py's model is ModelConfig's default; the shipped in-context base records its 1-D RoPE."""
    assert ModelConfig().rope == "3d" and TrainConfig().model == ModelConfig()
    assert read_config(BASE)["model"]["rope"] == "1d"


def test_the_defaults_pass_and_every_problem_is_listed_at_once():
    validate(TrainConfig())
    validate(EvalConfig())
    with pytest.raises(ConfigError, match="--batch-size 0: .*; --save-every 0: "):
        validate(replace(TrainConfig(), batch_size=0, save_every=0))


def test_resume_refuses_another_architecture_or_data_and_lists_the_fields():
    saved = TrainConfig(model=ModelConfig(n_heads=2, rope="3d"))
    with pytest.raises(ConfigError, match=r"refused changes: --layout pair -> in_context, --n-heads 2 -> 4 \(drop these flags"):
        resume_changes(saved, train_config(saved, model=ModelConfig(n_heads=4, rope="3d"), layout="in_context"))
    allowed = resume_changes(saved, replace(saved, max_steps=500, lr=3e-4, out="elsewhere"))
    assert allowed == {"--max-steps": [TrainConfig().max_steps, 500], "--lr": [1e-3, 3e-4]}  # recorded in config.json, not refused


def run_script(script: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("script,argv,message", [
    ("train.py", ["--batch-size", "0", "--out", "unused"], "error: --batch-size 0: must be an integer >= 1 and <= 4096\n"),
    ("evaluate.py", ["--select", "bogus", "--checkpoint", "checkpoints/base"], "error: --select bogus: must be one of vote, poe\n"),
    ("train.py", ["--resume", "--out", "no/such/run"], "error: no/such/run: no such checkpoint folder\n"),
    ("train.py", ["--minutes", "1e307", "--out", "unused"], "error: --minutes 1e+307: must be a finite number > 0 and "
                                                            "<= 10000000\n"),
    ("train.py", ["--out", "/proc/no/such/run"], "error: --out /proc/no/such/run: cannot create the run folder "
                                                 "(No such file or directory)\n"),
])
def test_entry_points_print_one_line_and_exit_1(script, argv, message, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert run_script(script, argv, monkeypatch, capsys) == (1, message)
    code, err = run_script(script, [*argv, "--debug"], monkeypatch, capsys)
    assert code == 1 and "Traceback" in err and err.endswith(message)


def test_a_device_torch_does_not_see_is_one_line_before_any_work():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    name, message = ("cuda", "torch sees no CUDA device here") if count == 0 else (f"cuda:{count}", f"torch sees {count} CUDA")
    with pytest.raises(ConfigError, match=f"--device {name}: {message}"):
        resolve_device(name)


@pytest.mark.parametrize("section,message", [
    ({"batch_size": -1}, "training.batch_size -1: must be an integer >= 1"),
    ({"layout": 5}, "training.layout: must be an object, not 5"),
    ({"layout": {"name": 5}}, "training.layout.name 5: must be a string"),
    ({"lora": {"targets": 5}}, "training.lora.targets 5: must be a list of strings"),
    ({"model": {"n_heads": 0}}, "training.model.n_heads 0: must be an integer >= 1"),
    ({"layout": {"augment": "yes"}}, 'training.layout.augment "yes": must be true or false'),
    ({"layout": "pair", "augment": "yes"}, 'training.layout.augment "yes": must be true or false'),  # flat: before LayoutConfig
    ({"bogus": 1}, "training.bogus: unknown field"),
    ([], "records no training config"),
])
def test_a_checkpoints_training_section_is_checked_where_it_is_read(section, message):
    """--resume and evaluate.py (which takes the layout from it) read a checkpoint's "training" section through
    read_training: the flags' own rules, named by the key in config.json."""
    with pytest.raises(CheckpointError, match=re.escape(f"ck/config.json: {message}")):
        read_training({"training": section}, "ck/config.json")
    saved = read_training({"training": {"data": "gone/folder", "out": "gone/run", "eval_data": "gone.json"}}, "ck/config.json")
    assert saved.data == "gone/folder"  # a path of the machine that trained is no problem of the checkpoint


def test_tasks_given_as_a_bare_comma_are_refused_not_read_as_no_tasks():
    """`--tasks ,` used to parse to (), the default: every task of the set was evaluated."""
    parser = argparse.ArgumentParser()
    add_config_flags(parser, EvalConfig)
    for text in (",", "a,,b", ""):
        with pytest.raises(ConfigError, match=f"--tasks {text}: must be task ids separated by commas, none of them empty"):
            validate(build_config(EvalConfig, given_flags(parser.parse_args(["--tasks", text]), EvalConfig)))
    assert build_config(EvalConfig, given_flags(parser.parse_args(["--tasks", "a,b"]), EvalConfig)).tasks == ("a", "b")

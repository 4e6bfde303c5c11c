"""arc.infra.config.validate (each field's rule and each config's problems) and arc.infra.errors: every bad flag
refused before any work, with its flag, its value and what is allowed; the entry points print a known error as one
line and exit 1, without a traceback."""
import runpy
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from arc.inference.config import DecodeConfig, EvalConfig, TTTConfig
from arc.infra.config import validate
from arc.infra.errors import ConfigError
from arc.model.config import LoRAConfig, ModelConfig
from arc.training.config import TrainConfig, resume_changes

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
    (dict(eval_set="seed21"), "--eval-set seed21: must be one of seed20, next20, dev20, all"),
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
]


@pytest.mark.parametrize("changes,message", TRAIN_CASES)
def test_bad_training_flags_are_refused_with_flag_value_and_rule(changes, message):
    with pytest.raises(ConfigError) as raised:
        validate(replace(TrainConfig(), **changes))
    assert str(raised.value).startswith(message)


EVAL_CASES = [
    (dict(decoding=DecodeConfig(attempts=0)), "--attempts 0: must be an integer >= 1"),
    (dict(decoding=DecodeConfig(samples=0)), "--samples 0: must be an integer >= 1"),
    (dict(decoding=DecodeConfig(top_k=0)), "--top-k 0: must be an integer >= 1 and <= 16"),
    (dict(decoding=DecodeConfig(select="bogus")), "--select bogus: must be one of vote, poe"),
    (dict(decoding=DecodeConfig(decode="beam")), "--decode beam: must be one of greedy, sample, dfs"),
    (dict(decoding=DecodeConfig(temperature=0.0)), "--temperature 0.0: must be a finite number > 0"),
    (dict(decoding=DecodeConfig(dfs_threshold=0.0)), "--dfs-threshold 0.0: must be a finite number > 0 and <= 1"),
    (dict(ttt=TTTConfig(steps=-1)), "--ttt-steps -1: must be an integer >= 0"),
    (dict(ttt=TTTConfig(steps=4, lora=LoRAConfig(rank=0))), "--ttt-rank 0: test-time training"),
    (dict(precision="bogus"), "--precision bogus: must be one of auto, bf16, fp32"),
    (dict(max_tasks=0), "--max-tasks 0: must be an integer >= 1"),
    (dict(tasks=("a", "b", "a")), "--tasks a,b,a: each task id at most once (repeated: a)"),
    (dict(checkpoint="no/such/run"), "--checkpoint no/such/run: must be a checkpoint folder"),
    (dict(out=str(ROOT / "README.md")), f"--out {ROOT / 'README.md'}: must be a folder, not an existing file"),
]


@pytest.mark.parametrize("changes,message", EVAL_CASES)
def test_bad_evaluation_flags_are_refused_with_flag_value_and_rule(changes, message):
    with pytest.raises(ConfigError) as raised:
        validate(replace(EvalConfig(), **changes))
    assert str(raised.value).startswith(message)


def test_the_defaults_pass_and_every_problem_is_listed_at_once():
    validate(TrainConfig())
    validate(EvalConfig())
    with pytest.raises(ConfigError, match="--batch-size 0: .*; --save-every 0: "):
        validate(replace(TrainConfig(), batch_size=0, save_every=0))


def test_resume_refuses_another_architecture_or_data_and_lists_the_fields():
    saved = TrainConfig(model=ModelConfig(n_heads=2, rope="3d"))
    with pytest.raises(ConfigError, match=r"refused changes: --layout pair -> in_context, --n-heads 2 -> 4 \(drop these flags"):
        resume_changes(saved, replace(saved, model=ModelConfig(n_heads=4, rope="3d"), layout="in_context"))
    allowed = resume_changes(saved, replace(saved, max_steps=500, lr=3e-4, out="elsewhere"))
    assert allowed == {"--max-steps": [TrainConfig().max_steps, 500], "--lr": [1e-3, 3e-4]}  # recorded in config.json, not refused


def run_script(script: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("script,argv,message", [
    ("train.py", ["--batch-size", "0", "--out", "unused"], "error: --batch-size 0: must be an integer >= 1\n"),
    ("evaluate.py", ["--select", "bogus", "--checkpoint", "checkpoints/base"], "error: --select bogus: must be one of vote, poe\n"),
    ("train.py", ["--resume", "--out", "no/such/run"], "error: no/such/run: no such checkpoint folder\n"),
])
def test_entry_points_print_one_line_and_exit_1(script, argv, message, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert run_script(script, argv, monkeypatch, capsys) == (1, message)
    code, err = run_script(script, [*argv, "--debug"], monkeypatch, capsys)
    assert code == 1 and "Traceback" in err and err.endswith(message)

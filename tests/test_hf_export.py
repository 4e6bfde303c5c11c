"""arc.model.export: a checkpoint of ours written as a Hugging Face folder loads in transformers with no code of
ours and computes the same logits and greedy tokens (a plain run, and a LoRA run on an imported Llama with
GQA and llama3 RoPE scaling); the tokenizer loads with PreTrainedTokenizerFast; checkpoints that are not
plain Llamas are refused, saying why. Skipped without transformers (requirements-test.txt installs it)."""
import sys
from dataclasses import replace

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.LlamaForCausalLM  # noqa: B018 - resolve the lazy import (seconds) at collection, not in a test

from conftest import TINY  # noqa: E402

from arc.data.tokenizer import END, PAD  # noqa: E402
from arc.inference.decode import greedy_decode  # noqa: E402
from arc.infra.errors import cli_main  # noqa: E402
from arc.layouts.rows import token_row
from arc.model.checkpoint import load_model  # noqa: E402
from arc.model.config import LoRAConfig  # noqa: E402
from arc.model.export import export_checkpoint, main  # noqa: E402
from arc.model.lora import merge_lora  # noqa: E402
from arc.training.trainer import train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def random_tokens(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, PAD, (rows, length), generator=torch.Generator().manual_seed(seed))  # no PAD


def assert_same_model(checkpoint, exported) -> None:
    """Our model (adapters merged) and transformers' load of the export: equal logits, equal greedy tokens."""
    ours, _, _ = load_model(checkpoint)
    merge_lora(ours)
    ours.eval()
    peer = transformers.AutoModelForCausalLM.from_pretrained(str(exported)).eval()
    assert type(peer).__name__ == "LlamaForCausalLM" and peer.config.eos_token_id == END
    tokens = random_tokens(2, 100)
    with torch.no_grad():
        assert (ours(tokens) - peer(input_ids=tokens).logits).abs().max().item() <= 1e-5
    prompts = random_tokens(2, 20, seed=1)
    mine = greedy_decode(ours, [token_row(p) for p in prompts.tolist()], [10, 10], end_id=-1, pad_id=PAD)
    theirs = peer.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False, max_new_tokens=10,
                           min_new_tokens=10, eos_token_id=None, pad_token_id=PAD)[:, 20:]
    assert mine == theirs.tolist()


def test_a_plain_run_exports_and_loads_in_transformers(tiny_train_config, tmp_path):
    run = train(tiny_train_config("plain", max_steps=3, lr=1e-2))
    exported = export_checkpoint(run, tmp_path / "hf")
    assert sorted(p.name for p in exported.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert_same_model(run, exported)
    for tokenizer in (transformers.PreTrainedTokenizerFast(tokenizer_file=str(exported / "tokenizer.json")),
                      transformers.AutoTokenizer.from_pretrained(str(exported))):
        assert tokenizer("BI1\nO", add_special_tokens=False)["input_ids"] == [13, 11, 1, 10, 12]
    assert transformers.AutoTokenizer.from_pretrained(str(exported)).eos_token == "E"


def test_a_lora_run_on_an_imported_llama_exports_merged(tiny_llama, tiny_train_config, tmp_path):
    """GQA, an explicit head width and llama3 scaling survive the round trip; the adapter and the trained
    embedding rows are in the exported weights."""
    run = train(tiny_train_config("llama-lora", init=tiny_llama("gqa_tied_llama3"),
                                  lora=LoRAConfig(rank=4, train_embeddings=True), max_steps=2, lr=1e-2))
    exported = export_checkpoint(run, tmp_path / "hf")
    config = transformers.AutoConfig.from_pretrained(str(exported))
    assert (config.num_key_value_heads, config.head_dim, config.vocab_size) == (2, 32, 16)
    assert config.rope_parameters["rope_type"] == "llama3"
    assert_same_model(run, exported)


@pytest.mark.parametrize("overrides, reason", [
    ({"layout": "pair"}, "task embeddings"),
    ({"model": replace(TINY, rope="3d")}, "rope must be '1d'"),
    ({"model": replace(TINY, grid_positions=True)}, "grid position embeddings"),
])
def test_checkpoints_that_are_not_plain_llamas_are_refused(tiny_train_config, tmp_path, overrides, reason):
    run = train(tiny_train_config("special", max_steps=0, **overrides))
    with pytest.raises(ValueError, match=f"not a plain Llama.*{reason}"):
        export_checkpoint(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_the_command_line(tiny_train_config, tmp_path, monkeypatch, capsys):
    """python -m arc.model.export: the folder written, or a refusal as one line on stderr and exit status 1."""
    plain, special = train(tiny_train_config("plain", max_steps=0)), train(tiny_train_config("special", max_steps=0, model=replace(TINY, rope="3d")))
    monkeypatch.setattr(sys, "argv", ["arc.model.export", "--checkpoint", str(plain), "--out", str(tmp_path / "hf")])
    cli_main(main)  # as `python -m arc.model.export` runs it
    assert "wrote" in capsys.readouterr().out and (tmp_path / "hf" / "config.json").exists()
    monkeypatch.setattr(sys, "argv", ["arc.model.export", "--checkpoint", str(special), "--out", str(tmp_path / "hf2")])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(main)  # as `python -m arc.model.export` runs it
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith(f"error: --checkpoint {special} is not a plain Llama")
    assert "rope must be '1d'" in err and err.count("\n") == 1

"""arc.model.hf: a tiny random Hugging Face Llama (GQA, tied embeddings, llama3 RoPE scaling; and an untied,
sharded one) imported into our model computes the reference's logits at the kept token ids, and greedy
decoding picks the same tokens; the vocabulary mapping and its refusals; a LoRA step leaves the base
alone; --init of the folder trains (LoRA with the embedding and head rows) and evaluate.py loads the run.
Skipped without transformers (requirements-test.txt installs it)."""
import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.LlamaForCausalLM  # noqa: B018 - resolve the lazy import (seconds) at collection, not in a test

from conftest import TINY_LLAMAS  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from arc.data.tokenizer import PAD, SYMBOLS  # noqa: E402
from arc.inference.config import EvalConfig  # noqa: E402
from arc.inference.decode import greedy_decode  # noqa: E402
from arc.inference.evaluation import evaluate  # noqa: E402
from arc.layouts.rows import IGNORE, Batch, token_row  # noqa: E402
from arc.model.checkpoint import adapter_base, checkpoint_dir, load_model, read_config  # noqa: E402
from arc.model.config import LoRAConfig  # noqa: E402
from arc.model.hf import import_hf, is_hf_folder, model_config, token_ids  # noqa: E402
from arc.model.lora import add_lora, load_adapter  # noqa: E402
from arc.training.optim import make_optimizer, optimizer_step  # noqa: E402
from arc.training.trainer import train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def reference(folder: str):
    return transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def random_tokens(rows: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, PAD, (rows, length), generator=torch.Generator().manual_seed(seed))  # no PAD


@pytest.mark.parametrize("name", list(TINY_LLAMAS))
def test_imported_logits_equal_the_reference_at_the_kept_ids(tiny_llama, name):
    folder = tiny_llama(name)
    model, _, described = import_hf(folder)
    kept = torch.tensor(list(described["hf_import"]["token_ids"].values()))
    tokens = random_tokens(2, 200)  # past the llama3 scaling's original context of 64
    with torch.no_grad():
        ours, theirs = model.eval()(tokens), reference(folder)(input_ids=kept[tokens]).logits[..., kept]
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert theirs.std() > 1  # logits that differ from token to token: the comparison has teeth
    assert model.cfg.kv_heads == TINY_LLAMAS[name]["kv_heads"] and model.cfg.rope == "1d"
    assert described["hf_import"]["tied_embeddings"] == TINY_LLAMAS[name]["tie"]


def test_a_wrong_setting_shows_in_the_logits(tiny_llama):
    """The same weights without the llama3 scaling give different logits: the test above would notice."""
    folder = tiny_llama("gqa_tied_llama3")
    model, _, described = import_hf(folder)
    kept = torch.tensor(list(described["hf_import"]["token_ids"].values()))
    config = json.loads((Path(folder) / "config.json").read_text())
    del config["rope_parameters"]["rope_type"]  # plain RoPE now
    unscaled, _, _ = import_hf(write_variant(folder, config))
    tokens = random_tokens(1, 200)
    with torch.no_grad():
        assert (unscaled.eval()(tokens) - model.eval()(tokens)).abs().max() > 1e-2


def test_greedy_tokens_equal_the_reference_restricted_to_the_kept_ids(tiny_llama):
    folder = tiny_llama("gqa_tied_llama3")
    model, _, described = import_hf(folder)
    kept = torch.tensor(list(described["hf_import"]["token_ids"].values()))
    prompts = random_tokens(2, 30, seed=1)
    ours = greedy_decode(model.eval(), [token_row(p) for p in prompts.tolist()], [12, 12], end_id=-1, pad_id=PAD)
    peer, tokens = reference(folder), prompts.clone()
    with torch.no_grad():
        for _ in range(12):  # the reference's greedy choice among our 16 tokens, step by step
            tokens = torch.cat([tokens, peer(input_ids=kept[tokens]).logits[:, -1, kept].argmax(-1, keepdim=True)], 1)
    assert ours == tokens[:, 30:].tolist()


def test_token_mapping_known_answer(tiny_llama):
    """Digits, the row end and the markers take the tokenizer's single-character tokens ("\\n" is byte-level
    "Ċ"), B and E its begin/end of text, and P (no pad token) the character 'P', with a note saying so."""
    folder = tiny_llama("gqa_tied_llama3")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")
    hf = json.loads((Path(folder) / "config.json").read_text())
    ids, notes = token_ids(folder, hf)
    assert ids[:13] == [tokenizer.token_to_id(c) for c in "0123456789"] + [tokenizer.token_to_id("Ċ"), 40, 46]
    assert ids[13:15] == [tokenizer.token_to_id("<|begin_of_text|>"), tokenizer.token_to_id("<|end_of_text|>")]
    assert ids[15] == tokenizer.token_to_id("P") and notes == ["P: no pad_token_id; took the single token of the character 'P'"]
    assert token_ids(folder, {**hf, "pad_token_id": 7})[0][15] == 7  # a pad token is used when there is one
    taken, notes = token_ids(folder, {**hf, "pad_token_id": hf["eos_token_id"]})
    assert taken[15] == ids[15] and "is taken" in notes[0]  # ... unless it is E's


def write_variant(folder: str, config: dict, tokenizer: dict | None = None) -> str:
    """A copy of folder with another config.json (and tokenizer.json)."""
    copy = Path(folder).parent / f"{Path(folder).name}-variant-{abs(hash(json.dumps(config, sort_keys=True))) % 10**8}"
    shutil.copytree(folder, copy, dirs_exist_ok=True)
    (copy / "config.json").write_text(json.dumps(config))
    if tokenizer is not None:
        (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    return str(copy)


def test_a_character_without_a_single_token_is_refused(tiny_llama):
    folder = tiny_llama("gqa_tied_llama3")
    tokenizer = json.loads((Path(folder) / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    del vocab["O"]
    tokenizer["model"]["merges"] = [m for m in tokenizer["model"]["merges"] if "O" not in m]
    broken = write_variant(folder, json.loads((Path(folder) / "config.json").read_text()), tokenizer)
    with pytest.raises(ValueError, match=r"no single token for 'O'.*cannot be imported"):
        import_hf(broken)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "only Llama checkpoints"),
    ({"attention_bias": True}, "attention_bias"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "'yarn' is not implemented"),
])
def test_what_the_model_does_not_compute_is_refused(tiny_llama, change, message):
    hf = json.loads((Path(tiny_llama("gqa_tied_llama3")) / "config.json").read_text())
    with pytest.raises(ValueError, match=message):
        model_config({**hf, **change})


def test_the_classic_rope_layout_reads_the_same(tiny_llama):
    """The Hub's Llama 3.x config.json: rope_theta and rope_scaling rather than transformers 5's rope_parameters."""
    hf = json.loads((Path(tiny_llama("gqa_tied_llama3")) / "config.json").read_text())
    rope = dict(hf["rope_parameters"])
    classic = {**{k: v for k, v in hf.items() if k != "rope_parameters"}, "rope_theta": rope.pop("rope_theta"), "rope_scaling": rope}
    assert model_config(classic) == model_config(hf)
    assert model_config(hf).rope_scaling["factor"] == 8.0 and model_config(hf).max_seq_len == 256


def test_load_model_imports_a_hugging_face_folder(tiny_llama, tiny_train_config):
    folder = tiny_llama("mha_untied_sharded")
    assert (Path(folder) / "model.safetensors.index.json").exists()  # sharded
    model, tokenizer, config = load_model(folder)
    assert is_hf_folder(folder) and config["hf_import"]["folder"] == folder
    assert tokenizer.encode_text("BI1\nO") == [13, 11, 1, 10, 12]  # our ids stay ours
    ours = train(tiny_train_config("plain", max_steps=0))
    assert not is_hf_folder(ours)


def one_step(model, tokens: torch.Tensor) -> None:
    targets = torch.where(torch.arange(tokens.shape[1] - 1) > 5, tokens[:, 1:], IGNORE)
    batch = Batch(tokens[:, :-1], targets, torch.zeros(len(tokens), dtype=torch.long), torch.zeros(len(tokens), dtype=torch.long))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer_step(model, make_optimizer(model, 1e-2, 0.0), params, [batch], 1.0, torch.device("cpu"), None)


@pytest.mark.parametrize("embeddings", [False, True], ids=["adapters", "adapters+embeddings"])
def test_a_lora_step_on_an_imported_model_leaves_the_base_unchanged(tiny_llama, embeddings):
    folder = tiny_llama("gqa_tied_llama3")
    model, _, _ = import_hf(folder)
    fresh = dict(import_hf(folder)[0].named_parameters())
    add_lora(model, rank=4, alpha=8.0, full=("embed.weight", "head.weight") if embeddings else ())
    one_step(model.train(), random_tokens(2, 40))
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        unchanged = torch.equal(p, fresh[name.replace(".base.", ".")])
        assert unchanged != (embeddings and name in ("embed.weight", "head.weight")), name


def test_init_from_a_hugging_face_folder_trains_and_evaluates(tiny_llama, tiny_train_config, task_dirs, tmp_path):
    """train.py --init <folder> --lora-rank R --lora-train-embeddings: the import decides the model (the
    default --rope 3d does not apply), the adapter file carries the trained embedding and head rows, and
    the run folder loads again (evaluate.py) from the Hugging Face folder plus the adapter."""
    folder = tiny_llama("gqa_tied_llama3")
    out = train(tiny_train_config("llama-lora", init=folder, lora=LoRAConfig(rank=4, train_embeddings=True),
                                  max_steps=3, lr=1e-2))
    config = read_config(out)
    assert config["model"]["rope"] == "1d" and config["model"]["n_kv_heads"] == 2
    assert adapter_base(out).resolve() == Path(folder).resolve()
    assert config["lora"]["train_embeddings"] is True
    assert config["hf_import"]["token_ids"]["\n"] == 198
    adapter = load_file(str(checkpoint_dir(out) / "adapter.safetensors"))
    fresh, _, _ = import_hf(folder)
    assert not torch.equal(adapter["embed.weight"], fresh.embed.weight)  # trained rows, saved whole

    model, _, _ = load_model(out)
    manual, _, _ = import_hf(folder)
    add_lora(manual, rank=4, alpha=32.0, full=("embed.weight", "head.weight"))
    load_adapter(manual, str(checkpoint_dir(out) / "adapter.safetensors"))
    tokens = random_tokens(2, 30)
    with torch.no_grad():
        assert torch.equal(model.eval()(tokens), manual.eval()(tokens))

    results = evaluate(EvalConfig(adapter=str(out), data=task_dirs[1], task_set="all", device="cpu", precision="fp32",
                                  out=str(tmp_path / "eval")))
    assert results["tasks_total"] == 1 and results["eval_loss"] > 0 and results["checkpoint"] == folder


def test_full_fine_tune_of_an_imported_model_and_the_pair_layout_refused(tiny_llama, tiny_train_config):
    folder = tiny_llama("mha_untied_sharded")
    out = train(tiny_train_config("llama-full", init=folder, max_steps=2))
    model, _, config = load_model(out)  # model.safetensors with the imported shapes
    assert model.cfg.d_model == 48 and model.embed.weight.shape == (len(SYMBOLS), 48)
    assert model.embed.weight.dtype == torch.float32 and "hf_import" in config
    with pytest.raises(ValueError, match="--layout in_context"):
        train(tiny_train_config("llama-pair", init=folder, layout="pair", max_steps=1))

"""Import a pretrained Hugging Face Llama from a local folder into arc.model.transformer, its vocabulary cut to our 16 tokens.

The walkthrough this project reproduces fine-tunes a pretrained Llama-3.2-1B; this module lets the
hand-written model start from such weights. The user points at a folder holding what Hugging Face
writes (nothing is downloaded, and transformers is never imported: the files are read directly):

    config.json                         LlamaForCausalLM's configuration
    model.safetensors                   the weights, or model.safetensors.index.json and its shards
    tokenizer.json                      the tokenizer, read with the `tokenizers` library

What carries over: grouped-query attention (num_key_value_heads), an explicit head_dim, rope_theta and
Llama 3.x's "llama3" RoPE scaling, the RMSNorm epsilon, and tied input/output embeddings (untied on
import: after the vocabulary cut both tables are 16 rows, so a copy costs nothing and the two can then
be trained apart, as the walkthrough's fine-tune does).

Vocabulary reduction (the ARChitects' keep_single_char_tokens / shrink_model_embeddings): our token
ids stay ours (0-9, row end, I, O, B, E, P); only the rows of the embedding and of the output head are
picked from the checkpoint's vocabulary, at the ids its tokenizer gives our symbols:
    0-9, "\\n", I, O   the checkpoint's single token for that character: the id it encodes to when it
                      encodes to one token; else a vocabulary entry equal to the character, or its
                      byte-fallback token (<0x0A>). A character with none of these cannot be written one
                      token per cell, so the import stops with an error naming it.
    B, E              the checkpoint's begin and end of text (bos_token_id, eos_token_id; the first of a list)
    P                 its pad_token_id; without one (Llama 3 has none), or if that id is already taken,
                      the single token of the character "P". Padding is never attended to and never a
                      target: its head row only enters the softmax's normalisation.
The mapping is recorded in the run's config.json ("hf_import"); arc.model.export writes a model back out.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from arc.data.tokenizer import SYMBOLS, GridTokenizer
from arc.model.config import ModelConfig
from arc.model.rope import rope_table
from arc.model.transformer import Transformer

IMPORT_MAX_LEN = 8192  # longest sequence of an imported model (Llama 3.x allow 131072; ARC rows need far less, and the RoPE table and default cache size follow it)
ROPE_TYPES = ("default", "llama3")  # RoPE variants this model implements

# our parameter names -> Hugging Face LlamaForCausalLM's, per block ({i}: the layer) and outside the blocks
BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight", "mlp_norm.weight": "post_attention_layernorm.weight",
    "attn.wq.weight": "self_attn.q_proj.weight", "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight", "attn.wo.weight": "self_attn.o_proj.weight",
    "mlp.w_gate.weight": "mlp.gate_proj.weight", "mlp.w_up.weight": "mlp.up_proj.weight",
    "mlp.w_down.weight": "mlp.down_proj.weight",
}
EMBED, HEAD, NORM = "model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"


def hf_names(n_layers: int) -> dict[str, str]:
    """Every parameter of a plain Llama of ours -> its Hugging Face name (the embedding and head included)."""
    names = {"embed.weight": EMBED, "norm.weight": NORM, "head.weight": HEAD}
    for i in range(n_layers):
        names.update({f"blocks.{i}.{ours}": f"model.layers.{i}.{theirs}" for ours, theirs in BLOCK_NAMES.items()})
    return names


def is_hf_folder(folder: str | Path) -> bool:
    """A Hugging Face model folder (config.json names a model_type or architectures), not a run folder of
    ours (whose config.json holds a "model" section)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return False
    config = json.loads(path.read_text())
    return not isinstance(config.get("model"), dict) and ("model_type" in config or "architectures" in config)


def rope_settings(hf: dict) -> tuple[float, dict | None]:
    """rope_theta and the llama3 scaling (None: plain RoPE), from either layout of config.json: the
    classic rope_theta + rope_scaling (the Hub's Llama 3.x files) or transformers 5's rope_parameters."""
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ValueError(f"RoPE type {kind!r} is not implemented (only {' and '.join(ROPE_TYPES)})")
    if kind == "default":
        return theta, None
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return theta, {"rope_type": "llama3", **{k: rope[k] for k in keys}}


def model_config(hf: dict, max_len: int = IMPORT_MAX_LEN) -> ModelConfig:
    """Our ModelConfig for a Hugging Face Llama config.json (vocab_size: our 16 tokens); refuses what
    the hand-written model does not compute (biases, another activation, another RoPE)."""
    kind, architectures = hf.get("model_type"), hf.get("architectures") or []
    if kind != "llama" or any(a != "LlamaForCausalLM" for a in architectures):
        raise ValueError(f"only Llama checkpoints import (model_type llama, LlamaForCausalLM), not {kind} {architectures}")
    refused = {key: hf[key] for key in ("attention_bias", "mlp_bias") if hf.get(key)}
    if hf.get("hidden_act", "silu") != "silu":
        refused["hidden_act"] = hf["hidden_act"]
    if refused:
        raise ValueError(f"this Llama differs from the hand-written model: {refused}")
    theta, scaling = rope_settings(hf)
    d_model, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    return ModelConfig(
        d_model=d_model, n_layers=hf["num_hidden_layers"], n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads, head_size=hf.get("head_dim") or d_model // n_heads,
        mlp_hidden=hf["intermediate_size"], max_seq_len=min(hf.get("max_position_embeddings", max_len), max_len),
        rope_theta=theta, rope_scaling=scaling, norm_eps=hf.get("rms_norm_eps", 1e-6), rope="1d",
    )


def single_token(tokenizer: Tokenizer, char: str) -> int | None:
    """The checkpoint's one token for a character, or None (see the module docstring for the order)."""
    unknown = getattr(tokenizer.model, "unk_token", None)
    ids = [i for i in tokenizer.encode(char, add_special_tokens=False).ids if tokenizer.id_to_token(i) != unknown]
    if len(ids) == 1:
        return ids[0]
    for name in (char, f"<0x{ord(char):02X}>"):  # e.g. sentencepiece Llamas encode "1" as "▁", "1"
        found = tokenizer.token_to_id(name)
        if found is not None:
            return found
    return None


def token_ids(folder: str | Path, hf: dict) -> tuple[list[int], list[str]]:
    """For each of our 16 tokens, the checkpoint's token id whose rows it takes, and notes on the choices made."""
    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    first = lambda value: value[0] if isinstance(value, list) else value  # noqa: E731 - eos may be a list
    special = {"B": first(hf.get("bos_token_id")), "E": first(hf.get("eos_token_id"))}
    ids, notes = [], []
    for symbol in SYMBOLS:
        if symbol in special:
            if special[symbol] is None:
                raise ValueError(f"{folder}/config.json has no {'bos' if symbol == 'B' else 'eos'}_token_id for our {symbol!r} token")
            ids.append(int(special[symbol]))
            continue
        if symbol == "P":
            pad = hf.get("pad_token_id")
            if pad is not None and pad not in ids:
                ids.append(int(pad))
                continue
            notes.append(f"P: {'no pad_token_id' if pad is None else f'pad_token_id {pad} is taken'}; "
                         f"took the single token of the character 'P'")
        found = single_token(tokenizer, symbol)
        if found is None:
            pieces = tokenizer.encode(symbol, add_special_tokens=False).tokens
            raise ValueError(f"{folder}/tokenizer.json has no single token for {symbol!r} (it encodes as {pieces}): "
                             f"the grid layout needs one token per symbol, so this checkpoint cannot be imported")
        ids.append(found)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{folder}: two of our tokens map to the same checkpoint token: {dict(zip(SYMBOLS, ids))}")
    return ids, notes


class WeightFiles:
    """The tensors of model.safetensors, or of the shards a model.safetensors.index.json lists, by name."""

    def __init__(self, folder: Path):
        index = folder / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: folder / shard for name, shard in weight_map.items()}
        elif (folder / "model.safetensors").exists():
            with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
                self.files = {name: folder / "model.safetensors" for name in f.keys()}
        else:
            raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json")

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str, rows: list[int] | None = None) -> torch.Tensor:
        """The tensor, or only the given rows of it (read row by row: the rest of a 128k-row embedding never loads)."""
        if name not in self.files:
            raise KeyError(f"the checkpoint has no tensor {name}")
        with safe_open(str(self.files[name]), framework="pt") as f:
            if rows is None:
                return f.get_tensor(name)
            table = f.get_slice(name)
            return torch.cat([table[i : i + 1] for i in rows])


def import_hf(folder: str | Path, dtype: torch.dtype = torch.float32,
              max_len: int = IMPORT_MAX_LEN) -> tuple[Transformer, GridTokenizer, dict]:
    """The model a Hugging Face Llama folder holds, with our 16-token vocabulary; our grid tokenizer; and
    the config.json entries that describe it ("model", and "hf_import": the folder and the token mapping)."""
    folder = Path(folder)
    hf = json.loads((folder / "config.json").read_text())
    cfg = model_config(hf, max_len)
    ids, notes = token_ids(folder, hf)
    if max(ids) >= hf["vocab_size"]:
        raise ValueError(f"{folder}: token id {max(ids)} is outside the model's vocabulary of {hf['vocab_size']}")
    weights = WeightFiles(folder)
    tied = hf.get("tie_word_embeddings", False) or HEAD not in weights
    state = {}
    for ours, theirs in hf_names(cfg.n_layers).items():
        if ours in ("embed.weight", "head.weight"):
            theirs = EMBED if ours == "embed.weight" or tied else HEAD
            state[ours] = weights.get(theirs, ids).to(dtype)
        else:
            state[ours] = weights.get(theirs).to(dtype)
    with torch.device("meta"):  # no random initialisation of weights that are about to be replaced
        model = Transformer(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    model.rope_cos, model.rope_sin = rope_table(cfg)  # the RoPE tables are not weights: compute them for real
    described = {"model": asdict(cfg), "hf_import": {
        "folder": str(folder), "token_ids": dict(zip(SYMBOLS, ids)), "tied_embeddings": tied, "notes": notes}}
    return model, GridTokenizer(), described

"""Import a pretrained Hugging Face Llama from a local folder into arc.model.transformer, its vocabulary cut to our
16 tokens.

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

Nothing the folder says is trusted unchecked: config.json is read with a size cap and its keys typed
(arc.model.schema), the ModelConfig made from it passes the same rules as train.py's flags, and each
tensor is checked for shape and for NaN or infinity as it is read. What is refused raises ValueError naming
the file (arc.model.checkpoint.load_model reports it as a CheckpointError).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from arc.data.tokenizer import SYMBOLS, GridTokenizer
from arc.infra.errors import CheckpointError
from arc.infra.files import read_capped, read_json
from arc.model.config import ModelConfig
from arc.model.rope import rope_table
from arc.model.schema import (
    MAX_INDEX_BYTES,
    MAX_TOKENIZER_BYTES,
    check_model,
    hf_key_problems,
    hf_name,
    is_hugging_face,
    read_config_file,
)
from arc.model.transformer import Transformer

# longest sequence of an imported model (Llama 3.x allow 131072; ARC rows need far less, and the RoPE table and
# default cache size follow it)
IMPORT_MAX_LEN = 8192
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
    ours (whose config.json holds a "model" section). A config.json that cannot be read as a JSON object
    (not JSON, a symlink to /dev/zero, too large) is a CheckpointError naming it."""
    path = Path(folder) / "config.json"
    if not path.exists():
        return False
    return is_hugging_face(read_config_file(path))


def hf_model_config(folder: str | Path, max_len: int = IMPORT_MAX_LEN) -> ModelConfig:
    """The ModelConfig of a Hugging Face Llama folder, its config.json's keys typed and the result held to
    ModelConfig's rules (each problem named by the Hugging Face key: `hidden_size 1000000000: ...`)."""
    path = Path(folder) / "config.json"
    hf = read_config_file(path)
    try:
        refuse_other_models(hf)  # named first: a GPT-2's config.json lacks every key a Llama's has
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if found := hf_key_problems(hf):
        raise ValueError(f"{path}: {'; '.join(found)}")
    try:
        cfg = model_config(hf, max_len)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    try:
        check_model(cfg, path, hf_name)
    except CheckpointError as e:
        raise ValueError(str(e)) from None
    return cfg


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


def refuse_other_models(hf: dict) -> None:
    """Only a Llama (LlamaForCausalLM) imports: any other model is refused by its name."""
    kind, architectures = hf.get("model_type"), hf.get("architectures") or []
    if kind != "llama" or not isinstance(architectures, list) or any(a != "LlamaForCausalLM" for a in architectures):
        raise ValueError(f"only Llama checkpoints import (model_type llama, LlamaForCausalLM), not {kind} "
                         f"{architectures}")


def model_config(hf: dict, max_len: int = IMPORT_MAX_LEN) -> ModelConfig:
    """Our ModelConfig for a Hugging Face Llama config.json (vocab_size: our 16 tokens); refuses what
    the hand-written model does not compute (biases, another activation, another RoPE)."""
    refuse_other_models(hf)
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


def _file(path: Path, read, what: str):
    """read(path), a missing or unreadable file raised as a ValueError that names it."""
    try:
        return read(path)
    except FileNotFoundError:
        raise ValueError(f"{path.parent}: no {path.name} ({what})") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None


def read_tokenizer(path: Path) -> Tokenizer:
    """A Hugging Face tokenizer.json, read with a size cap."""
    text = _file(path, lambda p: read_capped(p, MAX_TOKENIZER_BYTES).decode("utf-8", errors="replace"), "the tokenizer")
    try:
        return Tokenizer.from_str(text)
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises its own exception type
        raise ValueError(f"{path}: not a tokenizer ({e})") from None


def token_ids(folder: str | Path, hf: dict) -> tuple[list[int], list[str]]:
    """For each of our 16 tokens, the checkpoint's token id whose rows it takes, and notes on the choices made."""
    tokenizer = read_tokenizer(Path(folder) / "tokenizer.json")
    first = lambda value: value[0] if isinstance(value, list) else value  # noqa: E731 - eos may be a list
    special = {"B": first(hf.get("bos_token_id")), "E": first(hf.get("eos_token_id"))}
    ids, notes = [], []
    for symbol in SYMBOLS:
        if symbol in special:
            if special[symbol] is None:
                key = f"{'bos' if symbol == 'B' else 'eos'}_token_id"
                raise ValueError(f"{folder}/config.json has no {key} for our {symbol!r} token")
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
            weight_map = _file(index, lambda p: read_json(p, MAX_INDEX_BYTES), "the shard index").get("weight_map")
            # shards are files of this folder: a name with a folder in it (../, /dev/zero) is no shard
            shards = weight_map.values() if isinstance(weight_map, dict) else None
            if shards is None or not all(isinstance(s, str) and Path(s).name == s and s not in ("", ".", "..")
                                         for s in shards):
                raise ValueError(f"{index}: its weight_map must map tensor names to shard files of {folder}")
            self.files = {name: folder / shard for name, shard in weight_map.items()}
        elif (folder / "model.safetensors").exists():
            self.files = dict.fromkeys(self._names(folder / "model.safetensors"), folder / "model.safetensors")
        else:
            raise ValueError(f"{folder}: no model.safetensors or model.safetensors.index.json (the weights)")

    @staticmethod
    def _names(path: Path) -> list[str]:
        try:
            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from None

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str, rows: list[int] | None = None, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The tensor, or only the given rows of it (read row by row: the rest of a 128k-row embedding never
        loads); its shape (of the rows taken) checked against `shape` before it is read, its values finite."""
        if name not in self.files:
            folder = self.files and next(iter(self.files.values())).parent
            raise ValueError(f"{folder}: the checkpoint has no tensor {name}")
        path = self.files[name]
        try:
            with safe_open(str(path), framework="pt") as f:
                table = f.get_slice(name)
                found = tuple(table.get_shape())
                if rows is not None:
                    found = (len(rows), *found[1:])
                    if any(not 0 <= i < table.get_shape()[0] for i in rows):
                        raise ValueError(f"{path}: {name} has no row {max(rows)} (it has {table.get_shape()[0]})")
                if shape is not None and found != shape:
                    raise ValueError(f"{path}: tensor {name} has shape {list(found)}, config.json says {list(shape)}")
                tensor = f.get_tensor(name) if rows is None else torch.cat([table[i : i + 1] for i in rows])
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - a missing shard, a damaged file: safetensors' own error types
            raise ValueError(f"{path}: cannot read tensor {name} ({e})") from None
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: tensor {name} holds NaN or infinity: refused")
        return tensor


def import_hf(folder: str | Path, dtype: torch.dtype = torch.float32,
              max_len: int = IMPORT_MAX_LEN) -> tuple[Transformer, GridTokenizer, dict]:
    """The model a Hugging Face Llama folder holds, with our 16-token vocabulary; our grid tokenizer; and
    the config.json entries that describe it ("model", and "hf_import": the folder and the token mapping)."""
    folder = Path(folder)
    cfg = hf_model_config(folder, max_len)  # every key it reads typed, the model held to ModelConfig's rules
    hf = read_config_file(folder / "config.json")
    ids, notes = token_ids(folder, hf)
    if max(ids) >= hf["vocab_size"]:
        raise ValueError(f"{folder}: token id {max(ids)} is outside the model's vocabulary of {hf['vocab_size']}")
    weights = WeightFiles(folder)
    tied = hf.get("tie_word_embeddings", False) or HEAD not in weights
    with torch.device("meta"):  # no random initialisation of weights that are about to be replaced
        model = Transformer(cfg)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    state = {}
    for ours, theirs in hf_names(cfg.n_layers).items():
        if ours in ("embed.weight", "head.weight"):
            theirs = EMBED if ours == "embed.weight" or tied else HEAD
            state[ours] = weights.get(theirs, ids, shapes[ours]).to(dtype)
        else:
            state[ours] = weights.get(theirs, shape=shapes[ours]).to(dtype)
    model.load_state_dict(state, strict=True, assign=True)
    model.rope_cos, model.rope_sin = rope_table(cfg)  # the RoPE tables are not weights: compute them for real
    described = {"model": asdict(cfg), "hf_import": {
        "folder": str(folder), "token_ids": dict(zip(SYMBOLS, ids)), "tied_embeddings": tied, "notes": notes}}
    return model, GridTokenizer(), described

"""Export a checkpoint of ours as a Hugging Face Llama folder, loadable by transformers with no code of ours.
The project's third command (beside train.py and evaluate.py), run as a module:

    python -m arc.model.export --checkpoint checkpoints/base --out exported/base
    python -m arc.model.export --checkpoint checkpoints/lora --out exported/lora  # a LoRA run: base + adapter, merged

writes (transformers is not imported: the files are written directly, as arc.model.hf reads them)
    config.json               LlamaForCausalLM's configuration (our 16-token vocabulary, B/E/P as bos/eos/pad)
    model.safetensors         the weights under Hugging Face's names, untied embedding and head
    tokenizer.json            our grid tokenizer (loads with PreTrainedTokenizerFast and AutoTokenizer)
    tokenizer_config.json     its special tokens, for AutoTokenizer

Only a checkpoint that is a plain Llama can be written so: 1-D RoPE (with or without llama3 scaling),
no grid position embeddings, no task or transform embeddings. LlamaForCausalLM has none of those
inputs, so a checkpoint that uses them would compute something else there: it is refused, saying which.
A model imported from a pretrained Llama (arc.model.hf) is exported with its vocabulary as we cut it, 16 tokens.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from arc.data.tokenizer import BEGIN, END, PAD, SYMBOLS
from arc.infra.errors import ConfigError, cli_main
from arc.infra.files import atomic_write, atomic_write_text
from arc.model.checkpoint import load_model
from arc.model.config import ModelConfig
from arc.model.hf import hf_names
from arc.model.lora import merge_lora
from arc.model.transformer import Transformer


def refusals(cfg: ModelConfig) -> list[str]:
    """Why a model with this config is not a plain LlamaForCausalLM (empty: it is one)."""
    why = []
    if cfg.rope != "1d":
        why.append(f"rope {cfg.rope!r} rotates by each cell's grid coordinates; Llama's RoPE rotates by the sequence "
                   "position (rope must be '1d')")
    if cfg.grid_positions:
        why.append("grid position embeddings (a learned row and column vector per cell) have no Llama counterpart")
    if cfg.n_tasks:
        why.append(f"task embeddings ({cfg.n_tasks} tasks, pair layout) need each row's task id, an input Llama does "
                   "not take")
    if cfg.transform_embedding:
        why.append("transform embeddings need each row's D8 transform, an input Llama does not take")
    return why


def llama_config(cfg: ModelConfig, dtype: torch.dtype) -> dict:
    """LlamaForCausalLM's config.json for our model (rope_theta and rope_scaling in the classic layout,
    which every transformers version reads). max_position_embeddings is our max_seq_len: for an imported
    Llama 3.x that equals its scaling's original context (8192), which transformers warns about and
    accepts; llama3 scaling does not depend on it."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.mlp_width,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim, "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta, "rope_scaling": cfg.rope_scaling, "hidden_act": "silu",
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False, "tie_word_embeddings": False,
        "bos_token_id": BEGIN, "eos_token_id": END, "pad_token_id": PAD,
        "torch_dtype": str(dtype).removeprefix("torch."), "use_cache": True,
    }


def plain_weights(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face's names; LoRA adapters are merged into their base weights first."""
    merge_lora(model)
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith((".lora_a", ".lora_b")):
            continue
        state[name.replace(".base.weight", ".weight")] = tensor
    names = hf_names(model.cfg.n_layers)
    if state.keys() != names.keys():
        raise ValueError(f"parameters without a Llama name: {sorted(state.keys() ^ names.keys())}")
    return {names[k]: v.detach().cpu().contiguous() for k, v in state.items()}


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the checkpoint (a run folder of ours, LoRA runs included) as a Hugging Face Llama folder."""
    model, tokenizer, _ = load_model(checkpoint)
    why = refusals(model.cfg)
    if why:
        raise ValueError(f"{checkpoint} is not a plain Llama, so it cannot be exported as LlamaForCausalLM: "
                         + "; ".join(why))
    weights = plain_weights(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = next(iter(weights.values())).dtype
    atomic_write(out / "model.safetensors", lambda p: save_file(weights, p, metadata={"format": "pt"}))
    atomic_write(out / "tokenizer.json", lambda p: tokenizer.save(str(p)))
    special = {"bos_token": SYMBOLS[BEGIN], "eos_token": SYMBOLS[END], "pad_token": SYMBOLS[PAD]}
    atomic_write_text(out / "tokenizer_config.json", json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.cfg.max_seq_len, **special}, indent=2))
    atomic_write_text(out / "config.json", json.dumps(llama_config(model.cfg, dtype), indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="a run folder of ours (model.safetensors, or a LoRA run's adapter)")
    parser.add_argument("--out", required=True, help="the Hugging Face folder to write")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error (also ARC_DEBUG=1)")
    args = parser.parse_args()
    try:
        out = export_checkpoint(args.checkpoint, args.out)
    except ValueError as error:  # a checkpoint that is no plain Llama
        raise ConfigError(f"--checkpoint {error}") from None
    print(f"wrote {out}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")


if __name__ == "__main__":
    cli_main(main)  # a refused or unreadable checkpoint: one line on stderr, exit status 1 (arc.infra.errors)

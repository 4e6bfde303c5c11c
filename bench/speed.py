"""Speed benchmark: how fast our hand-written transformer trains and decodes on this machine, measured
against the machine's own matmul peak (MFU) and against Hugging Face's LlamaForCausalLM running the
same weights (the peer).

One run measures, on one machine:
    peak     matmul FLOP/s in fp32 and bf16 (large square matmuls): the MFU denominators
    train    tokens/s and MFU of one optimizer step (forward + backward + clipping + fused AdamW), at the
             default training config and a ~5M-parameter config: ours eager, ours torch.compile'd (as the
             trainer runs it; compile time reported apart), and the peer eager
    decode   greedy decoding tokens/s at batch 1 and 8 (a long prompt, then a fixed number of new
             tokens) and the prefill time: ours (arc.inference.decode.greedy_decode) vs the peer's generate()
    memory   peak RSS on CPU, max allocated on CUDA, of each of those cases

Why: MFU says how far a step is from what the hardware can do; the peer, checked to compute the same
logits and the same greedy tokens before anything is timed, says whether our code leaves speed on the
table that a widely used implementation does not. Each timed case runs in a fresh spawned process, so
its memory peak and its warm-up are its own.

    python bench/speed.py                  # about 5 min on a 2-core CPU (three cold compiles: 2 min of it)
    python bench/speed.py --quick          # shorter rows and decodes, one timed rep
    python bench/speed.py --threads 1      # while another process is using the CPU (see the note it prints)
    python bench/speed.py --device cuda
    python bench/speed.py --device cuda --precision bf16   # bf16 training cases only (bench/gpu_check.sh)

Writes bench/results.json (every number) and bench/results.md (the table it prints).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `python bench/speed.py` puts bench/, not the repo root, on the path

from arc.data.tokenizer import PAD  # noqa: E402
from arc.inference.decode import greedy_decode  # noqa: E402
from arc.infra.runtime import autocast_dtype, resolve_device  # noqa: E402
from arc.layouts.rows import token_row
from arc.model.config import ModelConfig
from arc.model.hf import BLOCK_NAMES, EMBED, HEAD, NORM  # noqa: E402
from arc.model.transformer import Transformer  # noqa: E402
from arc.training.config import TrainConfig  # noqa: E402
from arc.training.optim import make_optimizer  # noqa: E402

_train_defaults = TrainConfig()
CONFIGS = {
    # the trainer's default size as a plain Llama (1-D RoPE, no task embeddings), the peer's architecture
    "default": replace(_train_defaults.model, rope="1d"),
    "5M": ModelConfig(d_model=256, n_layers=6, n_heads=8, max_seq_len=_train_defaults.model.max_seq_len, rope="1d"),
}
SEED = 0
NO_END = -1  # an end id no argmax can return: every row generates exactly its max_new_tokens
LOGIT_TOLERANCE = 1e-4  # fp32 max abs difference allowed between our logits and the peer's
BF16_USEFUL = 0.10  # bf16 cases run only where the bf16 matmul peak is at least this share of fp32's


@dataclass
class Plan:
    """How much to run: the full benchmark or --quick."""
    batch: int = 8  # training rows per step
    seq: int = 1024  # tokens per training row
    train_reps: int = 2  # timed optimizer steps per case (the best counts), after one warm-up or compiling step
    prompt_len: int = 1000  # decoding prompt
    new_tokens: int = 200  # tokens generated per row
    decode_batches: tuple[int, ...] = (1, 8)
    prefill_reps: int = 2  # timed prefills per case (the best counts)
    peak_seconds: float = 2.0  # timed matmuls per precision run at least this long
    compiled: tuple[str, ...] = ("default",)  # configs whose torch.compile'd training and decode steps are timed (30-80 s per cold compile here)
    compiled_decode_batches: tuple[int, ...] = (1,)  # batch sizes of the compiled decode cases (each compiles its own graph)


QUICK = Plan(seq=256, train_reps=1, prompt_len=250, new_tokens=50, prefill_reps=1, peak_seconds=0.5)


# --- the peer: Hugging Face LlamaForCausalLM with our weights -------------------------------------------

def hf_peer(model: Transformer):
    """A LlamaForCausalLM of the same architecture as model, holding a copy of its weights, in eval mode.
    transformers is imported here, not at the top, so that the processes timing our own model never load it
    (the core package never imports it either)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.cfg
    config = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.mlp_width,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=False, mlp_bias=False, tie_word_embeddings=False, hidden_act="silu",
        # Llama's defaults (bos 1, eos 2) are colours in our vocabulary: generate() would stop at colour 2
        bos_token_id=None, eos_token_id=None, pad_token_id=PAD,
        attn_implementation="sdpa",
    )
    peer = LlamaForCausalLM(config).to(model.embed.weight.device)
    copy_weights_to_hf(model, peer)
    return peer.eval()


def copy_weights_to_hf(model: Transformer, peer) -> None:
    """Copy our parameters into a LlamaForCausalLM of the same shape. Both apply RoPE to (first half,
    second half) channel pairs ("rotate_half"), so q/k need no permutation; every peer parameter must be
    written exactly once."""
    names = {"embed.weight": EMBED, "norm.weight": NORM, "head.weight": HEAD}  # the import's name table (arc.model.hf)
    for i in range(model.cfg.n_layers):
        names.update({f"blocks.{i}.{ours}": f"model.layers.{i}.{theirs}" for ours, theirs in BLOCK_NAMES.items()})
    ours, theirs = dict(model.named_parameters()), dict(peer.named_parameters())
    if sorted(names) != sorted(ours) or sorted(names.values()) != sorted(theirs):
        raise ValueError(f"parameter names do not map one to one: ours {sorted(set(ours) - set(names))}, "
                         f"peer's {sorted(set(theirs) - set(names.values()))}")
    with torch.no_grad():
        for our_name, their_name in names.items():
            theirs[their_name].copy_(ours[our_name])


def hf_greedy(peer, prompts: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """The peer's greedy continuation (B, new_tokens) of equal-length prompts (B, T)."""
    out = peer.generate(
        prompts, attention_mask=torch.ones_like(prompts), do_sample=False, max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, use_cache=True, pad_token_id=PAD,
    )
    return out[:, prompts.shape[1]:]


def seeded_model(cfg: ModelConfig, device: torch.device) -> Transformer:
    torch.manual_seed(SEED)
    return Transformer(cfg).to(device)


def random_tokens(shape: tuple[int, ...], device: torch.device, seed: int = SEED) -> torch.Tensor:
    """Any token but padding (the peer's generate() would read padding as masked out)."""
    return torch.randint(0, PAD, shape, generator=torch.Generator().manual_seed(seed)).to(device)


def check_equivalence(cfg: ModelConfig, device: torch.device) -> dict:
    """fp32 logits and greedy tokens of ours vs the peer with copied weights; raises if they differ."""
    model = seeded_model(cfg, device).eval()
    peer = hf_peer(model)
    tokens = random_tokens((2, 128), device)
    with torch.inference_mode():
        diff = (model(tokens) - peer(input_ids=tokens).logits.float()).abs().max().item()
    prompts = random_tokens((2, 64), device, seed=SEED + 1)
    ours = greedy_decode(model, [token_row(p) for p in prompts.tolist()], [16, 16], end_id=NO_END, pad_id=PAD)
    theirs = hf_greedy(peer, prompts, 16).tolist()
    if diff >= LOGIT_TOLERANCE or ours != theirs:
        raise SystemExit(f"ABORT: our model and the HF peer disagree (config {cfg}): max |logit diff| {diff:.2e} "
                         f"(tolerance {LOGIT_TOLERANCE:.0e}), greedy tokens equal: {ours == theirs}")
    return {"max_abs_logit_diff": diff, "greedy_tokens_equal": True}


# --- measuring ---------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Wall seconds of fn(), with the device's queued work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def rss_mib() -> float:
    return _proc_status_kib("VmRSS") / 1024


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        # Linux: writing 5 resets this process's peak RSS (VmHWM) to its current RSS, so the peak read
        # afterwards covers the timed work only, not model building, warm-up or compilation
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: torch.device, rss_at_start: float) -> float:
    """CUDA: max allocated since the reset. CPU: peak RSS since the reset minus the RSS the process had
    before the case built anything (torch and, for the peer, transformers imported)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _proc_status_kib("VmHWM") / 1024 - rss_at_start


def matmul_peak(dtype: torch.dtype, n: int, device: torch.device, min_seconds: float) -> dict:
    """Best FLOP/s of (n x n) @ (n x n) in dtype: 2 warm-ups, then reps until min_seconds (at least 3)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        timed(lambda: a @ b, device)
    times = []
    while len(times) < 3 or sum(times) < min_seconds:
        times.append(timed(lambda: a @ b, device))
    return {"n": n, "reps": len(times), "flops_per_s": 2 * n**3 / min(times)}


def matmul_size(dtype: torch.dtype, device: torch.device) -> int:
    """Large enough to saturate the device; on a CPU without bf16 units (AMX) bf16 is emulated ~100x slower
    than fp32, so a 512^3 bf16 matmul (0.3 s there) is measured instead of 2048^3 (~20 s)."""
    if device.type == "cuda":
        return 8192
    if dtype == torch.bfloat16 and autocast_dtype(device, "auto") is None:
        return 512
    return 2048


def train_flops_per_token(cfg: ModelConfig, seq: int) -> float:
    """6 * (parameters other than the embedding lookup) + 6 * n_layers * seq * d_model for causal
    attention (QK^T and AV: 2 * 2 * seq * d_model per token per layer forward, halved by the causal
    mask, times 3 for forward + backward)."""
    matmul_params = Transformer(cfg).num_params() - cfg.vocab_size * cfg.d_model
    return 6 * matmul_params + 6 * cfg.n_layers * seq * cfg.d_model


def start_case(device_name: str, threads: int, impl: str) -> tuple[torch.device, float]:
    """Set up a fresh case process: its device, its torch threads, and its RSS before the case builds
    anything (the peer's modules already loaded, as torch's are, so neither side's imports count)."""
    torch.set_num_threads(threads)
    if impl == "hf":
        from transformers import LlamaForCausalLM  # noqa: F401
    return torch.device(device_name), rss_mib()


def fresh_compile_cache(fn, impl: str, *args) -> dict:
    """fn(*args); for the compiled impl inside a fresh inductor cache, deleted afterwards, so the compile
    time is a first run's, not whatever earlier runs left on disk."""
    if impl != "ours-compiled":
        return fn(*args)
    with tempfile.TemporaryDirectory(prefix="bench-inductor-") as cache_dir:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
        return fn(*args)


def train_case(config: str, impl: str, precision: str, device_name: str, threads: int, plan: Plan) -> dict:
    """One optimizer step's time and memory, run in a fresh process. impl: ours | ours-compiled | hf."""
    return fresh_compile_cache(measure_train_step, impl, config, impl, precision, device_name, threads, plan)


def measure_train_step(config: str, impl: str, precision: str, device_name: str, threads: int, plan: Plan) -> dict:
    device, rss_at_start = start_case(device_name, threads, impl)
    model = seeded_model(CONFIGS[config], device)
    if impl == "hf":
        model = hf_peer(model)
        # use_cache=False: a training forward has no use for a KV cache (HF training code turns it off)
        forward = lambda x: model(input_ids=x, use_cache=False).logits  # noqa: E731
    else:
        forward = model
        if impl == "ours-compiled":  # as train.py compiles it: the blocks, one static graph for this shape
            for block in model.blocks:
                block.compile(dynamic=False)
    model.train()
    optimizer = make_optimizer(model, _train_defaults.lr, _train_defaults.weight_decay)
    tokens = random_tokens((plan.batch, plan.seq + 1), device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def step():  # the trainer's step: loss, backward, clipping, fused AdamW
        with amp:
            logits = forward(inputs)
        F.cross_entropy(logits.float().flatten(0, 1), targets.flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), _train_defaults.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    first_s = timed(step, device)  # compiles (ours-compiled) or warms up (eager)
    reset_peak_memory(device)
    # error_on_recompile: a compilation inside the timed steps aborts rather than being timed as a step
    guard = torch._dynamo.config.patch(error_on_recompile=True) if impl == "ours-compiled" else nullcontext()
    with guard:
        times = [timed(step, device) for _ in range(plan.train_reps)]
    step_s = min(times)
    return {
        "config": config, "impl": impl, "precision": precision, "step_s": step_s, "step_times_s": times,
        "tokens_per_s": plan.batch * plan.seq / step_s,
        "compile_s": first_s - step_s if impl == "ours-compiled" else None,
        "memory_mib": peak_memory_mib(device, rss_at_start),
    }


def decode_case(config: str, impl: str, batch: int, device_name: str, threads: int, plan: Plan) -> dict:
    """Prefill time and greedy generation speed at one batch size, run in a fresh process.
    impl: ours | ours-compiled (the decode step torch.compile'd, arc.inference.decode) | hf. Precision is what the
    evaluator uses on this device (bf16 autocast on CUDA, fp32 on this CPU)."""
    return fresh_compile_cache(measure_decode, impl, config, impl, batch, device_name, threads, plan)


def measure_decode(config: str, impl: str, batch: int, device_name: str, threads: int, plan: Plan) -> dict:
    device, rss_at_start = start_case(device_name, threads, impl)
    amp_dtype = autocast_dtype(device, "auto")
    amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    model = seeded_model(CONFIGS[config], device).eval()
    prompts = random_tokens((batch, plan.prompt_len), device, seed=SEED + batch)
    total = plan.prompt_len + plan.new_tokens
    if impl == "hf":
        peer = hf_peer(model)

        def prefill():
            with torch.inference_mode(), amp:
                peer(input_ids=prompts, use_cache=True)  # fills a fresh DynamicCache

        def generate(p: torch.Tensor, n: int) -> list[list[int]]:
            with amp:
                return hf_greedy(peer, p, n).tolist()
    else:
        def prefill():
            with torch.inference_mode(), amp:
                model(prompts, cache=model.new_cache(batch, capacity=total, dtype=amp_dtype))

        def generate(p: torch.Tensor, n: int) -> list[list[int]]:
            return greedy_decode(model, [token_row(p) for p in p.tolist()], [n] * batch, end_id=NO_END, pad_id=PAD, autocast_dtype=amp_dtype,
                                 compile=impl == "ours-compiled")

    # warm-up: the very call that is timed, so that whatever is compiled, allocated or cached per shape
    # is ready before the clock starts
    warmup_s = timed(lambda: generate(prompts, plan.new_tokens), device)
    prefill_s = min(timed(prefill, device) for _ in range(plan.prefill_reps))
    reset_peak_memory(device)
    out: list[list[int]] = []
    generate_s = timed(lambda: out.extend(generate(prompts, plan.new_tokens)), device)
    if any(len(row) != plan.new_tokens for row in out):
        raise RuntimeError(f"{impl} generated {[len(r) for r in out]} tokens, expected {plan.new_tokens} per row")
    return {
        "config": config, "impl": impl, "batch": batch, "prefill_s": prefill_s, "generate_s": generate_s,
        "tokens_per_s": batch * plan.new_tokens / generate_s,
        # the generate call repeats the prefill; what is left is one forward per new token
        "decode_tokens_per_s": batch * plan.new_tokens / max(generate_s - prefill_s, 1e-9),
        "compile_s": warmup_s - generate_s if impl == "ours-compiled" else None,
        "memory_mib": peak_memory_mib(device, rss_at_start), "tokens": out,
    }


def isolated(fn, *args):
    """fn(*args) in a fresh spawned process: its own memory peak, allocator and compile caches."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# --- the report --------------------------------------------------------------------------------------

def environment(device: torch.device) -> dict:
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")]
        name = models[0] if models else platform.processor()
    return {
        "device": str(device), "device_name": name, "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        # other processes competing for the CPU slow every case alike; the load average shows them
        "load_average_at_start": os.getloadavg(),
    }


def markdown(results: dict) -> str:
    env, plan, peak = results["environment"], results["plan"], results["peak"]
    lines = [
        f"# Speed: {env['device_name']} ({env['device']}, {env['cpu_threads']} torch threads), "
        f"torch {env['torch']}, transformers {env['transformers']}",
        "",
        f"Load average at start: {', '.join(f'{x:.2f}' for x in env['load_average_at_start'])}. "
        f"Total wall time {results['wall_s']:.0f} s{' (--quick)' if results['quick'] else ''}.",
        "",
        "| matmul peak | n | reps | GFLOP/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for precision, p in peak.items():
        lines.append(f"| {precision} | {p['n']} | {p['reps']} | {p['flops_per_s'] / 1e9:,.1f} |")
    lines += [""] + [f"- {note}" for note in results["notes"]]

    lines += [
        "",
        f"Training: batch {plan['batch']} x {plan['seq']} tokens, best of {plan['train_reps']} steps",
        "",
        "| config | params | precision | impl | step ms | tokens/s | MFU | compile s | mem MiB | ours/HF |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["train"]:
        compile_s = f"{r['compile_s']:.1f}" if r["compile_s"] is not None else ""
        ratio = f"{r['ours_over_hf']:.2f}x" if "ours_over_hf" in r else ""
        lines.append(
            f"| {r['config']} | {results['params'][r['config']]:,} | {r['precision']} | {r['impl']} | "
            f"{r['step_s'] * 1e3:,.0f} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {compile_s} | "
            f"{r['memory_mib']:,.0f} | {ratio} |")

    lines += [
        "",
        f"Greedy decoding: {plan['prompt_len']}-token prompt, {plan['new_tokens']} new tokens per row, "
        f"{results['decode_precision']}",
        "",
        "| config | batch | impl | prefill ms | generate tok/s | decode-only tok/s | compile s | mem MiB | ours/HF | same tokens |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results["decode"]:
        ratio = f"{r['ours_over_hf']:.2f}x" if "ours_over_hf" in r else ""
        same = {True: "yes", False: "no"}.get(r.get("same_tokens_as_hf"), "")
        compile_s = f"{r['compile_s']:.1f}" if r.get("compile_s") is not None else ""
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['impl']} | {r['prefill_s'] * 1e3:,.0f} | {r['tokens_per_s']:,.1f} | "
            f"{r['decode_tokens_per_s']:,.1f} | {compile_s} | {r['memory_mib']:,.0f} | {ratio} | {same} |")

    lines += [
        "",
        "Footnotes:",
        "- Model FLOPs per token = 6 * N + 6 * n_layers * T * d_model, with N the parameters other than the "
        "embedding (a lookup, not a matmul) and T the row length: 6 * N for the matmuls forward + backward; "
        "attention's QK^T and AV cost 4 * T * d_model per token per layer forward, halved by the causal mask, "
        "times 3 for forward + backward. MFU = tokens/s * FLOPs per token / the measured matmul peak of the "
        "run's precision (fp32 peak for fp32, bf16 peak for bf16 autocast).",
        "- A step is the trainer's: forward, cross-entropy, backward, gradient clipping, fused AdamW. "
        "`ours` is arc.model.transformer eager; `ours-compiled` compiles it as the trainer does (each block compiled in place, "
        "one static graph shared by all blocks: arc.infra.runtime.compile_regions), "
        "its compile time (first step minus a steady step, fresh inductor cache) excluded from the step time; "
        "`hf` is transformers' LlamaForCausalLM (sdpa attention, eager) holding the same weights. "
        "ours/HF = our tokens/s over the peer's at the same config and precision.",
        "- Before timing, the peer's fp32 logits were checked to match ours (max |diff| "
        + ", ".join(f"{k}: {v['max_abs_logit_diff']:.1e}" for k, v in results["equivalence"].items())
        + f", tolerance {LOGIT_TOLERANCE:.0e}) and both greedy decoders to produce the same tokens.",
        "- Decoding: `ours` is arc.inference.decode.greedy_decode eager; `ours-compiled` the same with its one-token step "
        "torch.compile'd (Transformer.decode_step; compile time = the warm-up call minus the timed one, fresh "
        "inductor cache); `hf` is the peer's generate() (greedy, cache on). Compiled cases run only for the "
        "configs in the plan's `compiled` (the default: what train.py and evaluate.py run by default), and "
        "compiled decoding only at batch 1, to keep the run within 5 minutes.",
        "- Decoding: generate tok/s = new tokens / the whole call (prefill included); decode-only tok/s excludes "
        "the separately timed prefill (one forward over the prompt into a fresh cache: our preallocated KVCache, "
        "the peer's DynamicCache). Same tokens: whether the timed runs' tokens agree in full (random weights give "
        "near-uniform logits, so a late near-tie may flip; the check above is the hard one).",
        "- mem: CUDA: max allocated during the timed work. CPU: peak RSS during the timed work minus the RSS "
        "of its fresh process before the model was built (imports excluded; weights, optimizer state, "
        "activations, caches and allocator slack included). Every case runs in its own spawned process.",
        "- Each time is the best of its reps (matmuls, steps, prefills): other processes and first-touch "
        "effects only ever add time.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="shorter rows and decodes, one timed rep")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads in every case (default: torch's, as training uses); 1 on a busy CPU")
    parser.add_argument("--out", default=str(REPO / "bench"), help="folder for results.json and results.md")
    parser.add_argument("--precision", default="all", choices=("all", "fp32", "bf16"),
                        help="training cases in this precision only (bench/gpu_check.sh: bf16, one compile fewer)")
    args = parser.parse_args()
    started = time.perf_counter()
    device = resolve_device(args.device)
    plan = QUICK if args.quick else Plan()
    torch.set_num_threads(args.threads)
    log = lambda message: print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)  # noqa: E731

    results = {"quick": args.quick, "plan": asdict(plan), "environment": environment(device), "notes": []}
    load, cores = results["environment"]["load_average_at_start"][0], os.cpu_count()
    if device.type == "cpu" and load > 0.5:
        results["notes"].append(
            f"Other processes were using the CPU when this run started (load average {load:.1f} on {cores} cores): "
            f"every timing is slowed, and with more torch threads than free cores, threads wait on each other "
            f"and small ops can run 10x slower (--threads 1 limits that).")
        log(results["notes"][-1])
    results["params"] = {name: Transformer(cfg).num_params() for name, cfg in CONFIGS.items()}
    results["equivalence"] = {name: check_equivalence(cfg, device) for name, cfg in CONFIGS.items()}
    log(f"peer equivalence: {results['equivalence']}")

    peak = {name: matmul_peak(dtype, matmul_size(dtype, device), device, plan.peak_seconds)
            for name, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16)]}
    results["peak"] = peak
    log("peak: " + ", ".join(f"{k} {v['flops_per_s'] / 1e9:,.1f} GFLOP/s" for k, v in peak.items()))
    precisions = ["fp32"]
    if peak["bf16"]["flops_per_s"] >= BF16_USEFUL * peak["fp32"]["flops_per_s"]:
        precisions.append("bf16")
    else:
        note = (f"bf16 training skipped: the bf16 matmul peak is {peak['bf16']['flops_per_s'] / peak['fp32']['flops_per_s']:.1%} "
                f"of fp32's here (< {BF16_USEFUL:.0%}; no bf16 matmul units), so bf16 steps would only measure emulation")
        results["notes"].append(note)
        log(note)

    precisions = [p for p in precisions if args.precision in ("all", p)]
    results["train"] = []
    for config, cfg in CONFIGS.items():
        for precision in precisions:
            impls = ("ours", "ours-compiled", "hf") if config in plan.compiled else ("ours", "hf")
            cases = {impl: isolated(train_case, config, impl, precision, str(device), args.threads, plan) for impl in impls}
            for impl, r in cases.items():
                r["mfu"] = r["tokens_per_s"] * train_flops_per_token(cfg, plan.seq) / peak[precision]["flops_per_s"]
                if impl != "hf":
                    r["ours_over_hf"] = r["tokens_per_s"] / cases["hf"]["tokens_per_s"]
                log(f"train {config} {precision} {impl}: {r['tokens_per_s']:,.0f} tok/s, MFU {r['mfu']:.1%}")
                results["train"].append(r)

    amp_dtype = autocast_dtype(device, "auto")
    results["decode_precision"] = f"{amp_dtype} autocast" if amp_dtype else "fp32"
    results["decode"] = []
    for config in CONFIGS:
        for batch in plan.decode_batches:
            compiled = config in plan.compiled and batch in plan.compiled_decode_batches
            impls = ("ours", "ours-compiled", "hf") if compiled else ("ours", "hf")
            cases = [isolated(decode_case, config, impl, batch, str(device), args.threads, plan) for impl in impls]
            hf = cases[-1]
            for ours in cases[:-1]:
                ours["ours_over_hf"] = ours["tokens_per_s"] / hf["tokens_per_s"]
                ours["same_tokens_as_hf"] = ours["tokens"] == hf["tokens"]
            for r in cases:
                log(f"decode {config} batch {batch} {r['impl']}: {r['tokens_per_s']:,.1f} tok/s, "
                    f"prefill {r['prefill_s'] * 1e3:,.0f} ms")
                del r["tokens"]
                results["decode"].append(r)

    results["wall_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out / "results.md").write_text(table)
    print(table)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()

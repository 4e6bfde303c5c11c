#!/usr/bin/env bash
# The GPU check: the CUDA path (bf16 autocast, the compiled training step, KV-cache decoding on the GPU,
# torchrun over nccl) run end to end on a machine with a GPU, in under 9 minutes, its figures in one file.
#
#   bash bench/gpu_check.sh [OUT_DIR]      # OUT_DIR: default $OUT if set (the device tool's), else /tmp/gpu_check
#
# Steps, in order, each with its own time limit inside a 530 s budget (the last gets what is left):
#   env       GPU, driver, torch, CUDA, transformers
#   tests     the test suite (tests/test_cuda.py runs on the GPU here; it is skipped on CPU machines)
#   pair      `python train.py --device cuda` with the defaults (pair layout, 250 steps, compiled, bf16):
#             tokens/s and the eval loss on seed20 at steps 100, 200, 250
#   torchrun  the same run under `torchrun --standalone --nproc_per_node=<GPUs here>` (DDP over nccl; on one
#             GPU a world of one, which should land where `pair` did, up to GPU nondeterminism)
#   speed     `python bench/speed.py --device cuda --precision bf16`: the matmul peak, MFU, ours vs the peer
# A failing or timed-out step is recorded and the next one runs (no `set -e`). Nothing is installed: run
# it where `pip install -r requirements-test.txt -r bench/requirements.txt` (CUDA torch) already ran.
# Writes OUT_DIR/figures.md (every figure, each step's status and time) and OUT_DIR/<step>.log.
set -u
out_dir=$(realpath -m "${1:-${OUT:-/tmp/gpu_check}}")  # before the cd: a relative OUT_DIR is the caller's
cd "$(dirname "$0")/.."
mkdir -p "$out_dir"
fig="$out_dir/figures.md"
budget=530  # seconds for every step together: under the issue's 9 minutes with the env step's slack
started=$SECONDS

step() {  # step NAME LIMIT_S COMMAND...: COMMAND into NAME.log within LIMIT_S (and the budget left)
  local name=$1 limit=$2
  shift 2
  local left=$(( budget - (SECONDS - started) ))
  (( limit > left )) && limit=$left
  if (( limit < 20 )); then
    echo "- $name: SKIPPED (budget spent)" >> "$fig"
    return 1
  fi
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" > "$out_dir/$name.log" 2>&1
  rc=$?
  local status="ok"
  if (( rc == 124 || rc == 137 )); then status="TIMED OUT after ${limit} s"; elif (( rc != 0 )); then status="FAILED (exit $rc)"; fi
  echo "- $name: $status, $(( SECONDS - t0 )) s (\`$*\`, log $name.log)" >> "$fig"
  return $rc
}

run_figures() {  # run_figures FOLDER: tokens/s and eval losses from a run folder's metrics.jsonl
  python - "$1" >> "$fig" 2>/dev/null <<'PY' || echo "  (no metrics in $1)" >> "$fig"
import json, sys
folder = sys.argv[1]
lines = [json.loads(line) for line in open(f"{folder}/metrics.jsonl")]
logged = [m for m in lines if "tokens_per_s" in m]
evals = [m for m in lines if "eval_loss" in m]
last = logged[-1]
print(f"  - {last['step']} steps in {last['elapsed_s']:.0f} s after the compile warm-up, {last['tokens_per_s']:,.0f} "
      f"tokens/s over them (non-padding input tokens, all ranks), last logged training loss {last['loss']:.4f}")
print("  - eval loss per output token on seed20: " + ", ".join(f"{m['eval_loss']:.4f} @{m['step']}" for m in evals))
config = json.load(open(f"{folder}/config.json"))
print(f"  - {len(config['task_ids'])} task embeddings, model {config['model']['d_model']}d x {config['model']['n_layers']} layers")
PY
}

ngpu=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
{
  echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "## env"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -9
  python -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPUs', torch.cuda.device_count(), '| bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())" 2>&1
  python -c "import transformers; print('transformers', transformers.__version__)" 2>&1 | tail -1
  echo "CPU cores $(nproc)"
  echo '```'
  echo
  echo "## steps"
  echo
} > "$fig"
if (( ngpu == 0 )); then
  echo "- torch sees no GPU: the CUDA steps would only fail; stopping here" >> "$fig"
  cat "$fig"
  exit 1
fi

step tests 150 python -m pytest -q -rA -p no:cacheprovider
{ grep -E "passed|failed" "$out_dir/tests.log" | tail -1 | sed 's/^/  - suite: /'
  echo "  - tests/test_cuda.py (on the GPU): $(grep -c '^PASSED tests/test_cuda' "$out_dir/tests.log") passed," \
       "$(grep -c '^FAILED tests/test_cuda' "$out_dir/tests.log") failed, $(grep -c '^SKIPPED.*test_cuda' "$out_dir/tests.log") skip lines"; } >> "$fig"

step pair 90 python train.py --device cuda --out "$out_dir/pair-run"
run_figures "$out_dir/pair-run"

step torchrun 75 torchrun --standalone --nproc_per_node="$ngpu" train.py --device cuda --out "$out_dir/torchrun-run"
echo "  - $ngpu rank(s), global batch $(( 8 * ngpu )) rows per step" >> "$fig"
run_figures "$out_dir/torchrun-run"

step speed 240 python bench/speed.py --device cuda --precision bf16 --out "$out_dir/speed"
{ echo; echo "## speed (bench/speed.py --device cuda --precision bf16)"; echo
  cat "$out_dir/speed/results.md" 2>/dev/null || echo "(no results.md: see speed.log)"; } >> "$fig"

grep -l "torch.compile failed" "$out_dir"/*.log 2>/dev/null | sed 's/^/- torch.compile fell back to eager in /' >> "$fig"
echo >> "$fig"
echo "Total $(( SECONDS - started )) s of steps." >> "$fig"
cat "$fig"

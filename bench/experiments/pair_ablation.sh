#!/usr/bin/env bash
# Ablations of the pair layout at one fixed budget, measured on dev20 (20 ARC-AGI-1 *training* tasks held
# out of training, arc.data.tasks.TASK_SETS): where the defaults are chosen, never on seed20.
#
#   bash bench/experiments/pair_ablation.sh [STEPS] [OUT]        # default 300 steps of 16 rows each, bench/ablation/
#
# Each run trains from scratch on one thread without torch.compile (the same cost for every run), on the
# ARC-AGI-1 training tasks minus dev20 plus dev20's demonstrations (pair layout: their test outputs give
# the eval loss and are never trained on), then evaluate.py votes over 8 views on dev20. One line per run
# goes to OUT/summary.tsv: name, eval loss, tasks solved, training time (the last log line's elapsed).
set -uo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-300}
out=${2:-bench/ablation}
mkdir -p "$out"
common=(--eval-split training --eval-set dev20 --batch-size 16 --lr 1e-3 --warmup-steps 30 --threads 1 --no-compile
        --log-every 50 --save-every 100000 --eval-every 100000)
run() {  # name, extra flags...
  local name=$1; shift
  [ -f "$out/$name/eval-dev20/results.json" ] && return
  local started=$(date +%s)
  if ! grep -q "saved checkpoint" "$out/$name.train.log" 2>/dev/null; then  # a finished run is not trained again
    python train.py --out "$out/$name" --max-steps "$steps" "${common[@]}" "$@" > "$out/$name.train.log" 2>&1 || { echo "$name: training failed"; return; }
  fi
  local trained=$(grep -o "elapsed [0-9hm]*[0-9]*s" "$out/$name.train.log" | tail -1)
  python evaluate.py --checkpoint "$out/$name" --split training --task-set dev20 --threads 1 > "$out/$name.eval.log" 2>&1 || { echo "$name: evaluation failed"; return; }
  python - "$out/$name" "$name" "$trained" >> "$out/summary.tsv" <<'PY'
import json, sys
folder, name, seconds = sys.argv[1:]
r = json.load(open(f"{folder}/eval-dev20/results.json"))
print(f"{name}\t{r['eval_loss']:.4f}\t{r['tasks_solved']}/{r['tasks_total']}\t{seconds}")
PY
  tail -1 "$out/summary.tsv"
}
# most informative first: a session that runs out of time keeps the head of the list
run pair-base
run no-task-embedding --no-task-embedding
run colour-maps-1 --colour-maps 1
run colour-maps-8 --colour-maps 8
run rope-1d --rope 1d
run in-context --layout in_context --rope 1d --grid-positions --batch-size 8 --max-steps $(( steps * 2 / 5 ))
run input-loss --input-loss
run share-0.25 --evaluated-share 0.25
run d-model-256 --d-model 256
run rope-1d-grid-positions --rope 1d --grid-positions
run all-colours --no-keep-background
run share-0.75 --evaluated-share 0.75

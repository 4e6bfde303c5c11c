#!/usr/bin/env bash
# The training recipe's switches at equal CPU-minutes, measured on dev20 (20 ARC-AGI-1 *training* tasks held out
# of training, arc.data.tasks.TASK_SETS): where the recipe's defaults are chosen, never on seed20.
#
#   bash bench/experiments/recipe_ablation.sh [MINUTES] [OUT] [RUN ...]   # default 10 minutes, bench/ablation/recipe, every run
#
# Each run trains from scratch for MINUTES of training time (--minutes: its schedule ends on the clock) on one
# thread, two runs at a time (the machine's two cores), on the ARC-AGI-1 training tasks minus dev20 plus dev20's
# demonstrations (their test outputs give the eval loss and are never trained on); then evaluate.py votes over
# 8 views on dev20. One line per run goes to OUT/summary.tsv: name, eval loss, tasks solved, steps, training
# tokens. Finished runs are skipped on a rerun.
set -uo pipefail
cd "$(dirname "$0")/../.."
minutes=${1:-10}
out=${2:-bench/ablation/recipe}
shift $(( $# > 2 ? 2 : $# ))
mkdir -p "$out"
# --optimizer adamw: the base recipe these switches were measured against (the default became auto, Muon in a
# bf16 run, after this table); a run's own --optimizer comes later on the line and wins
common=(--eval-split training --eval-set dev20 --minutes "$minutes" --threads 1 --log-every 50 --save-every 100000 --eval-every 100000 --optimizer adamw)
declare -A flags=(
  [base]=""
  [base-repeat]=""  # the base again, later: how far two runs of one recipe differ on a shared machine
  [wsd]="--schedule wsd"
  [view-pool-8]="--view-pool 8"
  [share-0.75]="--evaluated-share 0.75"
  [share-0.9]="--evaluated-share 0.9"
  [final-evaluated]="--final-fraction 0.2 --final-evaluated-share 1.0"
  [generated-5]="--generated-tasks 5"
  [arc2-extra]="--extra-data arc2:training"
  [muon]="--optimizer muon"
  [muon-repeat]="--optimizer muon"  # Muon again, later: its gain against the two bases' gap
  [dropout-0.1]="--dropout 0.1"
  [d-model-96]="--d-model 96"
  [d-model-192]="--d-model 192 --n-heads 6"
  [layers-6]="--n-layers 6"
)
order=(base wsd view-pool-8 share-0.75 share-0.9 final-evaluated generated-5 arc2-extra muon d-model-96 d-model-192 layers-6 dropout-0.1)
[ $# -gt 0 ] && order=("$@")
run() {  # name
  local name=$1
  [ -f "$out/$name/eval-dev20/results.json" ] && return
  if ! grep -q "saved checkpoint" "$out/$name.train.log" 2>/dev/null; then  # a finished run is not trained again
    rm -rf "$out/$name"
    # shellcheck disable=SC2086  # the flags are words
    python train.py --out "$out/$name" "${common[@]}" ${flags[$name]} > "$out/$name.train.log" 2>&1 || { echo "$name: training failed"; return; }
  fi
  python evaluate.py --checkpoint "$out/$name" --split training --task-set dev20 --threads 1 > "$out/$name.eval.log" 2>&1 || { echo "$name: evaluation failed"; return; }
  python - "$out/$name" "$name" >> "$out/summary.tsv" <<'PY'
import json, sys
folder, name = sys.argv[1:]
r = json.load(open(f"{folder}/eval-dev20/results.json"))
lines = [json.loads(line) for line in open(f"{folder}/metrics.jsonl")]
steps = max(line["step"] for line in lines)
tokens = [line for line in lines if "tokens_per_s" in line][-1]
print(f"{name}\t{r['eval_loss']:.4f}\t{r['tasks_solved']}/{r['tasks_total']}\t{steps}\t{tokens['tokens_per_s'] * tokens['elapsed_s']:.3g}")
PY
  tail -1 "$out/summary.tsv"
}
# two at a time, in the order listed: a session that runs out of time keeps the head of the list
for (( i = 0; i < ${#order[@]}; i += 2 )); do
  run "${order[i]}" &
  [ $(( i + 1 )) -lt ${#order[@]} ] && run "${order[i + 1]}" &
  wait
done

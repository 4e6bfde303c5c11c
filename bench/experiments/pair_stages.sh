#!/usr/bin/env bash
# The inference stages on a pair-layout checkpoint, as the walkthrough reported them, and the unseen-task
# path: one line per stage in OUT/stages.tsv (stage, tasks solved, score, eval loss, seconds per task).
#
#   bash bench/experiments/pair_stages.sh [CHECKPOINT] [OUT]     # default checkpoints/pair, /tmp/pair-stages
#
# Two streams of one thread each (the machine has 2 cores): the seed20 stages one after the other, and
# next20 (tasks the checkpoint has no embedding for: new embeddings trained on their demonstrations).
set -uo pipefail
cd "$(dirname "$0")/../.."
ck=${1:-checkpoints/pair}
out=${2:-/tmp/pair-stages}
mkdir -p "$out"
stage() {  # name, flags...
  local name=$1; shift
  python evaluate.py --checkpoint "$ck" --threads 1 --out "$out/$name" "$@" > "$out/$name.log" 2>&1 || { echo "$name failed"; return; }
  python - "$out/$name/results.json" "$name" >> "$out/stages.tsv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
loss = "n/a" if r["eval_loss"] is None else f"{r['eval_loss']:.4f}"
print(f"{sys.argv[2]}\t{r['tasks_solved']}/{r['tasks_total']}\t{r['score']:.4f}\t{loss}\t{r['seconds_per_task']:.1f}")
PY
}
(
  stage greedy-1-view --views 1
  stage greedy-8-views-vote --views 8
  stage greedy-8-views-poe --views 8 --select poe --score-views 8
  stage dfs-8-views-poe --views 8 --decode dfs --dfs-threshold 0.1 --dfs-max-candidates 4 --dfs-time-limit-s 3 --select poe --score-views 8
) &
stage next20-adapt-embeddings --task-set next20 --adapt-steps 400
wait
cat "$out/stages.tsv"

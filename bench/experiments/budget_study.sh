#!/usr/bin/env bash
# Issue 29's study: one arm of `python evaluate.py --minutes M` on a task set (tune20 decides), its flags named.
#
#     bash bench/experiments/budget_study.sh OUT NAME [flags...]
#     bash bench/experiments/budget_study.sh /tmp/study per-task --adapt-share 0
#
# Runs `python evaluate.py --checkpoint ${CHECKPOINT:-checkpoints/pair} --task-set ${TASK_SET:-tune20}
# --minutes ${MINUTES:-30} --threads ${THREADS:-1} --out OUT/NAME <flags>`, its output in OUT/NAME.log and its
# wall time (from the command's start to its exit) in OUT/NAME.time. RESULTS.md lists the arms run.
set -euo pipefail
out=$1; name=$2; shift 2
mkdir -p "$out"
cd "$(dirname "$0")/../.."
start=$(date +%s.%N)
python evaluate.py --checkpoint "${CHECKPOINT:-checkpoints/pair}" --task-set "${TASK_SET:-tune20}" \
    --minutes "${MINUTES:-30}" --threads "${THREADS:-1}" --out "$out/$name" "$@" > "$out/$name.log" 2>&1
echo "$(date +%s.%N) - $start" | bc > "$out/$name.time"

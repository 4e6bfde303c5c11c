#!/usr/bin/env bash
# Redraw docs/report-seed20.png (the README's picture): the evaluation report of the shipped checkpoint
# on the 20 seed20 tasks (one to three minutes on one CPU thread), captured by headless Chromium
# (`apt-get install chromium`). Rerun it when the shipped checkpoint (checkpoints/pair) changes.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${TMPDIR:-/tmp}/seed20-report"
python evaluate.py --checkpoint checkpoints/pair --threads 1 --out "$out"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,2000 \
    --screenshot="$PWD/docs/report-seed20.png" "file://$out/report.html"
ls -l docs/report-seed20.png

#!/usr/bin/env bash
# Issue 13 on a GPU machine, in one go (install first: ../shared/gpu/README.md, then PYTHONPATH as it says):
#   1. `deepz bench train --device cuda`: full training step (worms rendered on the GPU) vs pre-made batches,
#      for the recipe's model and a larger one (target: ratio >= 0.7)           -> $OUT/train-gpu.json
#   2. the cross-device checkpoint tests (tests marked gpu), when pytest is installed -> $OUT/pytest-gpu.log
#   3. `deepz train --config train-gpu --device cuda`: about 10 minutes (7 of them training,
#      max_minutes), export, held-out evaluation (--seed 7 --n 4) stored in the manifest -> $OUT/model
#   4. `deepz evaluate` of that model on the same held-out worms, with plots     -> $OUT/evaluate.json, plots/
# Usage: OUT=/path/to/results bench/gpu_train_check.sh   (PYTHON=python3 by default; BENCH_STEPS=50)
set -euo pipefail

: "${OUT:?set OUT to the folder for the results}"
PY="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1 || true
git rev-parse HEAD >"$OUT/commit.txt" 2>/dev/null || true

"$PY" -m deepz bench train --device cuda --steps "${BENCH_STEPS:-50}" --warmup 10 \
    --json "$OUT/train-gpu.json" 2>&1 | tee "$OUT/bench.log"

if "$PY" -c "import pytest" 2>/dev/null; then
    "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_train_device.py 2>&1 | tee "$OUT/pytest-gpu.log" || true
fi

"$PY" -m deepz train --config train-gpu --device cuda --out-dir "$OUT/run" \
    --set "export_dir=\"$OUT/model\"" 2>&1 | tee "$OUT/train.log"

"$PY" -m deepz evaluate "$OUT/model" --seed 7 --n 4 --json "$OUT/evaluate.json" --plots "$OUT/plots" \
    2>&1 | tee "$OUT/evaluate.log"

#!/usr/bin/env bash
# One GPU session in one go (about 8 minutes of device time): bench/gpu-check.sh (offline install from the
# carried .gpu-wheels/, engine check, 60 s live bench, track bench, replay), then the gpu-marked tests (the CUDA
# paths against the CPU) and the remaining GPU benchmarks, all into $OUT as JSON.
# Prepare with `bash bench/gpu_wheels.sh` here; run on the device with carry=[".gpu-wheels", ".gpu-cache"].
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-bench/results/gpu-$(date +%F)}"
mkdir -p "$OUT"
bash bench/gpu-check.sh
export PYTHONPATH=/tmp/site:$PWD QT_QPA_PLATFORM=offscreen DEEPZ_CACHE_DIR="${DEEPZ_CACHE_DIR:-$PWD/.gpu-cache}"
step() { echo "== $*" | tee -a "$OUT/session.txt"; }
run() { local limit=$1; shift; step "$*"; timeout "$limit" "$@" >>"$OUT/session.txt" 2>&1; echo "exit $?" >>"$OUT/session.txt"; }
DEEPZ="python3 -m deepz"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.csv" 2>&1

run 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests
run 60 $DEEPZ bench activity --device cuda --size 512 --neurons 200 --json "$OUT/activity.json"
run 90 $DEEPZ bench train --device cuda --json "$OUT/train.json"
step done
ls -la "$OUT"

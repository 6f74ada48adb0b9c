#!/usr/bin/env bash
# One GPU session in one go (about 8 minutes of device time): install from the carried .gpu-wheels/, check the
# CUDA paths against the CPU (the gpu-marked tests), then run every GPU benchmark into $OUT as JSON.
# Prepare with `bash bench/gpu_wheels.sh` here; run on the device with carry=[".gpu-wheels"].
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu-$(date +%F)}"
mkdir -p "$OUT" /tmp/site
step() { echo "== $*" | tee -a "$OUT/log.txt"; }
run() { local limit=$1; shift; step "$*"; timeout "$limit" "$@" >>"$OUT/log.txt" 2>&1; echo "exit $?" >>"$OUT/log.txt"; }

step install
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-wheels/whl/*.whl >>"$OUT/log.txt" 2>&1
python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site .gpu-wheels/psfmodels-src >>"$OUT/log.txt" 2>&1
export PYTHONPATH=/tmp/site:$PWD QT_QPA_PLATFORM=offscreen
DEEPZ="python3 -m deepz"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.csv" 2>&1

run 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests
run 150 $DEEPZ bench infer --device cuda --engine torch,torch-opt --size 512 --planes 32 --check --json "$OUT/infer.json"
run 60 $DEEPZ bench track --device cuda --json "$OUT/track.json"
run 60 $DEEPZ bench activity --device cuda --size 512 --neurons 200 --json "$OUT/activity.json"
run 90 $DEEPZ bench train --device cuda --json "$OUT/train.json"
run 90 $DEEPZ bench pipeline --seconds 30 --size 512 --planes 32 --rate 100 --engine auto --json "$OUT/pipeline.json"
step done
ls -la "$OUT"

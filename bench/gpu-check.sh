#!/usr/bin/env bash
# The live GPU path and the activity readout on one GPU, in under 8 minutes, as one JSON with the GPU's name:
#   the readout bench on CPU and GPU with their agreement (issue 17; with frames/s beside a re-calibration in
#   a thread and in a process of its own, `while_recalibrating`), the demixing readout scored on the GPU
#   over 60 s of simulated worm (seed 11, to set beside the CPU's JSON of the same run), the engine bench
#   with --check, a 20 s live run as a user starts it (live-gpu config: focal scan, readout and tracking; its
#   summary's calibration.calibrated_in says where it calibrated), a
#   60 s live bench at 512x512 K=32 100 Hz with tracking (compute process), the track bench, and a replay of
#   that recording
#   storing every 4th volume under back-pressure (every volume of 6,000 would not fit the 64 GiB disk).
# On an offline NVIDIA machine: prepare .gpu-wheels/ with `bash bench/gpu_wheels.sh` on a connected one, then
#   run(command="bash bench/gpu-check.sh", carry=[".gpu-wheels"])
# Everything lands in $OUT/check.json (+ log.txt), updated after each step; GPU_CHECK_BUDGET_S (480) caps the
# whole check; GPU_CHECK_STEPS="activity live-as-started" reruns only those steps (a live step run without the
# engine step first compiles the engine cold: about 70 s more on an H200). `--dry-run` runs the same steps on the CPU at tiny sizes.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-bench/results/gpu-check-$(date +%F)}"
WORK="$(mktemp -d)"
mkdir -p "$OUT"
LOG="$OUT/log.txt"; : >"$LOG"
export QT_QPA_PLATFORM=offscreen PYTHONUNBUFFERED=1
[ $DRY = 0 ] && export DEEPZ_CACHE_DIR="${DEEPZ_CACHE_DIR:-$PWD/.gpu-cache}"
if [ $DRY = 1 ]; then
  PY="${PY:-.venv/bin/python}"; DEV=cpu; SIZE=64; PLANES=4; RATE=40; SECONDS_LIVE=3; SECONDS_USER=3
  TRACK_VOLUMES=2; SECONDS_INFER=1; ENGINE=torch; LIVE_CONFIG=(); EVERY=2
  ACTIVITY=(--size 64 --neurons 12 --frames 6 --device cpu --device cpu:0)
  EVALUATE=(--seconds 1 --size 128 --device cpu)
else
  PY=python3; DEV=cuda; SIZE=512; PLANES=32; RATE=100; SECONDS_LIVE=60; SECONDS_USER=20; TRACK_VOLUMES=20
  SECONDS_INFER=5; ENGINE=auto; LIVE_CONFIG=(--config live-gpu); EVERY=4
  ACTIVITY=(--frames 300 --device cpu --device cuda)
  EVALUATE=(--seconds 60 --device cuda)
  if ! $PY -c "import zarr, pymmcore_plus, useq, laptrack, psfmodels" 2>/dev/null; then  # offline install
    mkdir -p /tmp/site
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-wheels/whl/*.whl >>"$LOG" 2>&1
    python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site .gpu-wheels/psfmodels-src >>"$LOG" 2>&1
    export PYTHONPATH="/tmp/site:$PWD"
  fi
fi
STEPS="$WORK/steps.jsonl"; : >"$STEPS"
BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"  # the whole check ends by then: later steps get what is left, or are skipped
cat >"$WORK/collect.py" <<'EOF'
import json, sys
from pathlib import Path
steps = [json.loads(line) for line in open(sys.argv[1])]
results = {p.stem: json.loads(p.read_text()) for p in sorted(Path(sys.argv[2]).glob("*.json"))}
check = {"check": "gpu-check", **results.pop("device", {}), "total_seconds": sum(s["seconds"] for s in steps),
         "ok": all(s["exit"] == 0 for s in steps), "steps": steps, "results": results}
Path(sys.argv[3], "check.json").write_text(json.dumps(check, indent=2))
EOF
step() {  # step NAME LIMIT_S COMMAND...: run it within the budget left, log and time it, update check.json
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET_S - SECONDS - 10)) start=$SECONDS code
  [ "$left" -lt "$limit" ] && limit=$left
  if [ -n "${GPU_CHECK_STEPS:-}" ] && [ "$name" != device ] && [[ " $GPU_CHECK_STEPS " != *" $name "* ]]; then
    return; fi
  echo "== $name (limit ${limit} s): $*" | tee -a "$LOG"
  if [ "$limit" -lt 15 ]; then code=-1; echo "   skipped: the check's budget is spent" | tee -a "$LOG"
  else timeout "$limit" "$@" >>"$LOG" 2>&1; code=$?; fi
  echo "{\"step\": \"$name\", \"exit\": $code, \"seconds\": $((SECONDS - start))}" >>"$STEPS"
  echo "   exit $code after $((SECONDS - start)) s" | tee -a "$LOG"
  $PY "$WORK/collect.py" "$STEPS" "$WORK" "$OUT"
}

step device 60 $PY -c "
import json, os, platform, torch
cuda = torch.cuda.is_available() and '$DEV' == 'cuda'
json.dump({'device': '$DEV', 'gpu': torch.cuda.get_device_name(0) if cuda else None,
           'cpu': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
           'torch': torch.__version__, 'dry_run': bool($DRY)}, open('$WORK/device.json', 'w'), indent=2)"
step activity 200 $PY -m deepz bench activity "${ACTIVITY[@]}" --json "$WORK/activity.json"
step evaluate 200 $PY -m deepz evaluate-activity --seed 11 --rate 100 --method demix "${EVALUATE[@]}" \
  --json "$WORK/evaluate.json"
step engine 240 $PY -m deepz bench infer --device $DEV --engine $ENGINE --size $SIZE --planes $PLANES \
  --seconds $SECONDS_INFER --check --json "$WORK/infer.json"
step live-as-started 200 $PY -m deepz bench pipeline "${LIVE_CONFIG[@]}" --seconds $SECONDS_USER --size $SIZE \
  --planes $PLANES --rate $RATE --engine $ENGINE --compute process --json "$WORK/live_as_started.json"
step live 150 $PY -m deepz bench pipeline "${LIVE_CONFIG[@]}" --seconds $SECONDS_LIVE --size $SIZE \
  --planes $PLANES --rate $RATE --engine $ENGINE --track --no-calibrate --compute process \
  --out "$WORK/live.zarr" --json "$WORK/live.json"
step track 60 $PY -m deepz bench track --device $DEV --volumes $TRACK_VOLUMES --json "$WORK/track.json"
step replay 120 $PY -m deepz replay "$WORK/live.zarr" --out "$WORK/replay.zarr" --engine $ENGINE --no-track \
  --volumes $EVERY
step replay-summary 30 $PY -c "
import json
from storage import RecordingReader
live, replay = RecordingReader('$WORK/live.zarr'), RecordingReader('$WORK/replay.zarr')
expected = -(-live.n_frames // $EVERY)
stored = int(replay.volume_indices.size)
json.dump({'frames': live.n_frames, 'volume_every': $EVERY, 'volumes_expected': expected, 'volumes_stored': stored,
           'every_volume_stored': stored == expected, 'summary': replay.attrs['summary']},
          open('$WORK/replay.json', 'w'), indent=2)"
$PY -c "import json; d = json.load(open('$OUT/check.json')); print(json.dumps({k: v for k, v in d.items() if k != 'results'}))"
rm -rf "$WORK"

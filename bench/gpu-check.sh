#!/usr/bin/env bash
# The live GPU path in under 5 minutes (issue 18), as JSON with the GPU's name in $OUT:
#   engine bench with --check, a 60 s live bench at 512x512 K=32 100 Hz with tracking (compute process),
#   the track bench, and a replay of the live recording (every frame).
# On an offline NVIDIA machine: prepare .gpu-wheels/ with `bash bench/gpu_wheels.sh` on a connected one, then
#   run(command="bash bench/gpu-check.sh", carry=[".gpu-wheels", ".gpu-cache"])
# .gpu-cache/ (optional) holds compiled engines from an earlier check (copied back under $OUT/cache), so a
# second check skips the cold torch.compile. `--dry-run` runs the same steps on the CPU at tiny sizes.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-bench/results/gpu-check-$(date +%F)}"
WORK="$(mktemp -d)"
mkdir -p "$OUT"
LOG="$OUT/log.txt"; : >"$LOG"
export QT_QPA_PLATFORM=offscreen
[ $DRY = 0 ] && export DEEPZ_CACHE_DIR="${DEEPZ_CACHE_DIR:-$PWD/.gpu-cache}"
if [ $DRY = 1 ]; then
  PY="${PY:-.venv/bin/python}"; DEV=cpu; SIZE=64; PLANES=4; RATE=40; SECONDS_LIVE=3; TRACK_VOLUMES=2
  SECONDS_INFER=1; ENGINE=torch
else
  PY=python3; DEV=cuda; SIZE=512; PLANES=32; RATE=100; SECONDS_LIVE=60; TRACK_VOLUMES=20
  SECONDS_INFER=5; ENGINE=auto
  if ! $PY -c "import zarr, pymmcore_plus, trackpy" 2>/dev/null; then  # offline install from the carried wheels
    mkdir -p /tmp/site
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-wheels/whl/*.whl >>"$LOG" 2>&1
    python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site .gpu-wheels/psfmodels-src >>"$LOG" 2>&1
    export PYTHONPATH="/tmp/site:$PWD"
  fi
fi
STEPS="$WORK/steps.jsonl"; : >"$STEPS"
step() {  # step NAME LIMIT_S COMMAND...: run it, log it, time it
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local code=$?
  echo "{\"step\": \"$name\", \"exit\": $code, \"seconds\": $((SECONDS - start))}" >>"$STEPS"
  echo "   exit $code after $((SECONDS - start)) s" | tee -a "$LOG"
}

step device 60 $PY -c "
import json, platform, torch
cuda = torch.cuda.is_available() and '$DEV' == 'cuda'
json.dump({'device': '$DEV', 'gpu': torch.cuda.get_device_name(0) if cuda else None,
           'cpu': platform.processor() or platform.machine(), 'torch': torch.__version__,
           'dry_run': bool($DRY)}, open('$OUT/device.json', 'w'), indent=2)"
step engine 240 $PY -m deepz bench infer --device $DEV --engine $ENGINE --size $SIZE --planes $PLANES \
  --seconds $SECONDS_INFER --check --json "$OUT/infer.json"
step live 150 $PY -m deepz bench pipeline --seconds $SECONDS_LIVE --size $SIZE --planes $PLANES --rate $RATE \
  --engine $ENGINE --track --no-calibrate --compute process --out "$WORK/live.zarr" --json "$OUT/pipeline.json"
step track 60 $PY -m deepz bench track --device $DEV --volumes $TRACK_VOLUMES --json "$OUT/track.json"
step replay 120 $PY -m deepz replay "$WORK/live.zarr" --out "$WORK/replay.zarr" --engine $ENGINE
step replay-summary 30 $PY -c "
import json
from storage import RecordingReader
live, replay = RecordingReader('$WORK/live.zarr'), RecordingReader('$WORK/replay.zarr')
summary = replay.attrs['summary']
json.dump({'frames': live.n_frames, 'volumes_stored': int(replay.volume_indices.size),
           'every_volume_stored': int(replay.volume_indices.size) == live.n_frames, 'summary': summary},
          open('$OUT/replay.json', 'w'), indent=2)"
if [ -d "${DEEPZ_CACHE_DIR:-/nonexistent}/compiled" ]; then mkdir -p "$OUT/cache" && cp -r "$DEEPZ_CACHE_DIR/compiled" "$OUT/cache/"; fi
$PY - "$STEPS" "$OUT" <<'EOF'
import json, sys
steps = [json.loads(line) for line in open(sys.argv[1])]
device = json.load(open(f"{sys.argv[2]}/device.json")) if steps and steps[0]["exit"] == 0 else {}
check = {"check": "gpu-check", **device, "total_seconds": sum(s["seconds"] for s in steps), "steps": steps,
         "ok": all(s["exit"] == 0 for s in steps)}
json.dump(check, open(f"{sys.argv[2]}/check.json", "w"), indent=2)
print(json.dumps(check, indent=2))
EOF
rm -rf "$WORK"

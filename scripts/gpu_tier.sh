#!/usr/bin/env bash
# The GPU tier and the GPU benchmarks in one command (issue 14), within 8 minutes (TOTAL_S) on one H100/H200:
#   scripts/gpu_tier.sh            # tests (python -m pytest -m gpu), benchmarks/bench_gpu.py, then
#                                  # benchmarks/bench_edit_families.py (full size, bf16, 1024², the families that fit)
#   QUICK=1 scripts/gpu_tier.sh    # both benchmarks as smoke runs (bench_gpu --quick; families at 512²)
# Logs, errors.jsonl, bench.json and family_bench.json go to ${OUT:-benchmarks/out}. Each part runs even
# when the one before failed; a summary table closes the log. Installs nothing: ComfyUI comes from
# COMFYUI_PATH (default .gpu/ComfyUI when present), extra wheels from PYTHONPATH.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONUNBUFFERED=1
if [ -z "${COMFYUI_PATH:-}" ] && [ -d .gpu/ComfyUI ]; then export COMFYUI_PATH="$PWD/.gpu/ComfyUI"; fi
export INSTRUCT_TEST_CACHE="${INSTRUCT_TEST_CACHE:-/tmp/comfyui-instruct-gpu-cache}"
export INSTRUCT_GPU_OUT="$OUT"
PY="${PYTHON:-python}"
LOG="$OUT/gpu_tier.log"
: > "$LOG"
rm -f "$OUT/errors.jsonl"
declare -a SUMMARY

part() {  # part NAME TIMEOUT_S CMD...: run, tee, record status and seconds
  local name="$1" limit="$2"; shift 2
  echo "=== $name: $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  SUMMARY+=("$(printf '%-12s rc=%-4s %4ss  %s' "$name" "$rc" "$((SECONDS - t0))" "$OUT/$name.log")")
}

{
  echo "COMFYUI_PATH=${COMFYUI_PATH:-<unset>}  cache=$INSTRUCT_TEST_CACHE  out=$OUT"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
} 2>&1 | tee -a "$LOG"

part tests 270 "$PY" -m pytest -m gpu -v -rA -p no:cacheprovider tests/test_gpu.py
BENCH=(benchmarks/bench_gpu.py --json "$OUT/bench.json")
if [ -n "${QUICK:-}" ]; then BENCH+=(--quick); fi
part bench 200 "$PY" "${BENCH[@]}"

# The family benchmark gets what is left of TOTAL_S and skips, with the reason, a family that would end after
# it (the families run smallest first): one Euler step a run and one timed run after the warm-up, since a
# full-size step is all model work, so more steps or runs would add time, not precision.
TOTAL_S="${TOTAL_S:-480}"
LEFT=$((TOTAL_S - SECONDS - 20))  # timeout may take 15 s more to kill
if [ "$LEFT" -ge 60 ]; then
  FAMILY=(benchmarks/bench_edit_families.py --device cuda --size full --dtype bf16 --steps 1 --repeat 1
          --budget-s "$((LEFT - 20))" --json "$OUT/family_bench.json")
  if [ -n "${QUICK:-}" ]; then FAMILY+=(--res 512); else FAMILY+=(--res 1024); fi
  part families "$LEFT" "$PY" "${FAMILY[@]}"
else
  echo "=== families: skipped, ${SECONDS} s of ${TOTAL_S} s spent" | tee -a "$LOG"
  SUMMARY+=("$(printf '%-12s rc=%-4s %4ss  %s' families skip 0 "only ${LEFT} s left of ${TOTAL_S} s")")
fi

{
  echo
  echo "=== summary"
  printf '%s\n' "${SUMMARY[@]}"
  if [ -f "$OUT/errors.jsonl" ]; then
    echo "--- GPU vs CPU fp32 relative errors (mode dtype case error/tolerance)"
    "$PY" -c "
import json,sys
for l in open(sys.argv[1]):
    r=json.loads(l); print(f\"{r['mode']:8s} {r['dtype']:5s} {r['case']:12s} {r['rel_error']:.4f} / {r['tolerance']}\")" "$OUT/errors.jsonl"
  fi
  grep -h '^target ' "$OUT/bench.log" "$OUT/families.log" 2>/dev/null || true
} 2>&1 | tee -a "$LOG"

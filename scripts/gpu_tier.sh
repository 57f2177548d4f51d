#!/usr/bin/env bash
# The GPU tier and the GPU benchmark in one command (issue 14), about 8 minutes on one H100/H200:
#   scripts/gpu_tier.sh            # tests (python -m pytest -m gpu), then benchmarks/bench_gpu.py
#   QUICK=1 scripts/gpu_tier.sh    # benchmark as a smoke run (--quick)
# Logs, errors.jsonl and bench.json go to ${OUT:-benchmarks/out}. Each part runs even when the one
# before failed; a summary table closes the log. Installs nothing: ComfyUI comes from COMFYUI_PATH
# (default .gpu/ComfyUI when present), extra wheels from PYTHONPATH.
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
  grep -h '^target ' "$OUT/bench.log" 2>/dev/null || true
} 2>&1 | tee -a "$LOG"

#!/usr/bin/env bash
# The prepared GPU check: one NVIDIA GPU (H100/H200 class), at most 8 minutes.
#
#   bash bench/gpu_check.sh [--quick]      # figures go to stdout and to ${OUT:-runs/gpu_check}/
#
# 1. a CUDA build of torch (installed into .venv-gpu from PyPI when the current Python has none);
# 2. the tests marked `gpu` (real int8 / int4 weight-only and W8A8 kernels through
#    apply_plan_(use_kernels=True), apply_plan_'s default dequantize-then-matmul, 2:4
#    semi-structured sparsity, fp8 where the GPU has it, bf16 dense);
# 3. `dlmsearch profile --device cuda` for the embedded model's shapes;
# 4. bench/gpu_cost_accuracy.py: cost-model Kendall tau and MAPE over 30 Plans on a random-init
#    LLaDA-8B-shaped model with fewer blocks, and the measured kernel speed-ups.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
python=${PYTHON:-python3}
started=$(date +%s)

has_cuda() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }
if ! has_cuda "$python"; then
  if ! command -v nvidia-smi >/dev/null || ! nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none)" >&2
    exit 2
  fi
  echo "gpu_check: $python has no CUDA torch; installing torch==2.13.0 (PyPI's Linux wheel is the CUDA build)" >&2
  "$python" -m venv .venv-gpu
  .venv-gpu/bin/pip install -q torch==2.13.0 -e '.[dev]' || {
    echo "gpu_check: could not install a CUDA torch (no access to PyPI?); put one on PYTHON=... and rerun" >&2
    exit 3
  }
  python=.venv-gpu/bin/python
fi
"$python" -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name())' | tee "$out/device.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee -a "$out/device.txt" || true

quick=""
[[ "${1:-}" == "--quick" ]] && quick="--quick"
# Each stage runs even when an earlier one failed (a failing test must not cost the figures); a stage
# is stopped after its limit (seconds, env GPU_CHECK_*_LIMIT); the exit status says whether all passed.
failed=()
stage() {  # stage NAME LIMIT LOG -- command...
  local name=$1 limit=$2 log=$3
  shift 4
  local rc=0
  timeout "$limit" "$@" 2>&1 | tee "$log" || rc=$?
  echo "gpu_check_${name}_rc: $rc"
  (( rc == 0 )) || failed+=("$name")
}
stage tests "${GPU_CHECK_TESTS_LIMIT:-240}" "$out/tests.txt" -- \
  "$python" -m pytest -q -rA -m gpu tests/gpu -p no:cacheprovider
stage profile "${GPU_CHECK_PROFILE_LIMIT:-240}" "$out/profile.txt" -- \
  "$python" -m dlmsearch.cli profile --device cuda --quick --out "$out/profile-cuda.yaml"
stage cost_accuracy "${GPU_CHECK_COST_LIMIT:-600}" "$out/cost_accuracy.txt" -- \
  "$python" bench/gpu_cost_accuracy.py $quick
echo "gpu_check_seconds: $(( $(date +%s) - started ))"
if (( ${#failed[@]} )); then
  echo "gpu_check: failed: ${failed[*]}" >&2
  exit 1
fi

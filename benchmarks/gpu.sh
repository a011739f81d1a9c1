#!/usr/bin/env bash
# Every GPU check in one call, on a machine with a CUDA GPU, from the repository root:
#   bash benchmarks/gpu.sh          # MNIST data in _device/data is optional
# Builds the CUDA extension, runs the CUDA tests (pytest -m cuda, then the native, op
# and graph suites on both devices), the kernel and evaluation benchmarks and, when MNIST
# files are in _device/data, a short MNIST run. Each step has a time limit, so the
# whole call takes at most about 10 minutes. Logs and JSON go to $OUT (default
# benchmarks/results/gpu); copy the JSON into benchmarks/results/ and commit it.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
status=0
step() {  # step NAME SECONDS COMMAND...: run (at most SECONDS), log to $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "!! $name failed (exit $rc), see $OUT/$name.log"
    status=1
  fi
  tail -n 15 "$OUT/$name.log"
}
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
git rev-parse HEAD >"$OUT/commit.txt" 2>/dev/null || true
step build 150 pip install --no-build-isolation --no-deps -e .
step pytest-cuda 90 python -m pytest -m cuda -v -rs
step pytest-native 80 python -m pytest tests/test_native.py tests/test_graphs.py tests/test_ops.py \
  -m "not cuda" -q -rs
step kernels 60 python -m benchmarks.kernels --device cuda --sizes 1e4,1e5,1e6,8e6,3.2e7 \
  --out "$OUT/kernels-cuda.json"
step evaluation 150 python -m benchmarks.evaluation --device cuda --rounds 2 --positions 4 \
  --out "$OUT/evaluation-cuda.json"
if [ -d _device/data ]; then
  COCD_DATA=_device/data step mnist 60 python -m benchmarks.paper --task mnist --device cuda \
    --optimizers cocd,sgd --epochs 1 --no-progress --out "$OUT"
fi
exit $status

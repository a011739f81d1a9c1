#!/usr/bin/env bash
# Does test_cuda_on_cpu catch bugs in the CUDA kernels? Applies one mutation at a time
# to a copy of csrc/kernels/cuda_kernels.cu, rebuilds the emulated kernels from it and
# runs the test, which must fail. The last mutation (a plain add in place of atomicAdd)
# is a race between the threads of a block, which HIP-CPU cannot show: it is expected
# to pass, and listed to keep that blind spot in view.
#   tests/cpp/cuda_on_cpu/mutate.sh [build-dir]   (about 2 minutes per mutation on 2 cores)
# HIP-CPU is fetched, or taken from FETCHCONTENT_SOURCE_DIR_HIPCPU when that is set.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
build=${1:-$root/build/mutate}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mutant=$work/cuda_kernels.cu
cp "$root/csrc/kernels/cuda_kernels.cu" "$mutant"

cmake -S "$root" -B "$build" -DCOCD_CUDA_ON_CPU=ON -DCOCD_BUILD_EXAMPLES=OFF \
  -DCOCD_CUDA_KERNELS_SOURCE="$mutant" \
  ${FETCHCONTENT_SOURCE_DIR_HIPCPU:+-DFETCHCONTENT_SOURCE_DIR_HIPCPU=$FETCHCONTENT_SOURCE_DIR_HIPCPU} \
  >/dev/null

# The unmutated kernels must pass, or a failure below would prove nothing.
cmake --build "$build" -j2 --target test_cuda_on_cpu >/dev/null
"$build/test_cuda_on_cpu" >/dev/null

# name | function the change is in | text there | replacement (first occurrence after
# the function's name)
mutations=(
  "dense: wrap off by one|dense_kernel(|j += n;|j += n - 1;"
  "dense: fresh-block bound off by one|dense_kernel(|if (j < B)|if (j <= B)"
  "dense: no second grid-stride pass|dense_kernel(|i += static_cast<int64_t>(gridDim.x) * blockDim.x|i += n"
  "dense: a parameter's row kept one past its end|dense_kernel(|i >= r.start + r.numel|i > r.start + r.numel"
  "dense: every group takes group 0's hyperparameters|dense_kernel(|hyper[param_group(r)]|hyper[0]"
  "fifo: grid stride of one block|fifo_kernel(|s += static_cast<int64_t>(gridDim.x) * blockDim.x|s += blockDim.x"
  "fifo: block pointer and ring head swapped|fifo_kernel(|c = counters[0], head = counters[1]|c = counters[1], head = counters[0]"
  "plan: one slot too many|plan_kernel(|j < B;|j <= B;"
  "plan: block pointer off by one|plan_kernel(|const int64_t c = counters[0];|const int64_t c = counters[0] + 1;"
  "advance: from and to swapped|cudaError_t advance(|loss_dtype, from, to,|loss_dtype, to, from,"
  "finite_difference: zero_nonfinite ignored|finite_difference_kernel(|? e.g : acc_t(0)|? e.g : e.g"
  "finite_difference: loss estimate from f+ alone|finite_difference_kernel(|total += (e.fp + e.fm) / 2|total += e.fp"
  "finite_difference: tree sum skips a level|finite_difference_kernel(|stride = kSumLanes / 2|stride = kSumLanes / 4"
  "finite_difference: plain add for atomicAdd (intra-block race, not detectable)|finite_difference_kernel(|atomicAdd(&n_bad, my_bad)|n_bad += my_bad"
)
blind="finite_difference: plain add for atomicAdd (intra-block race, not detectable)"

caught=0 missed=0
for m in "${mutations[@]}"; do
  IFS='|' read -r name where old new <<<"$m"
  MUT_WHERE=$where MUT_OLD=$old MUT_NEW=$new python3 - "$root/csrc/kernels/cuda_kernels.cu" \
    "$mutant" <<'EOF'
import os, sys
src = open(sys.argv[1]).read()
where, old, new = os.environ["MUT_WHERE"], os.environ["MUT_OLD"], os.environ["MUT_NEW"]
at = src.index(where)
i = src.index(old, at)
open(sys.argv[2], "w").write(src[:i] + new + src[i + len(old):])
EOF
  cmake --build "$build" -j2 --target test_cuda_on_cpu >/dev/null
  if timeout 900 "$build/test_cuda_on_cpu" >"$work/log" 2>&1; then
    result="passed"
  else
    result="failed ($(grep -c '^DIFFER' "$work/log" || true) differences shown)"
  fi
  if [ "$name" = "$blind" ]; then
    echo "expected to pass: $name: $result"
  elif [ "$result" = passed ]; then
    echo "NOT CAUGHT: $name"
    missed=$((missed + 1))
  else
    echo "caught: $name: test $result"
    caught=$((caught + 1))
  fi
done
cp "$root/csrc/kernels/cuda_kernels.cu" "$mutant"
echo "$caught mutations caught, $missed not caught"
[ "$missed" -eq 0 ]

// CoCD CUDA launchers: torch-free, raw pointers and an explicit stream. Each returns
// the cudaError_t of its launch (cudaGetLastError), which the caller must check.
// `counters` points to the device array {c, head, t}: the kernels read the block
// pointer and the ring head there, so a captured CUDA graph follows them.
#pragma once

#include <cuda_runtime_api.h>

#include "cocd_kernels.h"

namespace cocd {
namespace cuda {

cudaError_t plan(Slot* slots, int64_t B, const ParamRef* table, int64_t P, const int64_t* counters,
                 int64_t n, const GroupParams& groups, bool central, cudaStream_t stream);

cudaError_t advance(double* losses, int64_t n_eval, const Slot* slots, const ParamRef* table,
                    const void* loss, DType loss_dtype, int64_t from, int64_t to, bool central,
                    cudaStream_t stream);

template <typename acc_t>
cudaError_t finite_difference(acc_t* g, acc_t* loss_out, int32_t* bad, const double* losses,
                              const Slot* slots, int64_t B, bool central, bool zero_nonfinite,
                              cudaStream_t stream);

template <typename acc_t>
cudaError_t dense_update(void* x, DType x_dtype, acc_t* v, int64_t len, int64_t first,
                         const acc_t* g, const int64_t* counters, int64_t n, int64_t B, double lr,
                         double wd, double momentum, cudaStream_t stream);

template <typename acc_t, typename coord_t>
cudaError_t fifo_update(coord_t* coords, acc_t* vals, int64_t m, const acc_t* g, int64_t B,
                        const ParamRef* table, int64_t P, const int64_t* counters, int64_t n,
                        const GroupParams& groups, cudaStream_t stream);

cudaError_t perturb_batch(void* out, const void* x, DType dtype, int64_t numel,
                          const int64_t* index, const double* delta, int64_t K,
                          cudaStream_t stream);

}  // namespace cuda
}  // namespace cocd

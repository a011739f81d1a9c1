// CoCD CUDA launchers: torch-free, raw pointers and an explicit stream. Each returns
// the cudaError_t of its launch (cudaGetLastError), which the caller must check.
// `counters` points to the device array {c, head, t} and `hyper` to the param groups'
// HyperRows on the device: the kernels read the block pointer, the ring head and the
// hyperparameters there, so a captured CUDA graph follows them.
#pragma once

#include <cuda_runtime_api.h>

#include "cocd_kernels.h"

namespace cocd {
namespace cuda {

cudaError_t plan(Slot* slots, int64_t B, const ParamRef* table, int64_t P, const int64_t* counters,
                 int64_t n, const HyperRow* hyper, bool central, cudaStream_t stream);

cudaError_t advance(double* losses, int64_t n_eval, const Slot* slots, const ParamRef* table,
                    const void* loss, DType loss_dtype, int64_t from, int64_t to, bool central,
                    cudaStream_t stream);

template <typename acc_t>
cudaError_t finite_difference(acc_t* g, acc_t* loss_out, int32_t* bad, const double* losses,
                              const Slot* slots, int64_t B, bool central, bool zero_nonfinite,
                              cudaStream_t stream);

// All parameters of the table in one launch (see cpu::dense_update); v has n entries.
template <typename acc_t>
cudaError_t dense_update(const ParamRef* table, int64_t P, acc_t* v, const acc_t* g,
                         const int64_t* counters, int64_t n, int64_t B, const HyperRow* hyper,
                         cudaStream_t stream);

template <typename acc_t, typename coord_t>
cudaError_t fifo_update(coord_t* coords, acc_t* vals, int64_t m, const acc_t* g, int64_t B,
                        const ParamRef* table, int64_t P, const int64_t* counters, int64_t n,
                        const HyperRow* hyper, cudaStream_t stream);

}  // namespace cuda
}  // namespace cocd

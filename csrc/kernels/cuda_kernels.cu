// CoCD CUDA kernels (no torch). Every launcher takes the caller's stream and returns
// the launch's error; none synchronises. Arithmetic uses the _rn intrinsics so that no
// multiply-add is fused: each product is rounded on its own, as in the reference.
// The tests also build this file as C++ against HIP-CPU, which runs the kernels on the
// CPU (cmake -DCOCD_CUDA_ON_CPU=ON); every launch therefore goes through launch().
#include <cuda_runtime.h>

#include <algorithm>

#include "cocd_kernels_cuda.h"
#include "dtype.h"
#include "slot_ops.h"

namespace cocd {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct Exactly {  // a non-deduced parameter: arguments convert as in a plain call
  using type = T;
};

// kernel<<<blocks, threads, 0, stream>>>(args...), in a form HIP-CPU accepts too.
template <typename... Params>
void launch(void (*kernel)(Params...), int blocks, int threads, cudaStream_t stream,
            typename Exactly<Params>::type... args) {
#if defined(__HIP_CPU_RT__)
  hipLaunchKernelGGL(kernel, dim3(blocks), dim3(threads), 0, stream, args...);
#else
  // clang-format off
  kernel<<<blocks, threads, 0, stream>>>(args...);
  // clang-format on
#endif
}

int blocks_for(int64_t work) {
  // Enough blocks to fill any current GPU several times over; grid-stride loops do the rest.
  const int64_t b = (work + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(b, 65535)));
}

__global__ void plan_kernel(Slot* slots, int64_t B, const ParamRef* table, int64_t P,
                            const int64_t* counters, int64_t n, const HyperRow* hyper,
                            bool central) {
  const int64_t c = counters[0];
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < B;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    plan_slot(slots, j, table, P, c, n, hyper, central);
  }
}

__global__ void advance_kernel(double* losses, int64_t n_eval, const Slot* slots,
                               const ParamRef* table, const void* loss, DType loss_dtype,
                               int64_t from, int64_t to, bool central) {
  advance_eval(losses, n_eval, slots, table, loss, loss_dtype, from, to, central);
}

// One block of kSumLanes threads: estimates in a strided loop, then the loss estimate
// summed in the order cocd_kernels.h defines (the CPU kernel's), whatever the scheduling.
template <typename acc_t>
__global__ void finite_difference_kernel(acc_t* g, acc_t* loss_out, int32_t* bad,
                                         const double* losses, const Slot* slots, int64_t B,
                                         bool central, bool zero_nonfinite) {
  __shared__ double partial[kSumLanes];
  __shared__ int32_t n_bad;
  if (threadIdx.x == 0) n_bad = 0;
  __syncthreads();
  double total = 0.0;
  int32_t my_bad = 0;
  for (int64_t j = threadIdx.x; j < B; j += blockDim.x) {
    const Estimate<acc_t> e = fd_estimate<acc_t>(losses, slots, j, central);
    g[j] = e.finite || !zero_nonfinite ? e.g : acc_t(0);
    my_bad += e.finite ? 0 : 1;
    if (central) total += (e.fp + e.fm) / 2;
  }
  partial[threadIdx.x] = total;
  if (my_bad) atomicAdd(&n_bad, my_bad);
  __syncthreads();
  for (unsigned stride = kSumLanes / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *loss_out = static_cast<acc_t>(central ? partial[0] / static_cast<double>(B) : losses[0]);
    *bad = n_bad;
  }
}

// All parameters in one launch: a grid-stride loop over the n coordinates. Each
// thread finds its coordinate's parameter row by binary search, and keeps the row (and
// its group's HyperRow) while its next coordinates stay inside it. Coordinate i is in
// the block when (i - c) mod n is below B; the block pointer c is read on the device,
// and the modulo is one conditional add (both operands lie in [0, n)).
template <typename acc_t>
__global__ void dense_kernel(const ParamRef* table, int64_t P, acc_t* v, const acc_t* g,
                             const int64_t* counters, int64_t n, int64_t B, const HyperRow* hyper) {
  const int64_t c = counters[0];
  ParamRef r{0, 0, 0, 0};  // numel 0: no coordinate is inside, the first one searches
  acc_t lr = 0, decay = 0, momentum = 0;
  bool has_wd = false, decays = false;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i < r.start || i >= r.start + r.numel) {
      r = table[find_param(table, P, i)];
      const HyperRow h = hyper[param_group(r)];
      lr = static_cast<acc_t>(h.lr);
      decay = decay_factor<acc_t>(h.lr, h.weight_decay);
      momentum = static_cast<acc_t>(h.momentum);
      has_wd = h.weight_decay != 0.0;
      decays = h.momentum != 1.0;
    }
    int64_t j = i - c;
    if (j < 0) j += n;
    acc_t vi;
    if (j < B) {
      vi = g[j];
      v[i] = vi;
    } else {
      vi = v[i];
      if (decays) {
        vi = mul_rn(vi, momentum);
        v[i] = vi;
      }
    }
    void* x = reinterpret_cast<void*>(r.ptr);
    const DType dt = param_dtype(r);
    store_as<acc_t>(x, dt, i - r.start,
                    descend(load_as<acc_t>(x, dt, i - r.start), vi, lr, decay, has_wd));
  }
}

template <typename acc_t, typename coord_t>
__global__ void fifo_kernel(coord_t* coords, acc_t* vals, int64_t m, const acc_t* g, int64_t B,
                            const ParamRef* table, int64_t P, const int64_t* counters, int64_t n,
                            const HyperRow* hyper) {
  const int64_t c = counters[0], head = counters[1];
  for (int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; s < m;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    fifo_entry(s, coords, vals, m, g, B, table, P, head, c, n, hyper);
  }
}

}  // namespace

cudaError_t plan(Slot* slots, int64_t B, const ParamRef* table, int64_t P, const int64_t* counters,
                 int64_t n, const HyperRow* hyper, bool central, cudaStream_t stream) {
  launch(plan_kernel, blocks_for(B), kThreads, stream, slots, B, table, P, counters, n, hyper,
         central);
  return cudaGetLastError();
}

cudaError_t advance(double* losses, int64_t n_eval, const Slot* slots, const ParamRef* table,
                    const void* loss, DType loss_dtype, int64_t from, int64_t to, bool central,
                    cudaStream_t stream) {
  launch(advance_kernel, 1, 1, stream, losses, n_eval, slots, table, loss, loss_dtype, from, to,
         central);
  return cudaGetLastError();
}

template <typename acc_t>
cudaError_t finite_difference(acc_t* g, acc_t* loss_out, int32_t* bad, const double* losses,
                              const Slot* slots, int64_t B, bool central, bool zero_nonfinite,
                              cudaStream_t stream) {
  launch(finite_difference_kernel<acc_t>, 1, kSumLanes, stream, g, loss_out, bad, losses, slots, B,
         central, zero_nonfinite);
  return cudaGetLastError();
}

template <typename acc_t>
cudaError_t dense_update(const ParamRef* table, int64_t P, acc_t* v, const acc_t* g,
                         const int64_t* counters, int64_t n, int64_t B, const HyperRow* hyper,
                         cudaStream_t stream) {
  launch(dense_kernel<acc_t>, blocks_for(n), kThreads, stream, table, P, v, g, counters, n, B,
         hyper);
  return cudaGetLastError();
}

template <typename acc_t, typename coord_t>
cudaError_t fifo_update(coord_t* coords, acc_t* vals, int64_t m, const acc_t* g, int64_t B,
                        const ParamRef* table, int64_t P, const int64_t* counters, int64_t n,
                        const HyperRow* hyper, cudaStream_t stream) {
  launch(fifo_kernel<acc_t, coord_t>, blocks_for(m), kThreads, stream, coords, vals, m, g, B, table,
         P, counters, n, hyper);
  return cudaGetLastError();
}

template cudaError_t finite_difference<float>(float*, float*, int32_t*, const double*, const Slot*,
                                              int64_t, bool, bool, cudaStream_t);
template cudaError_t finite_difference<double>(double*, double*, int32_t*, const double*,
                                               const Slot*, int64_t, bool, bool, cudaStream_t);
template cudaError_t dense_update<float>(const ParamRef*, int64_t, float*, const float*,
                                         const int64_t*, int64_t, int64_t, const HyperRow*,
                                         cudaStream_t);
template cudaError_t dense_update<double>(const ParamRef*, int64_t, double*, const double*,
                                          const int64_t*, int64_t, int64_t, const HyperRow*,
                                          cudaStream_t);
#define COCD_FIFO(acc_t, coord_t)                                                                 \
  template cudaError_t fifo_update<acc_t, coord_t>(                                               \
      coord_t*, acc_t*, int64_t, const acc_t*, int64_t, const ParamRef*, int64_t, const int64_t*, \
      int64_t, const HyperRow*, cudaStream_t);
COCD_FIFO(float, int64_t)
COCD_FIFO(double, int64_t)
COCD_FIFO(float, int32_t)
COCD_FIFO(double, int32_t)
#undef COCD_FIFO

}  // namespace cuda
}  // namespace cocd

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
                            const int64_t* counters, int64_t n, GroupParams groups, bool central) {
  const int64_t c = counters[0];
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < B;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    plan_slot(slots, j, table, P, c, n, groups, central);
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
    const double fp = central ? losses[2 * j] : losses[j + 1];
    const double fm = central ? losses[2 * j + 1] : losses[0];
    const double h = slots[j].h;
    acc_t gj = h != 0.0 ? static_cast<acc_t>(__ddiv_rn(__dsub_rn(fp, fm), h)) : acc_t(0);
    const bool ok = isfinite(gj) && isfinite(fp) && isfinite(fm);
    if (!ok) {
      ++my_bad;
      if (zero_nonfinite) gj = acc_t(0);
    }
    g[j] = gj;
    if (central) total += (fp + fm) / 2;
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

// Element i of a parameter is coordinate first + i; it is in the block when its
// position there, (first + i - c) mod n, is below B. The block pointer c is read on
// the device, and the modulo is one conditional add (both operands lie in [0, n)).
template <typename codec, typename acc_t>
__global__ void dense_kernel(typename codec::storage* x, acc_t* v, int64_t len, int64_t first,
                             const acc_t* g, const int64_t* counters, int64_t n, int64_t B,
                             acc_t decay, acc_t lr, acc_t momentum, bool do_decay, bool do_wd) {
  const int64_t c = counters[0];
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < len;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t j = first + i - c;
    if (j < 0) j += n;
    acc_t vi;
    if (j < B) {
      vi = g[j];
      v[i] = vi;
    } else {
      vi = v[i];
      if (do_decay) {
        vi = mul_rn(vi, momentum);
        v[i] = vi;
      }
    }
    acc_t xi = codec::template load<acc_t>(x[i]);
    if (do_wd) xi = mul_rn(xi, decay);
    x[i] = codec::template store<acc_t>(sub_rn(xi, mul_rn(lr, vi)));
  }
}

template <typename acc_t, typename coord_t>
__global__ void fifo_kernel(coord_t* coords, acc_t* vals, int64_t m, const acc_t* g, int64_t B,
                            const ParamRef* table, int64_t P, const int64_t* counters, int64_t n,
                            GroupParams groups) {
  const int64_t c = counters[0], head = counters[1];
  for (int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; s < m;
       s += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    fifo_entry(s, coords, vals, m, g, B, table, P, head, c, n, groups);
  }
}

template <typename storage_t>
__global__ void perturb_batch_kernel(storage_t* out, const storage_t* x, DType dtype, int64_t numel,
                                     const int64_t* index, const double* delta, int64_t K) {
  const int64_t total = K * numel;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = e / numel;
    const int64_t i = e - k * numel;
    storage_t value = x[i];
    if (i == index[k]) {
      value = static_cast<storage_t>(perturbed_bits(static_cast<uint64_t>(value), dtype, delta[k]));
    }
    out[e] = value;
  }
}

template <typename codec, typename acc_t>
void launch_dense(void* x, acc_t* v, int64_t len, int64_t first, const acc_t* g,
                  const int64_t* counters, int64_t n, int64_t B, double lr, double wd,
                  double momentum, cudaStream_t stream) {
  launch(dense_kernel<codec, acc_t>, blocks_for(len), kThreads, stream,
         static_cast<typename codec::storage*>(x), v, len, first, g, counters, n, B,
         static_cast<acc_t>(1.0 - lr * wd), static_cast<acc_t>(lr), static_cast<acc_t>(momentum),
         momentum != 1.0, wd != 0.0);
}

}  // namespace

cudaError_t plan(Slot* slots, int64_t B, const ParamRef* table, int64_t P, const int64_t* counters,
                 int64_t n, const GroupParams& groups, bool central, cudaStream_t stream) {
  launch(plan_kernel, blocks_for(B), kThreads, stream, slots, B, table, P, counters, n, groups,
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
cudaError_t dense_update(void* x, DType x_dtype, acc_t* v, int64_t len, int64_t first,
                         const acc_t* g, const int64_t* counters, int64_t n, int64_t B, double lr,
                         double wd, double momentum, cudaStream_t stream) {
  switch (x_dtype) {
    case kHalf:
      launch_dense<Codec<HalfTag>, acc_t>(x, v, len, first, g, counters, n, B, lr, wd, momentum,
                                          stream);
      break;
    case kBFloat16:
      launch_dense<Codec<BF16Tag>, acc_t>(x, v, len, first, g, counters, n, B, lr, wd, momentum,
                                          stream);
      break;
    case kFloat:
      launch_dense<Codec<float>, acc_t>(x, v, len, first, g, counters, n, B, lr, wd, momentum,
                                        stream);
      break;
    default:
      launch_dense<Codec<double>, acc_t>(x, v, len, first, g, counters, n, B, lr, wd, momentum,
                                         stream);
  }
  return cudaGetLastError();
}

template <typename acc_t, typename coord_t>
cudaError_t fifo_update(coord_t* coords, acc_t* vals, int64_t m, const acc_t* g, int64_t B,
                        const ParamRef* table, int64_t P, const int64_t* counters, int64_t n,
                        const GroupParams& groups, cudaStream_t stream) {
  launch(fifo_kernel<acc_t, coord_t>, blocks_for(m), kThreads, stream, coords, vals, m, g, B, table,
         P, counters, n, groups);
  return cudaGetLastError();
}

cudaError_t perturb_batch(void* out, const void* x, DType dtype, int64_t numel,
                          const int64_t* index, const double* delta, int64_t K,
                          cudaStream_t stream) {
  const int blocks = blocks_for(K * numel);
  switch (dtype) {
    case kHalf:
    case kBFloat16:
      launch(perturb_batch_kernel<uint16_t>, blocks, kThreads, stream, static_cast<uint16_t*>(out),
             static_cast<const uint16_t*>(x), dtype, numel, index, delta, K);
      break;
    case kFloat:
      launch(perturb_batch_kernel<uint32_t>, blocks, kThreads, stream, static_cast<uint32_t*>(out),
             static_cast<const uint32_t*>(x), dtype, numel, index, delta, K);
      break;
    default:
      launch(perturb_batch_kernel<uint64_t>, blocks, kThreads, stream, static_cast<uint64_t*>(out),
             static_cast<const uint64_t*>(x), dtype, numel, index, delta, K);
  }
  return cudaGetLastError();
}

template cudaError_t finite_difference<float>(float*, float*, int32_t*, const double*, const Slot*,
                                              int64_t, bool, bool, cudaStream_t);
template cudaError_t finite_difference<double>(double*, double*, int32_t*, const double*,
                                               const Slot*, int64_t, bool, bool, cudaStream_t);
template cudaError_t dense_update<float>(void*, DType, float*, int64_t, int64_t, const float*,
                                         const int64_t*, int64_t, int64_t, double, double, double,
                                         cudaStream_t);
template cudaError_t dense_update<double>(void*, DType, double*, int64_t, int64_t, const double*,
                                          const int64_t*, int64_t, int64_t, double, double, double,
                                          cudaStream_t);
#define COCD_FIFO(acc_t, coord_t)                                                                 \
  template cudaError_t fifo_update<acc_t, coord_t>(                                               \
      coord_t*, acc_t*, int64_t, const acc_t*, int64_t, const ParamRef*, int64_t, const int64_t*, \
      int64_t, const GroupParams&, cudaStream_t);
COCD_FIFO(float, int64_t)
COCD_FIFO(double, int64_t)
COCD_FIFO(float, int32_t)
COCD_FIFO(double, int32_t)
#undef COCD_FIFO

}  // namespace cuda
}  // namespace cocd

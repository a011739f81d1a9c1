// The CUDA runtime names the kernels use, mapped to HIP-CPU (tests only: see
// cmake/hipcpu.cmake). Device memory is host memory there, launches run on the CPU.
#pragma once

#include <hip/hip_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

using cudaStream_t = hipStream_t;
using cudaError_t = hipError_t;
constexpr cudaError_t cudaSuccess = hipSuccess;
inline cudaError_t cudaGetLastError() { return hipGetLastError(); }
inline cudaError_t cudaDeviceSynchronize() { return hipDeviceSynchronize(); }
inline const char* cudaGetErrorString(cudaError_t e) { return hipGetErrorString(e); }

// HIP-CPU's GCC __global__ adds __attribute__((simd)), which warns on by-value struct
// arguments; the kernels need no vector variants.
#undef __global__
#define __global__ __attribute__((flatten))

// Device intrinsics HIP-CPU lacks. The _rn forms round each operation on its own: on
// the host, ISO C++ (no -ffp-contract=fast) already does.
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline long long __double_as_longlong(double d) {
  long long u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}
using std::isfinite;  // CUDA's math API has it in the global namespace

// Scalar conversions between storage dtypes and fp32/fp64 math, for host and device.
//
// fp16 and bf16 are converted in software with round-to-nearest-even, bit for bit what
// PyTorch's c10::Half / c10::BFloat16 do, so the native kernels round exactly like the
// reference implementation.
#pragma once

#include <cstdint>
#include <cstring>

#include "cocd_kernels.h"

namespace cocd {

COCD_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

COCD_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

COCD_HD uint64_t double_bits(double d) {
#if defined(__CUDA_ARCH__)
  return static_cast<uint64_t>(__double_as_longlong(d));
#else
  uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
#endif
}

COCD_HD double bits_double(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
#endif
}

// IEEE binary16 <-> binary32.
COCD_HD float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return bits_float(sign);
    // Subnormal: mant * 2^-24, exact in fp32.
    const float f = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -f : f;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

COCD_HD uint16_t float_to_half(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf or nan (nan keeps a quiet payload bit)
    return static_cast<uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  }
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (ax < 0x38800000u) {
    // Result is subnormal or zero: round ax * 2^24 to an integer, ties to even.
    if (ax < 0x33000000u) return static_cast<uint16_t>(sign);  // below half the min subnormal
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24 for the range handled here
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits, ties to even.
  uint32_t r = ax - (112u << 23);
  r += 0xfffu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

// bfloat16 <-> binary32.
COCD_HD float bf16_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

COCD_HD uint16_t float_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;  // nan, as c10::BFloat16
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Load element i of a parameter stored as `dtype`, widened to acc_t.
template <typename acc_t>
COCD_HD acc_t load_as(const void* base, DType dtype, int64_t i) {
  switch (dtype) {
    case kHalf:
      return static_cast<acc_t>(half_to_float(static_cast<const uint16_t*>(base)[i]));
    case kBFloat16:
      return static_cast<acc_t>(bf16_to_float(static_cast<const uint16_t*>(base)[i]));
    case kFloat:
      return static_cast<acc_t>(static_cast<const float*>(base)[i]);
    default:
      return static_cast<acc_t>(static_cast<const double*>(base)[i]);
  }
}

// Store acc_t into element i of a parameter stored as `dtype`, rounding once.
template <typename acc_t>
COCD_HD void store_as(void* base, DType dtype, int64_t i, acc_t value) {
  switch (dtype) {
    case kHalf:
      static_cast<uint16_t*>(base)[i] = float_to_half(static_cast<float>(value));
      break;
    case kBFloat16:
      static_cast<uint16_t*>(base)[i] = float_to_bf16(static_cast<float>(value));
      break;
    case kFloat:
      static_cast<float*>(base)[i] = static_cast<float>(value);
      break;
    default:
      static_cast<double*>(base)[i] = static_cast<double>(value);
  }
}

// Typed codecs for the hot loops, where the dtype is a template parameter.
struct HalfTag {};
struct BF16Tag {};

template <typename tag>
struct Codec;

template <>
struct Codec<HalfTag> {
  using storage = uint16_t;
  template <typename acc_t>
  COCD_HD static acc_t load(storage s) {
    return static_cast<acc_t>(half_to_float(s));
  }
  template <typename acc_t>
  COCD_HD static storage store(acc_t a) {
    return float_to_half(static_cast<float>(a));
  }
};

template <>
struct Codec<BF16Tag> {
  using storage = uint16_t;
  template <typename acc_t>
  COCD_HD static acc_t load(storage s) {
    return static_cast<acc_t>(bf16_to_float(s));
  }
  template <typename acc_t>
  COCD_HD static storage store(acc_t a) {
    return float_to_bf16(static_cast<float>(a));
  }
};

template <>
struct Codec<float> {
  using storage = float;
  template <typename acc_t>
  COCD_HD static acc_t load(storage s) {
    return static_cast<acc_t>(s);
  }
  template <typename acc_t>
  COCD_HD static storage store(acc_t a) {
    return static_cast<float>(a);
  }
};

template <>
struct Codec<double> {
  using storage = double;
  template <typename acc_t>
  COCD_HD static acc_t load(storage s) {
    return static_cast<acc_t>(s);
  }
  template <typename acc_t>
  COCD_HD static storage store(acc_t a) {
    return static_cast<double>(a);
  }
};

// Raw bits of element i (zero-extended) and writing them back.
COCD_HD uint64_t read_bits(const void* base, DType dtype, int64_t i) {
  switch (dtype) {
    case kHalf:
    case kBFloat16:
      return static_cast<const uint16_t*>(base)[i];
    case kFloat:
      return static_cast<const uint32_t*>(base)[i];
    default:
      return static_cast<const uint64_t*>(base)[i];
  }
}

COCD_HD void write_bits(void* base, DType dtype, int64_t i, uint64_t bits) {
  switch (dtype) {
    case kHalf:
    case kBFloat16:
      static_cast<uint16_t*>(base)[i] = static_cast<uint16_t>(bits);
      break;
    case kFloat:
      static_cast<uint32_t*>(base)[i] = static_cast<uint32_t>(bits);
      break;
    default:
      static_cast<uint64_t*>(base)[i] = bits;
  }
}

// The value behind raw bits, in float64 (exact for every supported dtype).
COCD_HD double bits_value(uint64_t bits, DType dtype) {
  switch (dtype) {
    case kHalf:
      return half_to_float(static_cast<uint16_t>(bits));
    case kBFloat16:
      return bf16_to_float(static_cast<uint16_t>(bits));
    case kFloat:
      return bits_float(static_cast<uint32_t>(bits));
    default:
      return bits_double(bits);
  }
}

// round(value + delta) in `dtype`, as raw bits. The sum is formed in float64 and, for
// the narrower dtypes, rounded to float32 first: the order the reference uses.
COCD_HD uint64_t perturbed_bits(uint64_t bits, DType dtype, double delta) {
  const double sum = bits_value(bits, dtype) + delta;
  switch (dtype) {
    case kHalf:
      return float_to_half(static_cast<float>(sum));
    case kBFloat16:
      return float_to_bf16(static_cast<float>(sum));
    case kFloat:
      return float_bits(static_cast<float>(sum));
    default:
      return double_bits(sum);
  }
}

// Index of the parameter-table row holding coordinate i (rows sorted by start; rows
// of zero elements are never returned because the last row with start <= i wins and
// the next non-empty row starts exactly where an empty one does).
COCD_HD int64_t find_param(const ParamRef* table, int64_t P, int64_t i) {
  int64_t lo = 0, hi = P - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (table[mid].start <= i) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

COCD_HD DType param_dtype(const ParamRef& r) {
  return static_cast<DType>(r.meta & ((1 << kGroupShift) - 1));
}
COCD_HD int32_t param_group(const ParamRef& r) {
  return static_cast<int32_t>(r.meta >> kGroupShift);
}

}  // namespace cocd

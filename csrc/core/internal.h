// What the C API (c_api.cpp) and the optimizer core (optimizer.cpp) share, beyond the
// public headers: the constructor's inputs in container-free form, the heap-free
// construction entry points, and error reporting in builds without exceptions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cocd/optimizer.hpp"

namespace cocd {
namespace detail {

// The constructor's inputs, read through accessors so that the C API's arrays and the
// C++ API's vectors share one validation and layout path without copying either.
struct Inputs {
  std::size_t n_params = 0;
  const void* params = nullptr;
  ParamSpan (*param)(const void* params, std::size_t i) = nullptr;
  std::size_t n_groups = 0;
  const void* groups = nullptr;
  GroupOptions (*group)(const void* groups, std::size_t i) = nullptr;
  int64_t compute_budget = 1;
  int64_t memory_budget = 0;
  bool central_difference = true;
  int32_t nonfinite = 0;
  const double* init_grad = nullptr;  // init_grad_count values, or null
  std::size_t init_grad_count = 0;
};

struct Access {
  // Validates the inputs and returns the bytes of storage an optimizer for them needs.
  static std::size_t required_bytes(const Inputs& in);
  // An optimizer living in `storage` (8-byte aligned, >= required_bytes(in)); on
  // destruction it calls release(storage) unless release is null (caller memory).
  static Optimizer create_in(const Inputs& in, void* storage, std::size_t bytes,
                             void (*release)(void*));
};

// Storage alignment the optimizer needs (its state holds 64-bit values).
constexpr std::size_t kStorageAlign = 8;

#if !defined(__cpp_exceptions)
// Builds without exceptions: the core reports an error here (status is a cocd_status
// code) and this does not return. Inside a C API call it returns that call's status;
// anywhere else (the C++ API) the program traps.
[[noreturn]] void report_error(int status, const char* message);
#endif

}  // namespace detail
}  // namespace cocd

// CUDA implementations of the cocd_cuda ops (schemas are in ops.cpp). Host-compiled:
// it only checks arguments and calls the torch-free launchers in
// kernels/cuda_kernels.cu on the current stream; nothing here synchronises.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "binding.h"
#include "kernels/cocd_kernels_cuda.h"

namespace cocd {
namespace {

using binding::bump;
using binding::check_buffer;
using binding::check_on;

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void plan_cuda(at::Tensor& slots, const at::Tensor& table, const at::Tensor& hyper,
               const at::Tensor& counters, int64_t n, bool central) {
  check_on(table, slots, "the parameter table");
  const HyperRow* h = binding::hyper_of(hyper, slots);
  const int64_t* k = binding::counters_of(counters, slots);
  const c10::cuda::CUDAGuard guard(slots.device());
  C10_CUDA_CHECK(cuda::plan(binding::slots_of(slots), slots.size(0), binding::table_of(table),
                            table.size(0), k, n, h, central, current_stream()));
  bump(slots);
}

// Which parameter a slot's coordinate lies in is known only on the device, so every
// parameter's version counter is bumped.
void advance_cuda(at::Tensor& losses, at::TensorList params, const at::Tensor& slots,
                  const at::Tensor& table, const std::optional<at::Tensor>& loss, int64_t src,
                  int64_t dst, bool central) {
  check_buffer(losses, at::kDouble, -1, "losses");
  TORCH_CHECK_VALUE(table.size(0) == static_cast<int64_t>(params.size()),
                    "the parameter table has ", table.size(0), " rows for ", params.size(),
                    " parameters");
  const c10::cuda::CUDAGuard guard(losses.device());
  at::Tensor value;
  if (loss.has_value()) value = binding::checked_loss(*loss, losses);
  C10_CUDA_CHECK(cuda::advance(losses.data_ptr<double>(), losses.numel(), binding::slots_of(slots),
                               binding::table_of(table),
                               value.defined() ? value.const_data_ptr() : nullptr,
                               value.defined() ? binding::dtype_of(value, "the loss") : kDouble,
                               src, dst, central, current_stream()));
  for (const auto& p : params) bump(p);
  bump(losses);
}

void finite_difference_cuda(at::Tensor& g, at::Tensor& loss_out, at::Tensor& bad,
                            const at::Tensor& losses, const at::Tensor& slots, bool central,
                            bool zero_nonfinite) {
  const int64_t B = slots.size(0);
  binding::check_finite_difference(g, loss_out, bad, losses, slots, central);
  const c10::cuda::CUDAGuard guard(g.device());
  const Slot* s = binding::slots_of(slots);
  if (g.scalar_type() == at::kDouble) {
    C10_CUDA_CHECK(cuda::finite_difference<double>(
        g.data_ptr<double>(), loss_out.data_ptr<double>(), bad.data_ptr<int32_t>(),
        losses.data_ptr<double>(), s, B, central, zero_nonfinite, current_stream()));
  } else {
    C10_CUDA_CHECK(cuda::finite_difference<float>(
        g.data_ptr<float>(), loss_out.data_ptr<float>(), bad.data_ptr<int32_t>(),
        losses.data_ptr<double>(), s, B, central, zero_nonfinite, current_stream()));
  }
  bump(g);
  bump(loss_out);
  bump(bad);
}

// One multi-tensor launch over every parameter (and param group).
void dense_update_cuda(at::TensorList params, at::Tensor& buffer, const at::Tensor& g,
                       const at::Tensor& table, const at::Tensor& hyper, const at::Tensor& counters,
                       int64_t n) {
  binding::check_dense_update(params, buffer, g, table, n);
  const HyperRow* h = binding::hyper_of(hyper, buffer);
  const int64_t* k = binding::counters_of(counters, buffer);
  const c10::cuda::CUDAGuard guard(buffer.device());
  const ParamRef* t = binding::table_of(table);
  const int64_t P = table.size(0);
  if (buffer.scalar_type() == at::kDouble) {
    C10_CUDA_CHECK(cuda::dense_update<double>(t, P, buffer.data_ptr<double>(), g.data_ptr<double>(),
                                              k, n, g.numel(), h, current_stream()));
  } else {
    C10_CUDA_CHECK(cuda::dense_update<float>(t, P, buffer.data_ptr<float>(), g.data_ptr<float>(), k,
                                             n, g.numel(), h, current_stream()));
  }
  for (const auto& p : params) bump(p);
  bump(buffer);
}

void fifo_update_cuda(at::TensorList params, at::Tensor& coords, at::Tensor& vals,
                      const at::Tensor& g, const at::Tensor& table, const at::Tensor& hyper,
                      const at::Tensor& counters, int64_t n) {
  const int64_t m = vals.numel();
  binding::check_fifo_update(params, coords, vals, g, table);
  const HyperRow* h = binding::hyper_of(hyper, vals);
  const int64_t* k = binding::counters_of(counters, vals);
  const c10::cuda::CUDAGuard guard(vals.device());
  const ParamRef* t = binding::table_of(table);
  // Ring coordinates are int32 when n < 2^31 (the engine's choice), else int64.
  auto run = [&](auto acc_zero, auto coord_zero) {
    using acc_t = decltype(acc_zero);
    using coord_t = decltype(coord_zero);
    C10_CUDA_CHECK((cuda::fifo_update<acc_t, coord_t>(
        coords.data_ptr<coord_t>(), vals.data_ptr<acc_t>(), m, g.data_ptr<acc_t>(), g.numel(), t,
        table.size(0), k, n, h, current_stream())));
  };
  const bool wide = vals.scalar_type() == at::kDouble;
  if (coords.scalar_type() == at::kInt) {
    wide ? run(double{}, int32_t{}) : run(float{}, int32_t{});
  } else {
    wide ? run(double{}, int64_t{}) : run(float{}, int64_t{});
  }
  for (const auto& p : params) bump(p);
  bump(coords);
  bump(vals);
}

}  // namespace
}  // namespace cocd

TORCH_LIBRARY_IMPL(cocd_cuda, CUDA, m) {
  m.impl("plan_", &cocd::plan_cuda);
  m.impl("advance_", &cocd::advance_cuda);
  m.impl("finite_difference_", &cocd::finite_difference_cuda);
  m.impl("dense_update_", &cocd::dense_update_cuda);
  m.impl("fifo_update_", &cocd::fifo_update_cuda);
}

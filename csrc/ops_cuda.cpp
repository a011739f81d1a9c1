// CUDA implementations of the cocd_cuda ops (schemas are in ops.cpp). Host-compiled:
// it only checks arguments and calls the torch-free launchers in
// kernels/cuda_kernels.cu on the current stream; nothing here synchronises.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "binding.h"
#include "kernels/cocd_kernels_cuda.h"

namespace cocd {
namespace {

using binding::bump;
using binding::check_buffer;
using binding::check_on;

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void plan_cuda(at::Tensor& slots, const at::Tensor& table, const at::Tensor& counters, int64_t n,
               at::ArrayRef<double> eps, bool central) {
  check_on(table, slots, "the parameter table");
  const int64_t* k = binding::counters_of(counters, slots);
  const c10::cuda::CUDAGuard guard(slots.device());
  const GroupParams groups = binding::group_params({}, {}, eps, {});
  C10_CUDA_CHECK(cuda::plan(binding::slots_of(slots), slots.size(0), binding::table_of(table),
                            table.size(0), k, n, groups, central, current_stream()));
}

void advance_cuda(at::Tensor& losses, const at::Tensor& slots, const at::Tensor& table,
                  const std::optional<at::Tensor>& loss, int64_t src, int64_t dst, bool central) {
  check_buffer(losses, at::kDouble, -1, "losses");
  const c10::cuda::CUDAGuard guard(losses.device());
  at::Tensor value;
  if (loss.has_value()) value = binding::checked_loss(*loss, losses);
  C10_CUDA_CHECK(cuda::advance(losses.data_ptr<double>(), losses.numel(), binding::slots_of(slots),
                               binding::table_of(table),
                               value.defined() ? value.const_data_ptr() : nullptr,
                               value.defined() ? binding::dtype_of(value, "the loss") : kDouble,
                               src, dst, central, current_stream()));
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
}

template <typename acc_t>
void dense_group(at::TensorList params, at::Tensor& buffer, const at::Tensor& g, int64_t first,
                 const int64_t* counters, int64_t n, double lr, double wd, double momentum) {
  acc_t* v = buffer.data_ptr<acc_t>();
  const acc_t* gp = g.data_ptr<acc_t>();
  const cudaStream_t stream = current_stream();
  int64_t start = first;
  for (const auto& p : params) {
    const int64_t len = p.numel();
    if (len > 0) {
      C10_CUDA_CHECK(cuda::dense_update<acc_t>(p.data_ptr(), binding::dtype_of(p, "a parameter"),
                                               v + start, len, start, gp, counters, n, g.numel(),
                                               lr, wd, momentum, stream));
    }
    start += len;
  }
}

void dense_update_cuda(at::TensorList params, at::Tensor& buffer, const at::Tensor& g,
                       int64_t first, const at::Tensor& counters, int64_t n, double lr,
                       double weight_decay, double momentum) {
  binding::check_dense_update(params, buffer, g, first, n);
  const int64_t* k = binding::counters_of(counters, buffer);
  const c10::cuda::CUDAGuard guard(buffer.device());
  if (buffer.scalar_type() == at::kDouble) {
    dense_group<double>(params, buffer, g, first, k, n, lr, weight_decay, momentum);
  } else {
    dense_group<float>(params, buffer, g, first, k, n, lr, weight_decay, momentum);
  }
  for (const auto& p : params) bump(p);
  bump(buffer);
}

void fifo_update_cuda(at::TensorList params, at::Tensor& coords, at::Tensor& vals,
                      const at::Tensor& g, const at::Tensor& table, const at::Tensor& counters,
                      int64_t n, at::ArrayRef<double> lr, at::ArrayRef<double> weight_decay,
                      at::ArrayRef<double> momentum) {
  const int64_t m = vals.numel();
  binding::check_fifo_update(params, coords, vals, g, table);
  const int64_t* k = binding::counters_of(counters, vals);
  const c10::cuda::CUDAGuard guard(vals.device());
  const GroupParams groups = binding::group_params(lr, weight_decay, {}, momentum);
  const ParamRef* t = binding::table_of(table);
  if (vals.scalar_type() == at::kDouble) {
    C10_CUDA_CHECK((cuda::fifo_update<double, int64_t>(
        coords.data_ptr<int64_t>(), vals.data_ptr<double>(), m, g.data_ptr<double>(), g.numel(), t,
        table.size(0), k, n, groups, current_stream())));
  } else {
    C10_CUDA_CHECK((cuda::fifo_update<float, int64_t>(
        coords.data_ptr<int64_t>(), vals.data_ptr<float>(), m, g.data_ptr<float>(), g.numel(), t,
        table.size(0), k, n, groups, current_stream())));
  }
  for (const auto& p : params) bump(p);
  bump(coords);
  bump(vals);
}

at::Tensor perturb_batch_cuda(const at::Tensor& x, const at::Tensor& index,
                              const at::Tensor& delta) {
  // Indices are not range-checked here (that would read them on the host); an index
  // outside [0, numel) perturbs nothing in its copy.
  TORCH_CHECK_VALUE(x.is_contiguous(), "x must be contiguous");
  check_buffer(index, at::kLong, -1, "index");
  check_buffer(delta, at::kDouble, index.numel(), "delta");
  check_on(index, x, "index");
  check_on(delta, x, "delta");
  const c10::cuda::CUDAGuard guard(x.device());
  std::vector<int64_t> shape{index.numel()};
  shape.insert(shape.end(), x.sizes().begin(), x.sizes().end());
  at::Tensor out = at::empty(shape, x.options());
  if (out.numel() > 0) {
    C10_CUDA_CHECK(cuda::perturb_batch(
        out.data_ptr(), x.const_data_ptr(), binding::dtype_of(x, "x"), x.numel(),
        index.data_ptr<int64_t>(), delta.data_ptr<double>(), index.numel(), current_stream()));
  }
  return out;
}

}  // namespace
}  // namespace cocd

TORCH_LIBRARY_IMPL(cocd_cuda, CUDA, m) {
  m.impl("plan_", &cocd::plan_cuda);
  m.impl("advance_", &cocd::advance_cuda);
  m.impl("finite_difference_", &cocd::finite_difference_cuda);
  m.impl("dense_update_", &cocd::dense_update_cuda);
  m.impl("fifo_update_", &cocd::fifo_update_cuda);
  m.impl("perturb_batch", &cocd::perturb_batch_cuda);
}

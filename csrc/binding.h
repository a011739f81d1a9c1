// Helpers shared by the CPU and CUDA torch bindings: argument checks and conversion
// from tensors to the torch-free kernel types.
#pragma once

#include <torch/library.h>

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/SmallVector.h>

#include "kernels/cocd_kernels.h"
#include "kernels/dtype.h"

namespace cocd {
namespace binding {

inline DType dtype_of(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kHalf:
      return kHalf;
    case at::kBFloat16:
      return kBFloat16;
    case at::kFloat:
      return kFloat;
    case at::kDouble:
      return kDouble;
    default:
      TORCH_CHECK_TYPE(false, what, " must be float16, bfloat16, float32 or float64, got ",
                       t.scalar_type());
  }
}

inline void check_on(const at::Tensor& t, const at::Tensor& ref, const char* what) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), what, " is on ", t.device(), " but must be on ",
                    ref.device());
}

inline void check_buffer(const at::Tensor& t, at::ScalarType dtype, int64_t numel,
                         const char* what) {
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, what, " must have dtype ", dtype, ", got ",
                    t.scalar_type());
  TORCH_CHECK_VALUE(t.is_contiguous(), what, " must be contiguous");
  TORCH_CHECK_VALUE(numel < 0 || t.numel() == numel, what, " must have ", numel, " elements, got ",
                    t.numel());
}

inline const ParamRef* table_of(const at::Tensor& table) {
  TORCH_CHECK_VALUE(table.scalar_type() == at::kLong && table.dim() == 2 && table.size(1) == 4 &&
                        table.is_contiguous(),
                    "the parameter table must be a contiguous int64 [P, 4] tensor");
  return reinterpret_cast<const ParamRef*>(table.data_ptr<int64_t>());
}

inline Slot* slots_of(const at::Tensor& slots) {
  TORCH_CHECK_VALUE(slots.scalar_type() == at::kLong && slots.dim() == 2 && slots.size(1) == 6 &&
                        slots.is_contiguous(),
                    "the block slots must be a contiguous int64 [B, 6] tensor");
  return reinterpret_cast<Slot*>(slots.data_ptr<int64_t>());
}

// The step counters {c, head, t}: an int64 [3] tensor on the op's device. The ops read
// the block pointer c and the ring head from it (on the device, for CUDA), so a step
// captured in a CUDA graph follows the counters from replay to replay.
inline const int64_t* counters_of(const at::Tensor& counters, const at::Tensor& ref) {
  check_buffer(counters, at::kLong, 3, "counters");
  check_on(counters, ref, "counters");
  return counters.const_data_ptr<int64_t>();
}

// The CPU ops read the counters on the host; out-of-range values would index out of
// bounds, so they are checked there (the engine never produces them).
inline int64_t host_counter(const at::Tensor& counters, int index, int64_t bound,
                            const char* what) {
  const int64_t value = counters.const_data_ptr<int64_t>()[index];
  TORCH_CHECK_VALUE(value >= 0 && value < bound, what, " = ", value, " is outside [0, ", bound,
                    ")");
  return value;
}

// The param groups' hyperparameters: a contiguous float64 [G, 4] tensor of HyperRows
// on the op's device, read by the kernels (on the device, for CUDA).
inline const HyperRow* hyper_of(const at::Tensor& hyper, const at::Tensor& ref) {
  TORCH_CHECK_VALUE(hyper.scalar_type() == at::kDouble && hyper.dim() == 2 && hyper.size(1) == 4 &&
                        hyper.size(0) >= 1 && hyper.is_contiguous(),
                    "the hyperparameters must be a contiguous float64 [G, 4] tensor with G >= 1, "
                    "got ",
                    hyper.scalar_type(), " ", hyper.sizes());
  check_on(hyper, ref, "the hyperparameters");
  return reinterpret_cast<const HyperRow*>(hyper.const_data_ptr<double>());
}

// CPU only (the table is host memory there): every row's group has a row in `hyper`.
inline void check_groups_cpu(const at::Tensor& table, const at::Tensor& hyper) {
  const ParamRef* rows = table_of(table);
  for (int64_t p = 0; p < table.size(0); ++p) {
    const int64_t group = param_group(rows[p]);
    TORCH_CHECK_VALUE(group >= 0 && group < hyper.size(0), "parameter table row ", p,
                      " names param group ", group, ", but the hyperparameters have ",
                      hyper.size(0), " rows");
  }
}

// CPU only: the table's rows with each parameter's address taken from `params`, the
// tensors the op declares it writes, after checking that the rows describe them.
inline c10::SmallVector<ParamRef, 16> rows_for(at::TensorList params, const at::Tensor& table,
                                               const at::Tensor& hyper) {
  check_groups_cpu(table, hyper);
  const ParamRef* rows = table_of(table);
  c10::SmallVector<ParamRef, 16> out(rows, rows + table.size(0));
  int64_t start = 0;
  for (size_t p = 0; p < params.size(); ++p) {
    const at::Tensor& x = params[p];
    ParamRef& r = out[p];
    TORCH_CHECK_VALUE(
        r.numel == x.numel() && r.start == start && param_dtype(r) == dtype_of(x, "a parameter"),
        "parameter table row ", p, " does not describe parameter ", p,
        " (its size, dtype or first coordinate differ); rebuild the table");
    r.ptr = reinterpret_cast<int64_t>(x.data_ptr());
    start += r.numel;
  }
  return out;
}

// The loss tensor a closure returned, checked like the Python path checks it.
inline at::Tensor checked_loss(const at::Tensor& loss, const at::Tensor& losses) {
  TORCH_CHECK_VALUE(loss.numel() == 1,
                    "the closure must return a scalar loss, got a tensor of shape ", loss.sizes(),
                    "; reduce it (e.g. .mean()) inside the closure");
  TORCH_CHECK_TYPE(!loss.is_complex(), "the closure returned a complex loss (", loss.scalar_type(),
                   "); return a real one");
  check_on(loss, losses, "the loss");
  switch (loss.scalar_type()) {
    case at::kHalf:
    case at::kBFloat16:
    case at::kFloat:
    case at::kDouble:
      return loss;
    default:
      return loss.to(at::kDouble);  // integer or bool losses: rare, widened once
  }
}

// Kernels write through raw pointers; tell autograd's version counter about it.
inline void bump(const at::Tensor& t) {
  if (!t.is_inference()) t.unsafeGetTensorImpl()->bump_version();
}

// Parameters must be contiguous, on the buffer's device.
inline void check_params(at::TensorList params, const at::Tensor& ref) {
  for (const auto& p : params) {
    check_on(p, ref, "a parameter");
    TORCH_CHECK_VALUE(p.is_contiguous(), "the native kernels need contiguous parameters");
    dtype_of(p, "a parameter");
  }
}

// Argument checks of the ops, shared so that every device checks the same things.
inline void check_finite_difference(const at::Tensor& g, const at::Tensor& loss_out,
                                    const at::Tensor& bad, const at::Tensor& losses,
                                    const at::Tensor& slots, bool central) {
  const int64_t B = slots.size(0);
  check_buffer(losses, at::kDouble, central ? 2 * B : B + 1, "losses");
  TORCH_CHECK_VALUE(g.scalar_type() == at::kFloat || g.scalar_type() == at::kDouble,
                    "g must be float32 or float64, got ", g.scalar_type());
  check_buffer(g, g.scalar_type(), B, "g");
  check_buffer(loss_out, g.scalar_type(), 1, "loss_out");
  check_buffer(bad, at::kInt, 1, "bad");
}

inline void check_dense_update(at::TensorList params, const at::Tensor& buffer, const at::Tensor& g,
                               const at::Tensor& table, int64_t n) {
  TORCH_CHECK_VALUE(buffer.scalar_type() == at::kFloat || buffer.scalar_type() == at::kDouble,
                    "buffer must be float32 or float64, got ", buffer.scalar_type());
  check_buffer(buffer, buffer.scalar_type(), n, "buffer");
  check_buffer(g, buffer.scalar_type(), -1, "g");
  check_params(params, buffer);
  check_on(table, buffer, "the parameter table");
  TORCH_CHECK_VALUE(table.size(0) == static_cast<int64_t>(params.size()),
                    "the parameter table has ", table.size(0), " rows for ", params.size(),
                    " parameters");
  int64_t total = 0;
  for (const auto& p : params) total += p.numel();
  TORCH_CHECK_VALUE(total == n, "the parameters have ", total, " elements in all, not n = ", n);
}

inline void check_fifo_update(at::TensorList params, const at::Tensor& coords,
                              const at::Tensor& vals, const at::Tensor& g,
                              const at::Tensor& table) {
  TORCH_CHECK_VALUE(vals.scalar_type() == at::kFloat || vals.scalar_type() == at::kDouble,
                    "vals must be float32 or float64, got ", vals.scalar_type());
  check_buffer(vals, vals.scalar_type(), -1, "vals");
  TORCH_CHECK_VALUE(coords.scalar_type() == at::kInt || coords.scalar_type() == at::kLong,
                    "coords must be int32 or int64, got ", coords.scalar_type());
  check_buffer(coords, coords.scalar_type(), vals.numel(), "coords");
  check_buffer(g, vals.scalar_type(), -1, "g");
  check_params(params, vals);
  check_on(table, vals, "the parameter table");
  TORCH_CHECK_VALUE(table.size(0) == static_cast<int64_t>(params.size()),
                    "the parameter table has ", table.size(0), " rows for ", params.size(),
                    " parameters");
}

}  // namespace binding
}  // namespace cocd

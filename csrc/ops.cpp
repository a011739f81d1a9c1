// The cocd_cuda torch ops: every schema, and the CPU implementations.
//
// Importing cocd_cuda._C registers these ops; there is no pybind11 module (the empty
// PyInit__C below), so every op is visible to torch.compile and opcheck. The CUDA
// implementations live in ops_cuda.cpp and only add to this library.
//
// The parameters are addressed through a table of raw pointers (ParamRef rows) rather
// than passed as a tensor list to the per-evaluation ops: advance_ runs once per
// objective evaluation and must cost about as much as one small op call, whatever the
// number of parameter tensors. It always leaves the parameters as it found them once
// a step's evaluations end, so only the ops that change them for good (dense_update_,
// fifo_update_) take them as mutable arguments and bump their version counters.
#include <Python.h>

#include <ATen/ops/empty.h>

#include "binding.h"
#include "kernels/cocd_kernels.h"

extern "C" {
// An empty module: importing cocd_cuda._C only loads this library, whose static
// initialisers register the ops (the extension-cpp pattern, Python limited API).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace cocd {
namespace {

using binding::bump;
using binding::check_buffer;
using binding::check_on;

void plan_cpu(at::Tensor& slots, const at::Tensor& table, const at::Tensor& counters, int64_t n,
              at::ArrayRef<double> eps, bool central) {
  check_on(table, slots, "the parameter table");
  binding::counters_of(counters, slots);
  const int64_t c = binding::host_counter(counters, 0, n, "the block pointer c");
  const GroupParams groups = binding::group_params({}, {}, eps, {});
  cpu::plan(binding::slots_of(slots), slots.size(0), binding::table_of(table), table.size(0), c, n,
            groups, central);
}

void advance_cpu(at::Tensor& losses, const at::Tensor& slots, const at::Tensor& table,
                 const std::optional<at::Tensor>& loss, int64_t src, int64_t dst, bool central) {
  check_buffer(losses, at::kDouble, -1, "losses");
  at::Tensor value;
  if (loss.has_value()) value = binding::checked_loss(*loss, losses);
  cpu::advance(losses.data_ptr<double>(), losses.numel(), binding::slots_of(slots),
               binding::table_of(table), value.defined() ? value.const_data_ptr() : nullptr,
               value.defined() ? binding::dtype_of(value, "the loss") : kDouble, src, dst, central);
}

void finite_difference_cpu(at::Tensor& g, at::Tensor& loss_out, at::Tensor& bad,
                           const at::Tensor& losses, const at::Tensor& slots, bool central,
                           bool zero_nonfinite) {
  const int64_t B = slots.size(0);
  binding::check_finite_difference(g, loss_out, bad, losses, slots, central);
  const Slot* s = binding::slots_of(slots);
  if (g.scalar_type() == at::kDouble) {
    cpu::finite_difference<double>(g.data_ptr<double>(), loss_out.data_ptr<double>(),
                                   bad.data_ptr<int32_t>(), losses.data_ptr<double>(), s, B,
                                   central, zero_nonfinite);
  } else {
    cpu::finite_difference<float>(g.data_ptr<float>(), loss_out.data_ptr<float>(),
                                  bad.data_ptr<int32_t>(), losses.data_ptr<double>(), s, B, central,
                                  zero_nonfinite);
  }
}

template <typename acc_t>
void dense_group(at::TensorList params, at::Tensor& buffer, const at::Tensor& g, int64_t first,
                 int64_t c, int64_t n, double lr, double wd, double momentum) {
  acc_t* v = buffer.data_ptr<acc_t>();
  const acc_t* gp = g.data_ptr<acc_t>();
  int64_t start = first;
  for (const auto& p : params) {
    const int64_t len = p.numel();
    cpu::dense_update<acc_t>(p.data_ptr(), binding::dtype_of(p, "a parameter"), v + start, len,
                             start, gp, c, n, g.numel(), lr, wd, momentum);
    start += len;
  }
}

void dense_update_cpu(at::TensorList params, at::Tensor& buffer, const at::Tensor& g, int64_t first,
                      const at::Tensor& counters, int64_t n, double lr, double weight_decay,
                      double momentum) {
  binding::check_dense_update(params, buffer, g, first, n);
  binding::counters_of(counters, buffer);
  const int64_t c = binding::host_counter(counters, 0, n, "the block pointer c");
  if (buffer.scalar_type() == at::kDouble) {
    dense_group<double>(params, buffer, g, first, c, n, lr, weight_decay, momentum);
  } else {
    dense_group<float>(params, buffer, g, first, c, n, lr, weight_decay, momentum);
  }
  for (const auto& p : params) bump(p);
  bump(buffer);
}

void fifo_update_cpu(at::TensorList params, at::Tensor& coords, at::Tensor& vals,
                     const at::Tensor& g, const at::Tensor& table, const at::Tensor& counters,
                     int64_t n, at::ArrayRef<double> lr, at::ArrayRef<double> weight_decay,
                     at::ArrayRef<double> momentum) {
  const int64_t m = vals.numel();
  binding::check_fifo_update(params, coords, vals, g, table);
  binding::counters_of(counters, vals);
  const int64_t c = binding::host_counter(counters, 0, n, "the block pointer c");
  const int64_t head = binding::host_counter(counters, 1, m, "the ring head");
  const GroupParams groups = binding::group_params(lr, weight_decay, {}, momentum);
  const ParamRef* t = binding::table_of(table);
  if (vals.scalar_type() == at::kDouble) {
    cpu::fifo_update<double, int64_t>(coords.data_ptr<int64_t>(), vals.data_ptr<double>(), m,
                                      g.data_ptr<double>(), g.numel(), t, table.size(0), head, c, n,
                                      groups);
  } else {
    cpu::fifo_update<float, int64_t>(coords.data_ptr<int64_t>(), vals.data_ptr<float>(), m,
                                     g.data_ptr<float>(), g.numel(), t, table.size(0), head, c, n,
                                     groups);
  }
  for (const auto& p : params) bump(p);
  bump(coords);
  bump(vals);
}

at::Tensor perturb_batch_cpu(const at::Tensor& x, const at::Tensor& index,
                             const at::Tensor& delta) {
  TORCH_CHECK_VALUE(x.is_contiguous(), "x must be contiguous");
  check_buffer(index, at::kLong, -1, "index");
  check_buffer(delta, at::kDouble, index.numel(), "delta");
  const int64_t K = index.numel(), numel = x.numel();
  const int64_t* idx = index.data_ptr<int64_t>();
  for (int64_t k = 0; k < K; ++k) {
    TORCH_CHECK_VALUE(idx[k] >= 0 && idx[k] < numel, "index[", k, "] = ", idx[k],
                      " is out of range for ", numel, " elements");
  }
  std::vector<int64_t> shape{K};
  shape.insert(shape.end(), x.sizes().begin(), x.sizes().end());
  at::Tensor out = at::empty(shape, x.options());
  cpu::perturb_batch(out.data_ptr(), x.const_data_ptr(), binding::dtype_of(x, "x"), numel, idx,
                     delta.data_ptr<double>(), K);
  return out;
}

}  // namespace
}  // namespace cocd

TORCH_LIBRARY(cocd_cuda, m) {
  // Per step: plan_ once, advance_ once per evaluation (plus once at the start),
  // finite_difference_ once, then dense_update_ once per param group or fifo_update_.
  // counters is the int64 [3] tensor {c, head, t} on the ops' device: the block
  // pointer and ring head are read from it, never passed by value, so that a step
  // captured in a CUDA graph stays valid as they advance.
  m.def(
      "plan_(Tensor(a!) slots, Tensor table, Tensor counters, int n, float[] eps, bool central) "
      "-> ()");
  m.def(
      "advance_(Tensor(a!) losses, Tensor slots, Tensor table, Tensor? loss, int src, int dst, "
      "bool central) -> ()");
  m.def(
      "finite_difference_(Tensor(a!) g, Tensor(b!) loss_out, Tensor(c!) bad, Tensor losses, "
      "Tensor slots, bool central, bool zero_nonfinite) -> ()");
  m.def(
      "dense_update_(Tensor(a!)[] params, Tensor(b!) buffer, Tensor g, int first, "
      "Tensor counters, int n, float lr, float weight_decay, float momentum) -> ()");
  m.def(
      "fifo_update_(Tensor(a!)[] params, Tensor(b!) coords, Tensor(c!) vals, Tensor g, "
      "Tensor table, Tensor counters, int n, float[] lr, float[] weight_decay, "
      "float[] momentum) -> ()");
  m.def("perturb_batch(Tensor x, Tensor index, Tensor delta) -> Tensor");
}

TORCH_LIBRARY_IMPL(cocd_cuda, CPU, m) {
  m.impl("plan_", &cocd::plan_cpu);
  m.impl("advance_", &cocd::advance_cpu);
  m.impl("finite_difference_", &cocd::finite_difference_cpu);
  m.impl("dense_update_", &cocd::dense_update_cpu);
  m.impl("fifo_update_", &cocd::fifo_update_cpu);
  m.impl("perturb_batch", &cocd::perturb_batch_cpu);
}

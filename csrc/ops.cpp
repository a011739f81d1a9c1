// The cocd_cuda torch ops: every schema, and the CPU implementations.
//
// Importing cocd_cuda._C registers these ops; there is no pybind11 module (the empty
// PyInit__C below), so every op is visible to torch.compile and opcheck. The CUDA
// implementations live in ops_cuda.cpp and only add to this library.
//
// Every tensor an op writes is declared mutable in its schema. The kernels address the
// parameters through a table of raw pointers (ParamRef rows): on CUDA it is device
// memory, built by the engine whenever a parameter's storage moves. The per-evaluation
// op advance_ writes through it without converting the parameters to kernel arguments;
// it still takes them, as a mutable list, so that its writes are visible to torch
// (schemas, version counters). The CPU update ops write the tensors they are given.
#include <Python.h>

#include <cstddef>
#include <string>
#include <tuple>
#include <vector>

#include "binding.h"
#include "kernels/cocd_kernels.h"
#include "kernels/slot_ops.h"

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

// The kernels' ABI, so that Python builds tables and reads rows without restating it:
// dtype codes, the row widths of the parameter table, the slots and the
// hyperparameters, the fields' positions in their rows, and kSumLanes.
std::tuple<std::vector<std::string>, std::vector<int64_t>> abi() {
  constexpr int64_t w = sizeof(int64_t);
  return {{"dtype.float16", "dtype.bfloat16", "dtype.float32", "dtype.float64", "param_row",
           "param_row.ptr", "param_row.start", "param_row.numel", "param_row.meta",
           "param_row.group_shift", "slot_row", "hyper_row", "hyper_row.lr",
           "hyper_row.weight_decay", "hyper_row.eps", "hyper_row.momentum", "sum_lanes"},
          {kHalf, kBFloat16, kFloat, kDouble, sizeof(ParamRef) / w, offsetof(ParamRef, ptr) / w,
           offsetof(ParamRef, start) / w, offsetof(ParamRef, numel) / w,
           offsetof(ParamRef, meta) / w, kGroupShift, sizeof(Slot) / w, sizeof(HyperRow) / w,
           offsetof(HyperRow, lr) / w, offsetof(HyperRow, weight_decay) / w,
           offsetof(HyperRow, eps) / w, offsetof(HyperRow, momentum) / w, kSumLanes}};
}

void plan_cpu(at::Tensor& slots, const at::Tensor& table, const at::Tensor& hyper,
              const at::Tensor& counters, int64_t n, bool central) {
  check_on(table, slots, "the parameter table");
  const HyperRow* h = binding::hyper_of(hyper, slots);
  binding::check_groups_cpu(table, hyper);
  binding::counters_of(counters, slots);
  const int64_t c = binding::host_counter(counters, 0, n, "the block pointer c");
  cpu::plan(binding::slots_of(slots), slots.size(0), binding::table_of(table), table.size(0), c, n,
            h, central);
  bump(slots);
}

// The parameters' addresses from the tensors advance_ was given (the table's rows give
// their dtypes), so that it writes exactly what its schema declares.
struct TensorBases {
  at::TensorList params;
  void* operator()(int64_t p) const { return params[p].data_ptr(); }
};

void advance_cpu(at::Tensor& losses, at::TensorList params, const at::Tensor& slots,
                 const at::Tensor& table, const std::optional<at::Tensor>& loss, int64_t src,
                 int64_t dst, bool central) {
  check_buffer(losses, at::kDouble, -1, "losses");
  TORCH_CHECK_VALUE(table.size(0) == static_cast<int64_t>(params.size()),
                    "the parameter table has ", table.size(0), " rows for ", params.size(),
                    " parameters");
  at::Tensor value;
  if (loss.has_value()) value = binding::checked_loss(*loss, losses);
  const Slot* s = binding::slots_of(slots);
  const int64_t n_eval = losses.numel();
  advance_eval(losses.data_ptr<double>(), n_eval, s, binding::table_of(table), TensorBases{params},
               value.defined() ? value.const_data_ptr() : nullptr,
               value.defined() ? binding::dtype_of(value, "the loss") : kDouble, src, dst, central);
  // The parameters whose elements were written: those of the two evaluations' slots.
  for (const int64_t k : {src, dst}) {
    const int64_t j = eval_slot(k, n_eval, central);
    if (j >= 0) bump(params[s[j].param]);
  }
  bump(losses);
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
  bump(g);
  bump(loss_out);
  bump(bad);
}

void dense_update_cpu(at::TensorList params, at::Tensor& buffer, const at::Tensor& g,
                      const at::Tensor& table, const at::Tensor& hyper, const at::Tensor& counters,
                      int64_t n) {
  binding::check_dense_update(params, buffer, g, table, n);
  const HyperRow* h = binding::hyper_of(hyper, buffer);
  const auto rows = binding::rows_for(params, table, hyper);
  binding::counters_of(counters, buffer);
  const int64_t c = binding::host_counter(counters, 0, n, "the block pointer c");
  const ParamRef* t = rows.data();
  const int64_t P = table.size(0);
  if (buffer.scalar_type() == at::kDouble) {
    cpu::dense_update<double>(t, P, buffer.data_ptr<double>(), g.data_ptr<double>(), c, n,
                              g.numel(), h);
  } else {
    cpu::dense_update<float>(t, P, buffer.data_ptr<float>(), g.data_ptr<float>(), c, n, g.numel(),
                             h);
  }
  for (const auto& p : params) bump(p);
  bump(buffer);
}

void fifo_update_cpu(at::TensorList params, at::Tensor& coords, at::Tensor& vals,
                     const at::Tensor& g, const at::Tensor& table, const at::Tensor& hyper,
                     const at::Tensor& counters, int64_t n) {
  const int64_t m = vals.numel();
  binding::check_fifo_update(params, coords, vals, g, table);
  const HyperRow* h = binding::hyper_of(hyper, vals);
  const auto rows = binding::rows_for(params, table, hyper);
  binding::counters_of(counters, vals);
  const int64_t c = binding::host_counter(counters, 0, n, "the block pointer c");
  const int64_t head = binding::host_counter(counters, 1, m, "the ring head");
  const ParamRef* t = rows.data();
  // Ring coordinates are int32 when n < 2^31 (the engine's choice), else int64.
  auto run = [&](auto acc_zero, auto coord_zero) {
    using acc_t = decltype(acc_zero);
    using coord_t = decltype(coord_zero);
    cpu::fifo_update<acc_t, coord_t>(coords.data_ptr<coord_t>(), vals.data_ptr<acc_t>(), m,
                                     g.data_ptr<acc_t>(), g.numel(), t, table.size(0), head, c, n,
                                     h);
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

TORCH_LIBRARY(cocd_cuda, m) {
  // Per step: plan_ once, advance_ once per evaluation (plus once at the start),
  // finite_difference_ once, then dense_update_ (all param groups at once) or
  // fifo_update_. counters is the int64 [3] tensor {c, head, t} and hyper the float64
  // [G, 4] tensor of the groups' (lr, weight_decay, eps, momentum), both on the ops'
  // device: the kernels read them there, never by value, so that a step captured in a
  // CUDA graph follows them as they change.
  m.def(
      "plan_(Tensor(a!) slots, Tensor table, Tensor hyper, Tensor counters, int n, bool central) "
      "-> ()");
  m.def(
      "advance_(Tensor(a!) losses, Tensor(b!)[] params, Tensor slots, Tensor table, Tensor? loss, "
      "int src, int dst, bool central) -> ()");
  m.def(
      "finite_difference_(Tensor(a!) g, Tensor(b!) loss_out, Tensor(c!) bad, Tensor losses, "
      "Tensor slots, bool central, bool zero_nonfinite) -> ()");
  m.def(
      "dense_update_(Tensor(a!)[] params, Tensor(b!) buffer, Tensor g, Tensor table, "
      "Tensor hyper, Tensor counters, int n) -> ()");
  m.def(
      "fifo_update_(Tensor(a!)[] params, Tensor(b!) coords, Tensor(c!) vals, Tensor g, "
      "Tensor table, Tensor hyper, Tensor counters, int n) -> ()");
  m.def("abi() -> (str[] names, int[] values)", &cocd::abi);
}

TORCH_LIBRARY_IMPL(cocd_cuda, CPU, m) {
  m.impl("plan_", &cocd::plan_cpu);
  m.impl("advance_", &cocd::advance_cpu);
  m.impl("finite_difference_", &cocd::finite_difference_cpu);
  m.impl("dense_update_", &cocd::dense_update_cpu);
  m.impl("fifo_update_", &cocd::fifo_update_cpu);
}

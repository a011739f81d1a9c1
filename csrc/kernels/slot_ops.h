// The per-coordinate work of a step, written once for host and device: the CPU
// kernels call these in loops, the CUDA kernels once per thread.
#pragma once

#include <cmath>
#include <cstdint>

#include "cocd_kernels.h"
#include "dtype.h"

namespace cocd {

// Products and differences rounded on their own, never fused into a multiply-add
// (nvcc fuses by default; host code is built as ISO C++, which does not).
COCD_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
COCD_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
COCD_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
COCD_HD double sub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
COCD_HD double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
template <typename T>
COCD_HD bool finite(T a) {
#if defined(__CUDA_ARCH__)
  return isfinite(a);
#else
  return std::isfinite(a);
#endif
}

// The descend of one coordinate: x*decay - lr*v, where decay = 1 - lr*wd
// (decay_factor) multiplies only when the group has weight decay. Each product is
// rounded on its own, as the reference rounds it.
template <typename acc_t>
COCD_HD acc_t decay_factor(double lr, double wd) {
  return static_cast<acc_t>(sub_rn(1.0, mul_rn(lr, wd)));
}
template <typename acc_t>
COCD_HD acc_t descend(acc_t x, acc_t v, acc_t lr, acc_t decay, bool has_wd) {
  return sub_rn(has_wd ? mul_rn(x, decay) : x, mul_rn(lr, v));
}

// Slot j's finite difference from the step's losses: f+ and f- (forward: f- = f(x)),
// the estimate (f+ - f-)/h in acc_t (0 when h = 0), and whether all three are finite.
template <typename acc_t>
struct Estimate {
  double fp, fm;
  acc_t g;
  bool finite;
};
template <typename acc_t>
COCD_HD Estimate<acc_t> fd_estimate(const double* losses, const Slot* slots, int64_t j,
                                    bool central) {
  Estimate<acc_t> e;
  e.fp = losses[eval_index(j, false, central)];
  e.fm = central ? losses[eval_index(j, true, central)] : losses[0];  // forward: f(x)
  const double h = slots[j].h;
  e.g = h != 0.0 ? static_cast<acc_t>(div_rn(sub_rn(e.fp, e.fm), h)) : acc_t(0);
  e.finite = finite(e.g) && finite(e.fp) && finite(e.fm);
  return e;
}

// Slot j of the block: coordinate (c + j) mod n, its saved and perturbed bits.
COCD_HD void plan_slot(Slot* slots, int64_t j, const ParamRef* table, int64_t P, int64_t c,
                       int64_t n, const HyperRow* hyper, bool central) {
  const int64_t i = (c + j) % n;
  const int64_t p = find_param(table, P, i);
  const ParamRef r = table[p];
  const DType dt = param_dtype(r);
  const double eps = hyper[param_group(r)].eps;
  Slot s;
  s.param = p;
  s.offset = i - r.start;
  s.saved = read_bits(reinterpret_cast<const void*>(r.ptr), dt, s.offset);
  s.plus = perturbed_bits(s.saved, dt, eps);
  s.minus = central ? perturbed_bits(s.saved, dt, -eps) : s.saved;
  s.h = sub_rn(bits_value(s.plus, dt), bits_value(s.minus, dt));
  slots[j] = s;
}

// Where parameter p's elements are: by default its table row's address; the CPU torch
// op passes the tensors it was given instead (the ones its schema says it writes).
struct TableBases {
  const ParamRef* table;
  COCD_HD void* operator()(int64_t p) const { return reinterpret_cast<void*>(table[p].ptr); }
};

// Finish evaluation `from` (store its loss, restore its coordinate unless `to` perturbs
// the same one) and start evaluation `to`.
template <typename Bases>
COCD_HD void advance_eval(double* losses, int64_t n_eval, const Slot* slots, const ParamRef* table,
                          const Bases& base, const void* loss, DType loss_dtype, int64_t from,
                          int64_t to, bool central) {
  if (loss != nullptr && from >= 0 && from < n_eval) {
    losses[from] = load_as<double>(loss, loss_dtype, 0);
  }
  const int64_t s_from = eval_slot(from, n_eval, central);
  const int64_t s_to = eval_slot(to, n_eval, central);
  if (s_from >= 0 && s_from != s_to) {
    const Slot s = slots[s_from];
    write_bits(base(s.param), param_dtype(table[s.param]), s.offset, s.saved);
  }
  if (s_to >= 0) {
    const Slot s = slots[s_to];
    const bool minus = eval_minus(to, central);
    write_bits(base(s.param), param_dtype(table[s.param]), s.offset, minus ? s.minus : s.plus);
  }
}
COCD_HD void advance_eval(double* losses, int64_t n_eval, const Slot* slots, const ParamRef* table,
                          const void* loss, DType loss_dtype, int64_t from, int64_t to,
                          bool central) {
  advance_eval(losses, n_eval, slots, table, TableBases{table}, loss, loss_dtype, from, to,
               central);
}

// Ring slot s of a FIFO step: decay (or take the fresh estimate), then descend its
// coordinate. Ring entries hold distinct coordinates, so slots may run in parallel.
template <typename acc_t, typename coord_t>
COCD_HD void fifo_entry(int64_t s, coord_t* coords, acc_t* vals, int64_t m, const acc_t* g,
                        int64_t B, const ParamRef* table, int64_t P, int64_t head, int64_t c,
                        int64_t n, const HyperRow* hyper) {
  const int64_t j = (s - head + m) % m;  // position in push order; < B: fresh
  int64_t i;
  acc_t v;
  if (j < B) {
    i = (c + j) % n;
    v = g[j];
    coords[s] = static_cast<coord_t>(i);
  } else {
    i = coords[s];
    v = vals[s];
  }
  const ParamRef r = table[find_param(table, P, i)];
  const HyperRow h = hyper[param_group(r)];
  if (j >= B && h.momentum != 1.0) v = mul_rn(v, static_cast<acc_t>(h.momentum));
  vals[s] = v;
  const DType dt = param_dtype(r);
  void* base = reinterpret_cast<void*>(r.ptr);
  const acc_t xi = load_as<acc_t>(base, dt, i - r.start);
  store_as<acc_t>(base, dt, i - r.start,
                  descend(xi, v, static_cast<acc_t>(h.lr),
                          decay_factor<acc_t>(h.lr, h.weight_decay), h.weight_decay != 0.0));
}

}  // namespace cocd

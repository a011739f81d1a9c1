// CoCD CPU kernels (no torch). Hot loops are OpenMP-parallel and branch-free so the
// compiler vectorises them; the per-evaluation kernels touch O(1) elements.
#include <algorithm>
#include <cmath>

#include "cocd_kernels.h"
#include "dtype.h"
#include "slot_ops.h"

namespace cocd {
namespace cpu {
namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 15;

// x <- descend(x, v) over [lo, hi), with v <- momentum*v first when kDecay and the
// weight-decay product only when kWd: the branches resolved at compile time, so the
// loop vectorises.
template <typename codec, typename acc_t, bool kDecay, bool kWd>
void descend_range(typename codec::storage* x, acc_t* v, int64_t lo, int64_t hi, acc_t decay,
                   acc_t lr, acc_t momentum) {
#pragma omp parallel for simd schedule(static) if (hi - lo > kParallelGrain)
  for (int64_t i = lo; i < hi; ++i) {
    acc_t vi = v[i];
    if (kDecay) {
      vi = mul_rn(vi, momentum);
      v[i] = vi;
    }
    x[i] = codec::template store<acc_t>(
        descend(codec::template load<acc_t>(x[i]), vi, lr, decay, kWd));
  }
}

// Fresh coordinates: v <- g (not decayed in the step that made them), then descend.
template <typename codec, typename acc_t, bool kWd>
void refresh_range(typename codec::storage* x, acc_t* v, int64_t lo, int64_t hi, const acc_t* g,
                   acc_t decay, acc_t lr) {
  for (int64_t i = lo; i < hi; ++i) {
    const acc_t vi = g[i - lo];
    v[i] = vi;
    x[i] = codec::template store<acc_t>(
        descend(codec::template load<acc_t>(x[i]), vi, lr, decay, kWd));
  }
}

// One parameter: coordinates [first, first+len), its buffer slice v.
template <typename codec, typename acc_t, bool kWd>
void dense_typed(void* xp, acc_t* v, int64_t len, int64_t first, const acc_t* g, int64_t c,
                 int64_t n, int64_t B, const HyperRow& h) {
  auto* x = static_cast<typename codec::storage*>(xp);
  const acc_t decay = decay_factor<acc_t>(h.lr, h.weight_decay);
  const acc_t a_lr = static_cast<acc_t>(h.lr);
  const acc_t a_m = static_cast<acc_t>(h.momentum);
  // The fresh block is [c, c+B) mod n: at most two intervals of global coordinates,
  // each with its offset into g. Everything else in [first, first+len) is stale.
  struct Interval {
    int64_t lo, hi, g0;
  };
  Interval fresh[2] = {{c, std::min(c + B, n), 0}, {0, std::max<int64_t>(c + B - n, 0), n - c}};
  if (fresh[0].lo > fresh[1].lo) std::swap(fresh[0], fresh[1]);
  int64_t pos = first;
  const int64_t end = first + len;
  auto stale = [&](int64_t lo, int64_t hi) {
    if (lo >= hi) return;
    if (h.momentum != 1.0) {
      descend_range<codec, acc_t, true, kWd>(x, v, lo - first, hi - first, decay, a_lr, a_m);
    } else {
      descend_range<codec, acc_t, false, kWd>(x, v, lo - first, hi - first, decay, a_lr, a_m);
    }
  };
  for (const Interval& f : fresh) {
    const int64_t lo = std::max(f.lo, first), hi = std::min(f.hi, end);
    if (lo >= hi) continue;
    stale(pos, lo);
    refresh_range<codec, acc_t, kWd>(x, v, lo - first, hi - first, g + f.g0 + (lo - f.lo), decay,
                                     a_lr);
    pos = hi;
  }
  stale(pos, end);
}

template <typename codec, typename acc_t>
void dense_dispatch_wd(void* x, acc_t* v, int64_t len, int64_t first, const acc_t* g, int64_t c,
                       int64_t n, int64_t B, const HyperRow& h) {
  if (h.weight_decay != 0.0) {
    dense_typed<codec, acc_t, true>(x, v, len, first, g, c, n, B, h);
  } else {
    dense_typed<codec, acc_t, false>(x, v, len, first, g, c, n, B, h);
  }
}

}  // namespace

void plan(Slot* slots, int64_t B, const ParamRef* table, int64_t P, int64_t c, int64_t n,
          const HyperRow* hyper, bool central) {
  for (int64_t j = 0; j < B; ++j) plan_slot(slots, j, table, P, c, n, hyper, central);
}

void advance(double* losses, int64_t n_eval, const Slot* slots, const ParamRef* table,
             const void* loss, DType loss_dtype, int64_t from, int64_t to, bool central) {
  advance_eval(losses, n_eval, slots, table, loss, loss_dtype, from, to, central);
}

template <typename acc_t>
void finite_difference(acc_t* g, acc_t* loss_out, int32_t* bad, const double* losses,
                       const Slot* slots, int64_t B, bool central, bool zero_nonfinite) {
  int32_t n_bad = 0;
  double lanes[kSumLanes] = {};  // the summation order of cocd_kernels.h
  for (int64_t j = 0; j < B; ++j) {
    const Estimate<acc_t> e = fd_estimate<acc_t>(losses, slots, j, central);
    g[j] = e.finite || !zero_nonfinite ? e.g : acc_t(0);
    n_bad += e.finite ? 0 : 1;
    if (central) lanes[j % kSumLanes] += (e.fp + e.fm) / 2;
  }
  for (int s = kSumLanes / 2; s > 0; s /= 2) {
    for (int t = 0; t < s; ++t) lanes[t] += lanes[t + s];
  }
  *loss_out = static_cast<acc_t>(central ? lanes[0] / static_cast<double>(B) : losses[0]);
  *bad = n_bad;
}

template <typename acc_t>
void dense_update(const ParamRef* table, int64_t P, acc_t* v, const acc_t* g, int64_t c, int64_t n,
                  int64_t B, const HyperRow* hyper) {
  for (int64_t p = 0; p < P; ++p) {
    const ParamRef& r = table[p];
    if (r.numel == 0) continue;
    void* x = reinterpret_cast<void*>(r.ptr);
    acc_t* vp = v + r.start;
    const HyperRow& h = hyper[param_group(r)];
    switch (param_dtype(r)) {
      case kHalf:
        dense_dispatch_wd<Codec<HalfTag>, acc_t>(x, vp, r.numel, r.start, g, c, n, B, h);
        break;
      case kBFloat16:
        dense_dispatch_wd<Codec<BF16Tag>, acc_t>(x, vp, r.numel, r.start, g, c, n, B, h);
        break;
      case kFloat:
        dense_dispatch_wd<Codec<float>, acc_t>(x, vp, r.numel, r.start, g, c, n, B, h);
        break;
      default:
        dense_dispatch_wd<Codec<double>, acc_t>(x, vp, r.numel, r.start, g, c, n, B, h);
    }
  }
}

template <typename acc_t, typename coord_t>
void fifo_update(coord_t* coords, acc_t* vals, int64_t m, const acc_t* g, int64_t B,
                 const ParamRef* table, int64_t P, int64_t head, int64_t c, int64_t n,
                 const HyperRow* hyper) {
#pragma omp parallel for schedule(static) if (m > kParallelGrain)
  for (int64_t s = 0; s < m; ++s) {
    fifo_entry(s, coords, vals, m, g, B, table, P, head, c, n, hyper);
  }
}

template void finite_difference<float>(float*, float*, int32_t*, const double*, const Slot*,
                                       int64_t, bool, bool);
template void finite_difference<double>(double*, double*, int32_t*, const double*, const Slot*,
                                        int64_t, bool, bool);
template void dense_update<float>(const ParamRef*, int64_t, float*, const float*, int64_t, int64_t,
                                  int64_t, const HyperRow*);
template void dense_update<double>(const ParamRef*, int64_t, double*, const double*, int64_t,
                                   int64_t, int64_t, const HyperRow*);
#define COCD_FIFO(acc_t, coord_t)                                                                \
  template void fifo_update<acc_t, coord_t>(coord_t*, acc_t*, int64_t, const acc_t*, int64_t,    \
                                            const ParamRef*, int64_t, int64_t, int64_t, int64_t, \
                                            const HyperRow*);
COCD_FIFO(float, int64_t)
COCD_FIFO(double, int64_t)
COCD_FIFO(float, int32_t)
COCD_FIFO(double, int32_t)
#undef COCD_FIFO

}  // namespace cpu
}  // namespace cocd

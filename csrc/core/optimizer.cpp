// cocd::Optimizer on the torch-free CPU kernels of csrc/kernels, the same ones the
// PyTorch extension runs. This file owns the memory, validates the options and
// sequences a step exactly as cocd_cuda/native.py does; it holds no copy of the
// algorithm's arithmetic.
//
// All of an optimizer's memory is one block: the Impl followed by its arrays (see
// layout()), from std::malloc or from the caller (create in place). Error messages are
// fixed-size Text, so neither a step nor a failure allocates, and a build without
// exceptions or stdio (COCD_BARE_METAL) runs the same code.
#include "cocd/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>
#if !COCD_BARE_METAL
#include <cstdio>
#endif

#include "cocd_kernels.h"
#include "dtype.h"
#include "internal.h"
#include "slot_ops.h"
#include "text.h"

namespace cocd {
namespace {

using detail::str;
using detail::Text;

// State image layout (all integers little-endian):
//   0 magic "CoCD" | 4 u32 version | 8 u64 n | 16 u64 m | 24 u64 B | 32 u8 central |
//   33 u8 buffer dtype (2 float32, 3 float64) | 34 six zero bytes | 40 u64 c | 48 u64 t |
//   56 u64 head | 64 m buffer values | FIFO only: m u64 coordinates | u64 FNV-1a of all
//   preceding bytes.
constexpr unsigned char kMagic[4] = {'C', 'o', 'C', 'D'};
constexpr uint32_t kStateVersion = 1;
constexpr std::size_t kHeaderBytes = 64;
constexpr std::size_t kChecksumBytes = 8;
constexpr uint64_t kMaxSteps = uint64_t{1} << 62;  // as the Python engines: t never overflows
// The API's group limit: the groups' hyperparameter rows live inside the optimizer
// object (2 KB), so that changing them touches no other memory.
constexpr int32_t kMaxGroups = 64;

// A double as text: %.17g (round-trips); without stdio, 9 significant digits.
detail::Piece num(double v) {
  detail::Piece t{};
#if COCD_BARE_METAL
  char* p = t.text;
  auto put = [&p](const char* s) {
    while (*s != '\0') *p++ = *s++;
    *p = '\0';
  };
  if (std::isnan(v)) {
    put("nan");
    return t;
  }
  if (std::signbit(v)) put("-");
  v = std::fabs(v);
  if (std::isinf(v)) {
    put("inf");
    return t;
  }
  int e = 0;
  while (v >= 10.0) v /= 10.0, ++e;
  while (v != 0.0 && v < 1.0) v *= 10.0, --e;
  uint64_t d = static_cast<uint64_t>(v * 1e8 + 0.5);  // 9 digits d.dddddddd
  if (d >= 1000000000u) d /= 10, ++e;
  char out[12];
  int len = 0;
  for (uint64_t p = 100000000u; p > 0; p /= 10) out[len++] = static_cast<char>('0' + d / p % 10);
  while (len > 1 && out[len - 1] == '0') --len;  // trailing zeros
  out[len] = '\0';
  const char first[2] = {out[0], '\0'};
  put(first);
  if (len > 1) put("."), put(out + 1);
  if (e != 0) put("e"), put(str(e).c_str());
  return t;
#else
  std::snprintf(t.text, sizeof t.text, "%.17g", v);
  return t;
#endif
}

// One way out for every error: an exception, or (built without exceptions) the C API's
// error report. The codes are cocd_status values.
enum Error : int { kInvalidArgument = 1, kNonFinite = 3, kBadState = 4, kOutOfMemory = 5 };

[[noreturn]] void raise(Error kind, const Text& message) {
#if defined(__cpp_exceptions)
  switch (kind) {
    case kNonFinite:
      throw NonFiniteError(message.c_str());
    case kBadState:
      throw StateError(message.c_str());
    case kOutOfMemory:
      throw std::bad_alloc();
    default:
      throw std::invalid_argument(message.c_str());
  }
#else
  detail::report_error(kind, message.c_str());
#endif
}

[[noreturn]] void invalid(const Text& message) { raise(kInvalidArgument, message); }

// Messages are built out of line where a frame is on the step's path, so that the step
// does not carry a Text on its stack.
[[noreturn]] [[gnu::noinline]] void invalid(const char* message) { invalid(Text(message)); }

[[noreturn]] [[gnu::noinline]] void nonfinite_error(int64_t t, int64_t coordinate, double fp,
                                                    double fm) {
  raise(kNonFinite, "non-finite loss or estimate at step " + str(t) + " for coordinate " +
                        str(coordinate) + " (f+=" + num(fp) + ", f-=" + num(fm) +
                        "); parameters and optimizer state are unchanged. Check the "
                        "objective, lower eps or lr, or use NonFinite::kZero to refresh "
                        "such coordinates with 0.");
}

void check_group(const GroupOptions& g, int32_t index) {
  const Text where = " (param group " + str(index) + ")";
  if (!std::isfinite(g.lr) || g.lr < 0) {
    invalid("Invalid lr: " + num(g.lr) + where + "; it must be finite and >= 0");
  }
  if (!std::isfinite(g.weight_decay) || g.weight_decay < 0) {
    invalid("Invalid weight_decay: " + num(g.weight_decay) + where +
            "; it must be finite and >= 0");
  }
  if (!std::isfinite(g.eps) || g.eps <= 0) {
    invalid("Invalid eps: " + num(g.eps) + where + "; it must be finite and > 0");
  }
  if (!(g.momentum >= 0.0 && g.momentum <= 1.0)) {  // also rejects NaN
    invalid("Invalid momentum: " + num(g.momentum) + where + "; it must lie in [0, 1]");
  }
  if (!std::isfinite(g.lr * g.weight_decay)) {  // 1e200 * 1e200 would fill x with inf/NaN
    invalid("Invalid lr * weight_decay: " + num(g.lr) + " * " + num(g.weight_decay) +
            " is not finite" + where +
            "; the decay factor 1 - lr*weight_decay must be finite: lower lr or weight_decay");
  }
}

// The public dtype codes are the kernels' (ParamRef::meta stores them as given).
static_assert(static_cast<int32_t>(ScalarType::kFloat16) == kHalf &&
                  static_cast<int32_t>(ScalarType::kBFloat16) == kBFloat16 &&
                  static_cast<int32_t>(ScalarType::kFloat32) == kFloat &&
                  static_cast<int32_t>(ScalarType::kFloat64) == kDouble,
              "ScalarType must match cocd::DType");

// A run of T inside the optimizer's block (no ownership): what the std::vector members
// were, minus allocation.
template <typename T>
struct Array {
  T* ptr = nullptr;
  std::size_t count = 0;
  T* data() const { return ptr; }
  std::size_t size() const { return count; }
  T& operator[](std::size_t i) const { return ptr[i]; }
  T* begin() const { return ptr; }
  T* end() const { return ptr + count; }
};

// Little-endian integer coding, independent of the host's byte order.
void put_u64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint64_t get_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}
void put_u32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t get_u32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}

uint64_t fnv1a(const unsigned char* p, std::size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

}  // namespace

struct Optimizer::Impl {
  int64_t n = 0, B = 0, m = 0;
  int64_t n_eval = 0;  // evaluations per step: 2B (central) or B + 1 (forward)
  bool central = true;
  bool dense = true;
  NonFinite nonfinite = NonFinite::kRaise;
  DType acc = kFloat;  // buffer and estimates: kFloat or kDouble
  int64_t c = 0, t = 0, head = 0;
  int32_t n_groups = 0;
  HyperRow hyper[kMaxGroups] = {};  // one row per group, the layout the kernels take

  // Everything below lives in the block after this object, sized once at construction;
  // a step only reuses it.
  Array<ParamRef> table;   // P rows, in coordinate order
  Array<Slot> slots;       // B
  Array<double> losses;    // n_eval
  Array<float> v32, g32;   // buffer (m) and estimates (B) when acc == kFloat
  Array<double> v64, g64;  // ... when acc == kDouble
  Array<int32_t> coords;   // FIFO ring coordinates (m, n < 2^31); empty in dense mode
  std::size_t bytes = 0;   // the whole block, this object included
  // How to free the block (std::free), or null for caller memory. A pointer rather than
  // a flag, so a build that only creates in place links no allocator at all.
  void (*release)(void*) = nullptr;

  template <typename acc_t>
  acc_t* v() {
    if constexpr (std::is_same_v<acc_t, double>) {
      return v64.data();
    } else {
      return v32.data();
    }
  }
  template <typename acc_t>
  acc_t* g() {
    if constexpr (std::is_same_v<acc_t, double>) {
      return g64.data();
    } else {
      return g32.data();
    }
  }
  std::size_t acc_bytes() const { return acc == kDouble ? 8 : 4; }

  bool step(ObjectiveFn objective, void* context, double* loss_out);
  template <typename acc_t>
  double finish();
  void reset();
};

bool Optimizer::Impl::step(ObjectiveFn objective, void* context, double* loss_out) {
  if (objective == nullptr) invalid("step: the objective is null");
  const ParamRef* tab = table.data();
  const int64_t P = static_cast<int64_t>(table.size());
  cpu::plan(slots.data(), B, tab, P, c, n, hyper, central);
  // Evaluation k runs with x perturbed for k; advance(k, k + 1) records its loss,
  // restores the saved bits and perturbs the next, so x holds at most one
  // perturbation, and advance(current, n_eval) undoes it exactly on any failure.
  int64_t current = -1;
  auto restore = [&] {
    cpu::advance(losses.data(), n_eval, slots.data(), tab, nullptr, kDouble, current, n_eval,
                 central);
  };
  cpu::advance(losses.data(), n_eval, slots.data(), tab, nullptr, kDouble, -1, 0, central);
  current = 0;
  for (int64_t k = 0; k < n_eval; ++k) {
    double value = 0.0;
    bool ok = false;
#if defined(__cpp_exceptions)
    try {
      ok = objective(context, &value);
    } catch (...) {
      restore();
      throw;
    }
#else
    ok = objective(context, &value);
#endif
    if (!ok) {
      restore();
      return false;
    }
    cpu::advance(losses.data(), n_eval, slots.data(), tab, &value, kDouble, k, k + 1, central);
    current = k + 1;
  }
  // x is back at its base point; nothing has changed yet. finish() commits or throws.
  const double loss = acc == kDouble ? finish<double>() : finish<float>();
  if (loss_out != nullptr) *loss_out = loss;
  return true;
}

template <typename acc_t>
double Optimizer::Impl::finish() {
  acc_t loss = 0;
  int32_t bad = 0;
  acc_t* gp = g<acc_t>();
  cpu::finite_difference<acc_t>(gp, &loss, &bad, losses.data(), slots.data(), B, central,
                                nonfinite == NonFinite::kZero);
  if (bad != 0 && nonfinite == NonFinite::kRaise) {
    // Report the first offending coordinate, as the Python engines do.
    for (int64_t j = 0; j < B; ++j) {
      const Estimate<acc_t> e = fd_estimate<acc_t>(losses.data(), slots.data(), j, central);
      if (!e.finite) nonfinite_error(t, (c + j) % n, e.fp, e.fm);
    }
  }
  acc_t* vp = v<acc_t>();
  if (dense) {
    cpu::dense_update<acc_t>(table.data(), static_cast<int64_t>(table.size()), vp, gp, c, n, B,
                             hyper);
  } else {
    cpu::fifo_update<acc_t, int32_t>(coords.data(), vp, m, gp, B, table.data(),
                                     static_cast<int64_t>(table.size()), head, c, n, hyper);
    head = (head + B) % m;
  }
  c = (c + B) % n;
  ++t;
  return static_cast<double>(loss);
}

void Optimizer::Impl::reset() {
  std::fill(v32.begin(), v32.end(), 0.0f);
  std::fill(v64.begin(), v64.end(), 0.0);
  for (int64_t k = 0; k < static_cast<int64_t>(coords.size()); ++k) {
    coords[k] = static_cast<int32_t>(k);
  }
  c = t = head = 0;
}

namespace {

// Where each array of an optimizer's block starts (byte offsets) and the block's size.
// 8-byte arrays come first, right after the Impl (whose size is a multiple of 8), so no
// padding is ever needed.
struct Layout {
  std::size_t table = 0, slots = 0, losses = 0, v = 0, g = 0, coords = 0, total = 0;
};

// Appends count elements of elem bytes at `at`; fails when the block would not fit the
// target's size_t (32-bit targets: n must fit the address space).
std::size_t extend(std::size_t* at, uint64_t count, std::size_t elem) {
  const std::size_t start = *at;
  const std::size_t room = std::numeric_limits<std::size_t>::max() - start;
  if (count > room / elem) {
    invalid("the optimizer's state (" + str(count) + " values of " + str(elem) +
            " bytes) does not fit this target's address space (" + str(sizeof(std::size_t) * 8) +
            "-bit size_t); lower memory_budget or use a " + "64-bit target");
  }
  *at = start + static_cast<std::size_t>(count) * elem;
  return start;
}

// What the inputs come to, once validated.
struct Shape {
  int64_t n = 0, B = 0, m = 0, n_eval = 0;
  int32_t n_groups = 0;
  bool wide = false;  // float64 estimates (some parameter is float64)
  Layout layout;
};

std::size_t element_bytes(ScalarType t) {
  return t == ScalarType::kFloat64 ? 8 : t == ScalarType::kFloat32 ? 4 : 2;
}

// Every check of the constructor except the overlap test (which needs the table, see
// build()); also the block's layout.
template <typename Impl>
Shape validate(const detail::Inputs& in) {
  if (in.n_params == 0) invalid("CoCD got an empty parameter list; pass the arrays to optimize");
  if (in.n_groups == 0) invalid("CoCD got no groups; pass at least one GroupOptions");
  if (in.n_groups > static_cast<std::size_t>(kMaxGroups)) {
    invalid("CoCD got " + str(in.n_groups) + " groups; at most " + str(kMaxGroups) +
            " are supported");
  }
  if (in.n_params > static_cast<std::size_t>(std::numeric_limits<int32_t>::max())) {
    invalid("CoCD got " + str(in.n_params) + " parameter arrays; at most 2^31 - 1 are supported");
  }
  Shape s;
  s.n_groups = static_cast<int32_t>(in.n_groups);
  for (int32_t gi = 0; gi < s.n_groups; ++gi) check_group(in.group(in.groups, gi), gi);

  int64_t n = 0;
  int32_t last_group = 0;
  for (std::size_t i = 0; i < in.n_params; ++i) {
    const ParamSpan p = in.param(in.params, i);
    const Text where = "parameter " + str(i);
    const int32_t dt = static_cast<int32_t>(p.dtype);
    if (dt < 0 || dt > 3) invalid(where + " has an invalid dtype code " + str(dt));
    if (p.numel < 0) invalid(where + " has numel " + str(p.numel) + " < 0");
    if (p.data == nullptr && p.numel > 0) invalid(where + " has a null data pointer");
    const std::size_t elem = element_bytes(p.dtype);
    if (reinterpret_cast<uintptr_t>(p.data) % elem != 0) {  // the kernels load whole elements
      invalid(where + " has a data pointer not aligned to its " + str(elem) +
              "-byte elements; pass an array of that element type");
    }
    if (static_cast<uint64_t>(p.numel) > static_cast<uint64_t>(PTRDIFF_MAX) / elem) {
      invalid(where + " has numel " + str(p.numel) + ", more " + str(elem) +
              "-byte elements than this target's address space holds");
    }
    if (p.group < 0 || p.group >= s.n_groups) {
      invalid(where + " has group " + str(p.group) + "; there are " + str(s.n_groups) + " groups");
    }
    if (p.group < last_group) {
      invalid(where + " has group " + str(p.group) + " after group " + str(last_group) +
              "; list the parameters group by group, in group order");
    }
    if (p.numel > std::numeric_limits<int64_t>::max() - n) invalid("too many coordinates");
    // The array must fit the address space (32-bit targets).
    const uintptr_t room =
        std::numeric_limits<uintptr_t>::max() - reinterpret_cast<uintptr_t>(p.data);
    if (static_cast<uint64_t>(p.numel) > room / element_bytes(p.dtype)) {
      invalid(where + " has numel " + str(p.numel) +
              ", more elements than this target's address space holds");
    }
    last_group = p.group;
    s.wide = s.wide || p.dtype == ScalarType::kFloat64;
    n += p.numel;
  }
  if (n == 0) invalid("CoCD got parameters with no elements; there is nothing to optimize");

  if (in.compute_budget < 1) {
    invalid("Invalid compute_budget: " + str(in.compute_budget) + "; it must be an int >= 1");
  }
  if (in.memory_budget < 0) {
    invalid("Invalid memory_budget: " + str(in.memory_budget) + "; it must be >= 1 (or 0 for n)");
  }
  const int64_t B = std::min(in.compute_budget, n);  // B > n refreshes every coordinate
  const int64_t m = in.memory_budget == 0 ? n : std::min(in.memory_budget, n);
  if (m < n && n > std::numeric_limits<int32_t>::max()) {
    invalid("FIFO mode (memory_budget < n) stores 32-bit coordinates and needs n < 2^31, got n = " +
            str(n));
  }
  if (m < B) {
    invalid("Invalid memory_budget: " + str(in.memory_budget) + " is smaller than compute_budget " +
            str(B) + "; the buffer must hold at least one block (memory_budget >= compute_budget)");
  }
  if (in.nonfinite != static_cast<int32_t>(NonFinite::kRaise) &&
      in.nonfinite != static_cast<int32_t>(NonFinite::kZero)) {
    invalid("Invalid nonfinite: " + str(in.nonfinite) + "; use kRaise (0) or kZero (1)");
  }
  if (in.init_grad_count != 0) {
    if (in.init_grad == nullptr ||
        static_cast<uint64_t>(in.init_grad_count) != static_cast<uint64_t>(m)) {
      invalid("init_grad has " + str(in.init_grad_count) + " values; expected exactly " + str(m) +
              " (one per buffer entry: entry k is the initial estimate of coordinate k)");
    }
    for (std::size_t k = 0; k < in.init_grad_count; ++k) {
      if (!std::isfinite(in.init_grad[k])) {
        invalid("init_grad contains NaN or infinity; pass finite estimates");
      }
    }
  }
  s.n = n;
  s.B = B;
  s.m = m;
  s.n_eval = in.central_difference ? 2 * B : B + 1;

  Layout& l = s.layout;
  const std::size_t a = s.wide ? 8 : 4;
  std::size_t at = sizeof(Impl);
  l.table = extend(&at, in.n_params, sizeof(ParamRef));
  l.slots = extend(&at, static_cast<uint64_t>(B), sizeof(Slot));
  l.losses = extend(&at, static_cast<uint64_t>(s.n_eval), sizeof(double));
  l.v = extend(&at, static_cast<uint64_t>(m), a);
  l.g = extend(&at, static_cast<uint64_t>(B), a);
  l.coords = extend(&at, m < n ? static_cast<uint64_t>(m) : 0, sizeof(int32_t));
  l.total = at;
  return s;
}

// Two spans over the same memory would be perturbed and descended twice. Sorts the
// table by address in place (no scratch memory), then back into coordinate order by
// the row index parked in meta's upper half (meta itself uses 16 bits).
void check_overlap(ParamRef* table, std::size_t P) {
  for (std::size_t i = 0; i < P; ++i) table[i].meta |= static_cast<int64_t>(i) << 32;
  auto begin = [](const ParamRef& r) { return static_cast<uintptr_t>(r.ptr); };
  std::sort(table, table + P,
            [&](const ParamRef& x, const ParamRef& y) { return begin(x) < begin(y); });
  bool overlap = false;
  uintptr_t end = 0;
  bool any = false;
  for (std::size_t i = 0; i < P; ++i) {
    const ParamRef& r = table[i];
    if (r.numel == 0) continue;
    if (any && begin(r) < end) overlap = true;
    const uintptr_t e = begin(r) + static_cast<uintptr_t>(r.numel) *
                                       element_bytes(static_cast<ScalarType>(r.meta & 0xff));
    end = any ? std::max(end, e) : e;
    any = true;
  }
  std::sort(table, table + P,
            [](const ParamRef& x, const ParamRef& y) { return (x.meta >> 32) < (y.meta >> 32); });
  for (std::size_t i = 0; i < P; ++i) table[i].meta &= 0xffffffff;
  if (overlap) invalid("two parameter spans overlap in memory; pass each array once");
}

template <typename T>
Array<T> carve(unsigned char* block, std::size_t offset, std::size_t count) {
  return Array<T>{count == 0 ? nullptr : reinterpret_cast<T*>(block + offset), count};
}

ParamSpan span_at(const void* params, std::size_t i) {
  return (*static_cast<const std::vector<ParamSpan>*>(params))[i];
}
GroupOptions group_at(const void* groups, std::size_t i) {
  return (*static_cast<const std::vector<GroupOptions>*>(groups))[i];
}

detail::Inputs inputs(const std::vector<ParamSpan>& params, const std::vector<GroupOptions>& groups,
                      const Options& options) {
  detail::Inputs in;
  in.n_params = params.size();
  in.params = &params;
  in.param = span_at;
  in.n_groups = groups.size();
  in.groups = &groups;
  in.group = group_at;
  in.compute_budget = options.compute_budget;
  in.memory_budget = options.memory_budget;
  in.central_difference = options.central_difference;
  in.nonfinite = static_cast<int32_t>(options.nonfinite);
  in.init_grad = options.init_grad.data();
  in.init_grad_count = options.init_grad.size();
  return in;
}

}  // namespace

std::size_t detail::Access::required_bytes(const Inputs& in) {
  return validate<Optimizer::Impl>(in).layout.total;
}

Optimizer detail::Access::create_in(const Inputs& in, void* storage, std::size_t bytes,
                                    void (*release)(void*)) {
  using Impl = Optimizer::Impl;
  const Shape shape = validate<Impl>(in);
  if (storage == nullptr) invalid("the optimizer's storage is null");
  if (reinterpret_cast<uintptr_t>(storage) % kStorageAlign != 0) {
    invalid("the optimizer's storage is not " + str(kStorageAlign) + "-byte aligned");
  }
  if (bytes < shape.layout.total) {
    invalid("the optimizer's storage holds " + str(bytes) + " bytes; it needs " +
            str(shape.layout.total) + " (required_bytes())");
  }
  auto* block = static_cast<unsigned char*>(storage);
  const Layout& l = shape.layout;
  const std::size_t P = in.n_params;
  Array<ParamRef> table = carve<ParamRef>(block, l.table, P);
  int64_t start = 0;
  for (std::size_t i = 0; i < P; ++i) {
    const ParamSpan p = in.param(in.params, i);
    ParamRef& r = table[i];
    r.ptr = static_cast<int64_t>(reinterpret_cast<intptr_t>(p.data));
    r.start = start;
    r.numel = p.numel;
    r.meta = static_cast<int32_t>(p.dtype) | (static_cast<int64_t>(p.group) << kGroupShift);
    start += p.numel;
  }
  check_overlap(table.data(), P);  // the last check: nothing is written before it passes

  Impl* impl = new (block) Impl();
  Impl& s = *impl;
  s.n = shape.n;
  s.B = shape.B;
  s.m = shape.m;
  s.central = in.central_difference;
  s.n_eval = shape.n_eval;
  s.dense = s.m == s.n;
  s.nonfinite = static_cast<NonFinite>(in.nonfinite);
  s.acc = shape.wide ? kDouble : kFloat;  // float64 estimates as soon as any parameter is float64
  s.n_groups = shape.n_groups;
  for (int32_t gi = 0; gi < shape.n_groups; ++gi) {
    const GroupOptions g = in.group(in.groups, gi);
    s.hyper[gi] = HyperRow{g.lr, g.weight_decay, g.eps, g.momentum};
  }
  const std::size_t B = static_cast<std::size_t>(s.B), m = static_cast<std::size_t>(s.m);
  s.table = table;
  s.slots = carve<Slot>(block, l.slots, B);
  s.losses = carve<double>(block, l.losses, static_cast<std::size_t>(s.n_eval));
  if (shape.wide) {
    s.v64 = carve<double>(block, l.v, m);
    s.g64 = carve<double>(block, l.g, B);
  } else {
    s.v32 = carve<float>(block, l.v, m);
    s.g32 = carve<float>(block, l.g, B);
  }
  s.coords = carve<int32_t>(block, l.coords, s.dense ? 0 : m);
  std::fill(s.g32.begin(), s.g32.end(), 0.0f);
  std::fill(s.g64.begin(), s.g64.end(), 0.0);
  std::fill(s.losses.begin(), s.losses.end(), 0.0);
  s.bytes = l.total;
  s.release = release;
  s.reset();
  // Rounded to the buffer dtype once, as the Python optimizer's init_grad.to(acc) does.
  for (std::size_t k = 0; k < in.init_grad_count; ++k) {
    if (shape.wide) {
      s.v64[k] = in.init_grad[k];
    } else {
      s.v32[k] = static_cast<float>(in.init_grad[k]);
    }
  }
  return Optimizer(impl);
}

Optimizer::Optimizer(const std::vector<ParamSpan>& params, const std::vector<GroupOptions>& groups,
                     const Options& options) {
  const detail::Inputs in = inputs(params, groups, options);
  const std::size_t bytes = detail::Access::required_bytes(in);
  // One allocation; malloc is 8-byte aligned on every target.
  void* block = std::malloc(bytes);
  if (block == nullptr) raise(kOutOfMemory, "out of memory");
#if defined(__cpp_exceptions)
  try {
    *this = detail::Access::create_in(in, block, bytes, std::free);
  } catch (...) {
    std::free(block);
    throw;
  }
#else
  *this = detail::Access::create_in(in, block, bytes, std::free);
#endif
}

Optimizer::Optimizer(const std::vector<ParamSpan>& params, const std::vector<GroupOptions>& groups,
                     const Options& options, void* storage, std::size_t storage_bytes)
    : Optimizer(detail::Access::create_in(inputs(params, groups, options), storage, storage_bytes,
                                          nullptr)) {}

std::size_t Optimizer::required_bytes(const std::vector<ParamSpan>& params,
                                      const std::vector<GroupOptions>& groups,
                                      const Options& options) {
  return detail::Access::required_bytes(inputs(params, groups, options));
}

Optimizer::~Optimizer() {
  if (impl_ == nullptr) return;
  void (*const release)(void*) = impl_->release;
  impl_->~Impl();
  if (release != nullptr) release(impl_);
}

Optimizer::Optimizer(Optimizer&& other) noexcept : impl_(other.impl_) { other.impl_ = nullptr; }

Optimizer& Optimizer::operator=(Optimizer&& other) noexcept {
  if (this != &other) {
    Optimizer old(impl_);  // destroys the current optimizer on leaving
    impl_ = other.impl_;
    other.impl_ = nullptr;
  }
  return *this;
}

bool Optimizer::step(ObjectiveFn objective, void* context, double* loss) {
  return impl_->step(objective, context, loss);
}

GroupOptions Optimizer::group(int32_t g) const {
  if (g < 0 || g >= impl_->n_groups) {
    invalid("group index " + str(g) + " out of range [0, " + str(impl_->n_groups) + ")");
  }
  const HyperRow& h = impl_->hyper[g];
  GroupOptions out;
  out.lr = h.lr;
  out.weight_decay = h.weight_decay;
  out.eps = h.eps;
  out.momentum = h.momentum;
  return out;
}

void Optimizer::set_group(int32_t g, const GroupOptions& options) {
  group(g);  // range check
  check_group(options, g);
  impl_->hyper[g] = HyperRow{options.lr, options.weight_decay, options.eps, options.momentum};
}

int32_t Optimizer::num_groups() const { return impl_->n_groups; }
int64_t Optimizer::size() const { return impl_->n; }
int64_t Optimizer::compute_budget() const { return impl_->B; }
int64_t Optimizer::memory_budget() const { return impl_->m; }
bool Optimizer::fifo() const { return !impl_->dense; }
bool Optimizer::central_difference() const { return impl_->central; }
NonFinite Optimizer::nonfinite() const { return impl_->nonfinite; }
int64_t Optimizer::step_count() const { return impl_->t; }
int64_t Optimizer::next_coordinate() const { return impl_->c; }
int64_t Optimizer::head() const { return impl_->head; }

ScalarType Optimizer::buffer_type() const {
  return impl_->acc == kDouble ? ScalarType::kFloat64 : ScalarType::kFloat32;
}

const void* Optimizer::buffer() const {
  return impl_->acc == kDouble ? static_cast<const void*>(impl_->v64.data())
                               : static_cast<const void*>(impl_->v32.data());
}

const int32_t* Optimizer::coords() const { return impl_->dense ? nullptr : impl_->coords.data(); }

std::size_t Optimizer::memory_bytes() const {
  const Impl& s = *impl_;
  return sizeof(Optimizer) + s.bytes;
}

std::size_t Optimizer::state_size() const {
  const Impl& s = *impl_;
  const std::size_t m = static_cast<std::size_t>(s.m);
  return kHeaderBytes + m * s.acc_bytes() + (s.dense ? 0 : m * 8) + kChecksumBytes;
}

std::size_t Optimizer::save_state(void* out, std::size_t capacity) const {
  const Impl& s = *impl_;
  const std::size_t size = state_size();
  if (out == nullptr) invalid("save_state: the output buffer is null");
  if (capacity < size) {
    invalid("save_state: the buffer holds " + str(capacity) + " bytes; the state needs " +
            str(size) + " (state_size())");
  }
  auto* p = static_cast<unsigned char*>(out);
  std::memset(p, 0, kHeaderBytes);
  std::memcpy(p, kMagic, 4);
  put_u32(p + 4, kStateVersion);
  put_u64(p + 8, static_cast<uint64_t>(s.n));
  put_u64(p + 16, static_cast<uint64_t>(s.m));
  put_u64(p + 24, static_cast<uint64_t>(s.B));
  p[32] = s.central ? 1 : 0;
  p[33] = static_cast<unsigned char>(s.acc);
  put_u64(p + 40, static_cast<uint64_t>(s.c));
  put_u64(p + 48, static_cast<uint64_t>(s.t));
  put_u64(p + 56, static_cast<uint64_t>(s.head));
  unsigned char* q = p + kHeaderBytes;
  for (int64_t k = 0; k < s.m; ++k) {
    if (s.acc == kDouble) {
      put_u64(q, double_bits(s.v64[k]));
      q += 8;
    } else {
      put_u32(q, float_bits(s.v32[k]));
      q += 4;
    }
  }
  for (int32_t ci : s.coords) {
    put_u64(q, static_cast<uint64_t>(ci));
    q += 8;
  }
  put_u64(q, fnv1a(p, static_cast<std::size_t>(q - p)));
  return size;
}

std::vector<unsigned char> Optimizer::save_state() const {
  std::vector<unsigned char> out(state_size());
  save_state(out.data(), out.size());
  return out;
}

void Optimizer::load_state(const void* data, std::size_t size) {
  Impl& s = *impl_;
  if (data == nullptr) invalid("load_state: the state buffer is null");
  const auto* p = static_cast<const unsigned char*>(data);
  auto bad = [](const Text& why) { raise(kBadState, "load_state: " + why); };
  if (size < 8 || std::memcmp(p, kMagic, 4) != 0) bad("not a CoCD state (bad magic number)");
  const uint32_t version = get_u32(p + 4);
  if (version != kStateVersion) {
    bad("state format version " + str(version) + "; this library reads version " +
        str(kStateVersion));
  }
  const std::size_t expected = state_size();
  if (size != expected) {
    bad("the state has " + str(size) + " bytes; this optimizer's has " + str(expected) +
        " (different n, memory_budget or buffer dtype?)");
  }
  if (get_u64(p + size - kChecksumBytes) != fnv1a(p, size - kChecksumBytes)) {
    bad("checksum mismatch: the state is corrupted");
  }
  auto same = [&](const char* name, uint64_t saved, int64_t mine) {
    if (saved != static_cast<uint64_t>(mine)) {
      bad(Text("the state has ") + name + "=" + str(saved) + " but this optimizer has " + name +
          "=" + str(mine) + "; construct it with the saved options to resume");
    }
  };
  same("n", get_u64(p + 8), s.n);
  same("memory_budget", get_u64(p + 16), s.m);
  same("compute_budget", get_u64(p + 24), s.B);
  same("central_difference", p[32], s.central ? 1 : 0);
  same("buffer dtype", p[33], s.acc);
  const uint64_t c = get_u64(p + 40), t = get_u64(p + 48), head = get_u64(p + 56);
  if (c >= static_cast<uint64_t>(s.n) || head >= static_cast<uint64_t>(s.m) ||
      (s.dense && head != 0) || t >= kMaxSteps) {
    bad("out-of-range pointer c=" + str(c) + ", head=" + str(head) + " or step count t=" + str(t));
  }
  const unsigned char* values = p + kHeaderBytes;
  const unsigned char* ring = values + static_cast<std::size_t>(s.m) * s.acc_bytes();
  for (int64_t k = 0; k < s.m; ++k) {
    const double v = s.acc == kDouble ? bits_double(get_u64(values + 8 * k))
                                      : bits_float(get_u32(values + 4 * k));
    if (!std::isfinite(v)) bad("buffer entry " + str(k) + " is not finite");
    if (!s.dense && get_u64(ring + 8 * k) >= static_cast<uint64_t>(s.n)) {
      bad("ring coordinate " + str(get_u64(ring + 8 * k)) + " is outside [0, n)");
    }
  }
  if (!s.dense) {  // a ring holds each coordinate at most once
#if COCD_BARE_METAL
    // No heap here: a quadratic scan (rings on such devices are small, loads are rare).
    for (int64_t a = 1; a < s.m; ++a) {
      for (int64_t b = 0; b < a; ++b) {
        if (get_u64(ring + 8 * a) == get_u64(ring + 8 * b)) {
          bad("ring coordinate " + str(get_u64(ring + 8 * a)) +
              " appears twice; a ring holds each coordinate at most once");
        }
      }
    }
#else
    std::vector<uint64_t> sorted(static_cast<std::size_t>(s.m));
    for (int64_t k = 0; k < s.m; ++k) sorted[k] = get_u64(ring + 8 * k);
    std::sort(sorted.begin(), sorted.end());
    const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    if (dup != sorted.end()) {
      bad("ring coordinate " + str(*dup) +
          " appears twice; a ring holds each coordinate at most once");
    }
#endif
  }
  // Everything checked: only now change the state.
  for (int64_t k = 0; k < s.m; ++k) {
    if (s.acc == kDouble) {
      s.v64[k] = bits_double(get_u64(values + 8 * k));
    } else {
      s.v32[k] = bits_float(get_u32(values + 4 * k));
    }
    if (!s.dense) s.coords[k] = static_cast<int32_t>(get_u64(ring + 8 * k));
  }
  s.c = static_cast<int64_t>(c);
  s.t = static_cast<int64_t>(t);
  s.head = static_cast<int64_t>(head);
}

void Optimizer::reset() { impl_->reset(); }

}  // namespace cocd

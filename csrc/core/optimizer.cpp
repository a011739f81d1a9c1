// cocd::Optimizer on the torch-free CPU kernels of csrc/kernels, the same ones the
// PyTorch extension runs. This file owns the memory, validates the options and
// sequences a step exactly as cocd_cuda/native.py does; it holds no copy of the
// algorithm's arithmetic.
#include "cocd/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "cocd_kernels.h"
#include "dtype.h"

namespace cocd {
namespace {

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

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

[[noreturn]] void invalid(const std::string& message) { throw std::invalid_argument(message); }

void check_group(const GroupOptions& g, int32_t index) {
  const std::string where = " (param group " + std::to_string(index) + ")";
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

std::size_t element_bytes(ScalarType dtype) {
  return dtype == ScalarType::kFloat64 ? 8 : dtype == ScalarType::kFloat32 ? 4 : 2;
}

// The public dtype codes are the kernels' (ParamRef::meta stores them as given).
static_assert(static_cast<int32_t>(ScalarType::kFloat16) == kHalf &&
                  static_cast<int32_t>(ScalarType::kBFloat16) == kBFloat16 &&
                  static_cast<int32_t>(ScalarType::kFloat32) == kFloat &&
                  static_cast<int32_t>(ScalarType::kFloat64) == kDouble,
              "ScalarType must match cocd::DType");

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
  GroupParams groups{};  // the hyperparameters, already in the layout the kernels take

  // Everything below is sized once in the constructor; a step only reuses it.
  std::vector<ParamRef> table;   // P rows, in coordinate order
  std::vector<Slot> slots;       // B
  std::vector<double> losses;    // n_eval
  std::vector<float> v32, g32;   // buffer (m) and estimates (B) when acc == kFloat
  std::vector<double> v64, g64;  // ... when acc == kDouble
  std::vector<int32_t> coords;   // FIFO ring coordinates (m, n < 2^31); empty in dense mode

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
  cpu::plan(slots.data(), B, tab, P, c, n, groups, central);
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
    try {
      ok = objective(context, &value);
    } catch (...) {
      restore();
      throw;
    }
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
      const double fp = central ? losses[2 * j] : losses[j + 1];
      const double fm = central ? losses[2 * j + 1] : losses[0];
      if (std::isfinite(gp[j]) && std::isfinite(fp) && std::isfinite(fm)) continue;
      throw NonFiniteError("non-finite loss or estimate at step " + std::to_string(t) +
                           " for coordinate " + std::to_string((c + j) % n) + " (f+=" + num(fp) +
                           ", f-=" + num(fm) +
                           "); parameters and optimizer state are unchanged. Check the "
                           "objective, lower eps or lr, or use NonFinite::kZero to refresh "
                           "such coordinates with 0.");
    }
  }
  acc_t* vp = v<acc_t>();
  if (dense) {
    for (const ParamRef& r : table) {
      if (r.numel == 0) continue;
      const int32_t gi = param_group(r);
      cpu::dense_update<acc_t>(reinterpret_cast<void*>(r.ptr), param_dtype(r), vp + r.start,
                               r.numel, r.start, gp, c, n, B, groups.lr[gi],
                               groups.weight_decay[gi], groups.momentum[gi]);
    }
  } else {
    cpu::fifo_update<acc_t, int32_t>(coords.data(), vp, m, gp, B, table.data(),
                                     static_cast<int64_t>(table.size()), head, c, n, groups);
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

Optimizer::Optimizer(const std::vector<ParamSpan>& params, const std::vector<GroupOptions>& groups,
                     const Options& options) {
  if (params.empty()) invalid("CoCD got an empty parameter list; pass the arrays to optimize");
  if (groups.empty()) invalid("CoCD got no groups; pass at least one GroupOptions");
  if (groups.size() > static_cast<std::size_t>(kMaxGroups)) {
    invalid("CoCD got " + std::to_string(groups.size()) + " groups; at most " +
            std::to_string(kMaxGroups) + " are supported");
  }
  const int32_t n_groups = static_cast<int32_t>(groups.size());
  for (int32_t gi = 0; gi < n_groups; ++gi) check_group(groups[gi], gi);

  auto impl = std::make_unique<Impl>();
  impl->table.reserve(params.size());
  int64_t n = 0;
  int32_t last_group = 0;
  bool wide = false;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const ParamSpan& p = params[i];
    const std::string where = "parameter " + std::to_string(i);
    const int32_t dt = static_cast<int32_t>(p.dtype);
    if (dt < 0 || dt > 3) invalid(where + " has an invalid dtype code " + std::to_string(dt));
    if (p.numel < 0) invalid(where + " has numel " + std::to_string(p.numel) + " < 0");
    if (p.data == nullptr && p.numel > 0) invalid(where + " has a null data pointer");
    const std::size_t elem = element_bytes(p.dtype);
    const uintptr_t address = reinterpret_cast<uintptr_t>(p.data);
    if (address % elem != 0) {  // the kernels load whole elements
      invalid(where + " has a data pointer not aligned to its " + std::to_string(elem) +
              "-byte elements; pass an array of that element type");
    }
    // No array is larger than PTRDIFF_MAX bytes or runs past the end of the address space.
    if (static_cast<uint64_t>(p.numel) > static_cast<uint64_t>(PTRDIFF_MAX) / elem ||
        static_cast<uint64_t>(p.numel) > (UINTPTR_MAX - address) / elem) {
      invalid(where + " has numel " + std::to_string(p.numel) + ", more " + std::to_string(elem) +
              "-byte elements than fit in memory from its address");
    }
    if (p.group < 0 || p.group >= n_groups) {
      invalid(where + " has group " + std::to_string(p.group) + "; there are " +
              std::to_string(n_groups) + " groups");
    }
    if (p.group < last_group) {
      invalid(where + " has group " + std::to_string(p.group) + " after group " +
              std::to_string(last_group) + "; list the parameters group by group, in group order");
    }
    if (p.numel > std::numeric_limits<int64_t>::max() - n) invalid("too many coordinates");
    last_group = p.group;
    wide = wide || p.dtype == ScalarType::kFloat64;
    ParamRef r;
    r.ptr = static_cast<int64_t>(reinterpret_cast<intptr_t>(p.data));
    r.start = n;
    r.numel = p.numel;
    r.meta = dt | (static_cast<int64_t>(p.group) << 8);
    impl->table.push_back(r);
    n += p.numel;
  }
  if (n == 0) invalid("CoCD got parameters with no elements; there is nothing to optimize");
  // Two spans over the same memory would be perturbed and descended twice.
  {
    std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
    for (const ParamSpan& p : params) {
      if (p.numel == 0) continue;
      const uintptr_t begin = reinterpret_cast<uintptr_t>(p.data);  // no overflow: checked above
      ranges.emplace_back(begin, begin + static_cast<uintptr_t>(p.numel) * element_bytes(p.dtype));
    }
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i) {
      if (ranges[i].first < ranges[i - 1].second) {
        invalid("two parameter spans overlap in memory; pass each array once");
      }
    }
  }

  if (options.compute_budget < 1) {
    invalid("Invalid compute_budget: " + std::to_string(options.compute_budget) +
            "; it must be an int >= 1");
  }
  if (options.memory_budget < 0) {
    invalid("Invalid memory_budget: " + std::to_string(options.memory_budget) +
            "; it must be >= 1 (or 0 for n)");
  }
  const int64_t B = std::min(options.compute_budget, n);  // B > n refreshes every coordinate
  const int64_t m = options.memory_budget == 0 ? n : std::min(options.memory_budget, n);
  if (m < n && n > std::numeric_limits<int32_t>::max()) {
    invalid("FIFO mode (memory_budget < n) stores 32-bit coordinates and needs n < 2^31, got n = " +
            std::to_string(n));
  }
  if (m < B) {
    invalid("Invalid memory_budget: " + std::to_string(options.memory_budget) +
            " is smaller than compute_budget " + std::to_string(B) +
            "; the buffer must hold at least one block (memory_budget >= compute_budget)");
  }
  if (options.nonfinite != NonFinite::kRaise && options.nonfinite != NonFinite::kZero) {
    invalid("Invalid nonfinite: " + std::to_string(static_cast<int32_t>(options.nonfinite)) +
            "; use kRaise (0) or kZero (1)");
  }
  if (!options.init_grad.empty()) {
    if (static_cast<int64_t>(options.init_grad.size()) != m) {
      invalid("init_grad has " + std::to_string(options.init_grad.size()) +
              " values; expected exactly " + std::to_string(m) +
              " (one per buffer entry: entry k is the initial estimate of coordinate k)");
    }
    for (double x : options.init_grad) {
      if (!std::isfinite(x)) invalid("init_grad contains NaN or infinity; pass finite estimates");
    }
  }

  Impl& s = *impl;
  s.n = n;
  s.B = B;
  s.m = m;
  s.central = options.central_difference;
  s.n_eval = s.central ? 2 * B : B + 1;
  s.dense = m == n;
  s.nonfinite = options.nonfinite;
  s.acc = wide ? kDouble : kFloat;  // float64 estimates as soon as any parameter is float64
  s.groups.count = n_groups;
  for (int32_t gi = 0; gi < n_groups; ++gi) {
    s.groups.lr[gi] = groups[gi].lr;
    s.groups.weight_decay[gi] = groups[gi].weight_decay;
    s.groups.eps[gi] = groups[gi].eps;
    s.groups.momentum[gi] = groups[gi].momentum;
  }
  s.slots.resize(static_cast<std::size_t>(B));
  s.losses.resize(static_cast<std::size_t>(s.n_eval));
  if (wide) {
    s.v64.assign(static_cast<std::size_t>(m), 0.0);
    s.g64.assign(static_cast<std::size_t>(B), 0.0);
  } else {
    s.v32.assign(static_cast<std::size_t>(m), 0.0f);
    s.g32.assign(static_cast<std::size_t>(B), 0.0f);
  }
  if (!s.dense) s.coords.resize(static_cast<std::size_t>(m));
  s.reset();
  // Rounded to the buffer dtype once, as the Python optimizer's init_grad.to(acc) does.
  for (std::size_t k = 0; k < options.init_grad.size(); ++k) {
    if (wide) {
      s.v64[k] = options.init_grad[k];
    } else {
      s.v32[k] = static_cast<float>(options.init_grad[k]);
    }
  }
  impl_ = std::move(impl);
}

Optimizer::~Optimizer() = default;
Optimizer::Optimizer(Optimizer&&) noexcept = default;
Optimizer& Optimizer::operator=(Optimizer&&) noexcept = default;

bool Optimizer::step(ObjectiveFn objective, void* context, double* loss) {
  return impl_->step(objective, context, loss);
}

GroupOptions Optimizer::group(int32_t g) const {
  if (g < 0 || g >= impl_->groups.count) {
    invalid("group index " + std::to_string(g) + " out of range [0, " +
            std::to_string(impl_->groups.count) + ")");
  }
  const GroupParams& p = impl_->groups;
  GroupOptions out;
  out.lr = p.lr[g];
  out.weight_decay = p.weight_decay[g];
  out.eps = p.eps[g];
  out.momentum = p.momentum[g];
  return out;
}

void Optimizer::set_group(int32_t g, const GroupOptions& options) {
  group(g);  // range check
  check_group(options, g);
  GroupParams& p = impl_->groups;
  p.lr[g] = options.lr;
  p.weight_decay[g] = options.weight_decay;
  p.eps[g] = options.eps;
  p.momentum[g] = options.momentum;
}

int32_t Optimizer::num_groups() const { return impl_->groups.count; }
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
  return sizeof(Optimizer) + sizeof(Impl) + s.table.capacity() * sizeof(ParamRef) +
         s.slots.capacity() * sizeof(Slot) + s.losses.capacity() * sizeof(double) +
         (s.v32.capacity() + s.g32.capacity()) * sizeof(float) +
         (s.v64.capacity() + s.g64.capacity()) * sizeof(double) +
         s.coords.capacity() * sizeof(int32_t);
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
    invalid("save_state: the buffer holds " + std::to_string(capacity) +
            " bytes; the state needs " + std::to_string(size) + " (state_size())");
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
  auto bad = [](const std::string& why) { throw StateError("load_state: " + why); };
  if (size < 8 || std::memcmp(p, kMagic, 4) != 0) bad("not a CoCD state (bad magic number)");
  const uint32_t version = get_u32(p + 4);
  if (version != kStateVersion) {
    bad("state format version " + std::to_string(version) + "; this library reads version " +
        std::to_string(kStateVersion));
  }
  const std::size_t expected = state_size();
  if (size != expected) {
    bad("the state has " + std::to_string(size) + " bytes; this optimizer's has " +
        std::to_string(expected) + " (different n, memory_budget or buffer dtype?)");
  }
  if (get_u64(p + size - kChecksumBytes) != fnv1a(p, size - kChecksumBytes)) {
    bad("checksum mismatch: the state is corrupted");
  }
  auto same = [&](const char* name, uint64_t saved, int64_t mine) {
    if (saved != static_cast<uint64_t>(mine)) {
      bad(std::string("the state has ") + name + "=" + std::to_string(saved) +
          " but this optimizer has " + name + "=" + std::to_string(mine) +
          "; construct it with the saved options to resume");
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
    bad("out-of-range pointer c=" + std::to_string(c) + ", head=" + std::to_string(head) +
        " or step count t=" + std::to_string(t));
  }
  const unsigned char* values = p + kHeaderBytes;
  const unsigned char* ring = values + static_cast<std::size_t>(s.m) * s.acc_bytes();
  for (int64_t k = 0; k < s.m; ++k) {
    const double v = s.acc == kDouble ? bits_double(get_u64(values + 8 * k))
                                      : bits_float(get_u32(values + 4 * k));
    if (!std::isfinite(v)) bad("buffer entry " + std::to_string(k) + " is not finite");
    if (!s.dense && get_u64(ring + 8 * k) >= static_cast<uint64_t>(s.n)) {
      bad("ring coordinate " + std::to_string(get_u64(ring + 8 * k)) + " is outside [0, n)");
    }
  }
  if (!s.dense) {  // a ring holds each coordinate at most once
    std::vector<uint64_t> sorted(static_cast<std::size_t>(s.m));
    for (int64_t k = 0; k < s.m; ++k) sorted[k] = get_u64(ring + 8 * k);
    std::sort(sorted.begin(), sorted.end());
    const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    if (dup != sorted.end()) {
      bad("ring coordinate " + std::to_string(*dup) +
          " appears twice; a ring holds each "
          "coordinate at most once");
    }
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

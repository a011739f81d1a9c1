// Every CUDA launcher of csrc/kernels/cuda_kernels.cu, run on the CPU through HIP-CPU
// (library cocd_cuda_on_cpu), against the matching CPU kernel on the same inputs: all
// storage dtypes, both accumulator types, int32 and int64 ring coordinates, NaN, inf
// and subnormal values, blocks that wrap around n, and (outside sanitizer builds) sizes
// that need a second grid-stride pass. Outputs must agree bit for bit; a NaN only has to
// be a NaN (a GPU returns its canonical NaN, whatever the payload).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cocd_kernels.h"
#include "cocd_kernels_cuda.h"
#include "dtype.h"

namespace cocd {
namespace cuda {
cudaError_t synchronize();  // cuda_kernels_on_cpu.cpp
}
}  // namespace cocd

namespace {

using namespace cocd;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kLarge = false;  // the large cases take minutes under the sanitizers
#else
constexpr bool kLarge = true;
#endif

// More elements than 65,535 blocks of 256 threads cover in one grid-stride pass.
constexpr int64_t kOnePass = 65535LL * 256;

const DType kDTypes[] = {kHalf, kBFloat16, kFloat, kDouble};
const char* dtype_name(DType d) {
  static const char* names[] = {"fp16", "bf16", "fp32", "fp64"};
  return names[d];
}
int64_t elem_size(DType d) { return d == kFloat ? 4 : d == kDouble ? 8 : 2; }

int64_t launches = 0, compared = 0, differ = 0;  // kernel runs, output elements, mismatches

void report(const std::string& where, int64_t i, double cpu, double gpu, uint64_t cbits,
            uint64_t gbits) {
  if (++differ <= 20) {
    std::fprintf(stderr, "DIFFER %s [%lld]: cpu %.17g (0x%llx) cuda %.17g (0x%llx)\n",
                 where.c_str(), static_cast<long long>(i), cpu,
                 static_cast<unsigned long long>(cbits), gpu,
                 static_cast<unsigned long long>(gbits));
  }
}

// Raw bits of element i of a `dtype` buffer: equal bits, or both NaN.
void same_values(const std::string& where, const void* cpu, const void* gpu, DType dtype,
                 int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    ++compared;
    const uint64_t a = read_bits(cpu, dtype, i), b = read_bits(gpu, dtype, i);
    if (a == b) continue;
    const double va = bits_value(a, dtype), vb = bits_value(b, dtype);
    if (std::isnan(va) && std::isnan(vb)) continue;
    report(where, i, va, vb, a, b);
  }
}

template <typename T>
DType dtype_of() {
  return sizeof(T) == 4 ? kFloat : kDouble;
}

template <typename T>
void same(const std::string& where, const std::vector<T>& cpu, const std::vector<T>& gpu) {
  if constexpr (std::is_floating_point_v<T>) {
    same_values(where, cpu.data(), gpu.data(), dtype_of<T>(), static_cast<int64_t>(cpu.size()));
  } else {
    for (size_t i = 0; i < cpu.size(); ++i) {
      ++compared;
      if (cpu[i] != gpu[i]) {
        report(where, static_cast<int64_t>(i), static_cast<double>(cpu[i]),
               static_cast<double>(gpu[i]), static_cast<uint64_t>(cpu[i]),
               static_cast<uint64_t>(gpu[i]));
      }
    }
  }
}

void same_slots(const std::string& where, const std::vector<Slot>& cpu,
                const std::vector<Slot>& gpu) {
  for (size_t j = 0; j < cpu.size(); ++j) {
    const Slot &a = cpu[j], &b = gpu[j];
    compared += 6;
    const bool h_same =
        double_bits(a.h) == double_bits(b.h) || (std::isnan(a.h) && std::isnan(b.h));
    if (a.param != b.param || a.offset != b.offset || a.saved != b.saved || a.plus != b.plus ||
        a.minus != b.minus || !h_same) {
      report(where + " slot", static_cast<int64_t>(j), a.h, b.h, a.plus, b.plus);
    }
  }
}

void sync() {
  if (cuda::synchronize() != cudaSuccess) {
    std::fprintf(stderr, "device synchronise failed\n");
    ++differ;
  }
}

void launched(cudaError_t e, const char* what) {
  ++launches;
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: launch failed\n", what);
    ++differ;
  }
  sync();
}

std::mt19937_64 rng(20260412);

double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); }
int64_t integer(int64_t lo, int64_t hi) {  // [lo, hi]
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

// Mostly ordinary values, with NaN, +-inf, +-0 and subnormals (of fp16, fp32 and fp64).
double value(bool specials = true) {
  if (specials) {
    switch (integer(0, 19)) {
      case 0:
        return std::numeric_limits<double>::quiet_NaN();
      case 1:
        return integer(0, 1) ? INFINITY : -INFINITY;
      case 2:
        return integer(0, 1) ? 0.0 : -0.0;
      case 3:
        return 3.0 * 5.9604644775390625e-8;  // fp16 subnormal
      case 4:
        return -1e-40;  // fp32 subnormal (bf16 too)
      case 5:
        return 4.9e-320;  // fp64 subnormal
      default:
        break;
    }
  }
  return uniform(-2.0, 2.0);
}

// Parameters of mixed dtypes in two copies (one per kernel), with the parameter table
// for each copy.
struct Model {
  std::vector<DType> dtypes;
  std::vector<int64_t> numels;
  std::vector<std::vector<unsigned char>> data[2];
  std::vector<ParamRef> table[2];
  int64_t n = 0;

  Model(const std::vector<DType>& dt, const std::vector<int64_t>& sizes, int groups,
        bool specials = true)
      : dtypes(dt), numels(sizes) {
    for (int side = 0; side < 2; ++side) {
      data[side].resize(dt.size());
      table[side].resize(dt.size());
    }
    for (size_t p = 0; p < dt.size(); ++p) {
      auto& buf = data[0][p];
      buf.resize(static_cast<size_t>(std::max<int64_t>(sizes[p], 1) * elem_size(dt[p])));
      for (int64_t i = 0; i < sizes[p]; ++i)
        store_as<double>(buf.data(), dt[p], i, value(specials));
      data[1][p] = buf;
      for (int side = 0; side < 2; ++side) {
        table[side][p] =
            ParamRef{reinterpret_cast<int64_t>(data[side][p].data()), n, sizes[p],
                     static_cast<int64_t>(dt[p]) | (static_cast<int64_t>(p) % groups) << 8};
      }
      n += sizes[p];
    }
  }
  void compare(const std::string& where) const {
    for (size_t p = 0; p < dtypes.size(); ++p) {
      same_values(where + " param " + std::to_string(p), data[0][p].data(), data[1][p].data(),
                  dtypes[p], numels[p]);
    }
  }
};

// One HyperRow per group: no weight decay and momentum 1 (no decay), then both.
std::vector<HyperRow> make_hyper(int count) {
  const double lr[] = {0.05, 0.3, 1e-3}, wd[] = {0.0, 0.05, 0.5}, eps[] = {1e-3, 0.02, 1e-9},
               mom[] = {1.0, 0.9, 0.5};
  std::vector<HyperRow> rows(count);
  for (int i = 0; i < count; ++i) {
    // eps 1e-9 rounds back to x in every dtype but fp64: h = 0.
    rows[i] = HyperRow{lr[i % 3], wd[i % 3], eps[i % 3], mom[i % 3]};
  }
  return rows;
}

std::vector<DType> mixed(int P) {
  std::vector<DType> d;
  for (int p = 0; p < P; ++p) d.push_back(kDTypes[p % 4]);
  return d;
}

// ---------------------------------------------------------------------------- plan
void test_plan() {
  for (int dt = 0; dt < 5; ++dt) {
    const std::vector<int64_t> sizes = {13, 0, 40, 1, 27};
    const std::vector<DType> types = dt < 4 ? std::vector<DType>(5, kDTypes[dt]) : mixed(5);
    Model model(types, sizes, 3);
    const std::vector<HyperRow> hyper = make_hyper(3);
    for (bool central : {true, false}) {
      for (int64_t B : {int64_t{1}, int64_t{7}, int64_t{60}, model.n}) {
        for (int64_t c : {int64_t{0}, model.n - 3, integer(0, model.n - 1)}) {
          const std::string where = std::string("plan ") +
                                    (dt < 4 ? dtype_name(kDTypes[dt]) : "mixed") +
                                    (central ? " central" : " forward") +
                                    " B=" + std::to_string(B) + " c=" + std::to_string(c);
          // One slot past B stays untouched by both.
          std::vector<Slot> cpu(static_cast<size_t>(B + 1), Slot{-7, -7, 7, 7, 7, 7.0});
          std::vector<Slot> gpu = cpu;
          const int64_t counters[3] = {c, 0, 0};
          cpu::plan(cpu.data(), B, model.table[0].data(), 5, c, model.n, hyper.data(), central);
          launched(cuda::plan(gpu.data(), B, model.table[1].data(), 5, counters, model.n,
                              hyper.data(), central, nullptr),
                   "plan");
          same_slots(where, cpu, gpu);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------- advance
// A whole step's evaluations: from -1 to the first, one to the next, then past the last.
void test_advance() {
  for (int dt = 0; dt < 5; ++dt) {
    const std::vector<int64_t> sizes = {6, 9, 4};
    const std::vector<DType> types = dt < 4 ? std::vector<DType>(3, kDTypes[dt]) : mixed(3);
    Model model(types, sizes, 3);
    const std::vector<HyperRow> hyper = make_hyper(3);
    for (bool central : {true, false}) {
      const int64_t B = 8, c = model.n - 5;  // wraps around n
      std::vector<Slot> slots(B);
      cpu::plan(slots.data(), B, model.table[0].data(), 3, c, model.n, hyper.data(), central);
      const int64_t n_eval = central ? 2 * B : B + 1;
      std::vector<double> cpu(n_eval, -1.0), gpu(n_eval, -1.0);
      for (DType loss_dtype : kDTypes) {
        std::vector<unsigned char> loss(8);
        for (int64_t k = -1; k < n_eval; ++k) {
          store_as<double>(loss.data(), loss_dtype, 0, value());
          const bool store = k != 3;  // one evaluation without a loss (a skipped store)
          const void* lp = store ? loss.data() : nullptr;
          cpu::advance(cpu.data(), n_eval, slots.data(), model.table[0].data(), lp, loss_dtype, k,
                       k + 1, central);
          launched(cuda::advance(gpu.data(), n_eval, slots.data(), model.table[1].data(), lp,
                                 loss_dtype, k, k + 1, central, nullptr),
                   "advance");
          const std::string where = std::string("advance ") + dtype_name(loss_dtype) +
                                    (central ? " central" : " forward") + " k=" + std::to_string(k);
          same(where + " losses", cpu, gpu);
          model.compare(where);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------- finite_difference
template <typename acc_t>
void finite_difference_case(const std::string& where, const std::vector<double>& losses,
                            const std::vector<Slot>& slots, int64_t B, bool central, bool zero) {
  std::vector<acc_t> g_cpu(B, acc_t(-3)), g_gpu(B, acc_t(-3)), l_cpu(1, acc_t(-3)),
      l_gpu(1, acc_t(-3));
  std::vector<int32_t> bad_cpu(1, -3), bad_gpu(1, -3);
  cpu::finite_difference<acc_t>(g_cpu.data(), l_cpu.data(), bad_cpu.data(), losses.data(),
                                slots.data(), B, central, zero);
  launched(cuda::finite_difference<acc_t>(g_gpu.data(), l_gpu.data(), bad_gpu.data(), losses.data(),
                                          slots.data(), B, central, zero, nullptr),
           "finite_difference");
  same(where + " g", g_cpu, g_gpu);
  same(where + " loss", l_cpu, l_gpu);
  same(where + " bad", bad_cpu, bad_gpu);
}

void test_finite_difference() {
  // Summed in a different order, these give 0.20000000000000004 and 0.19999999999999998.
  {
    const std::vector<double> losses = {0.1, 0.1, 0.1, 0.1, 0.4, 0.4};
    std::vector<Slot> slots(3);
    for (Slot& s : slots) s.h = 0.25;
    finite_difference_case<double>("finite_difference 3 slots", losses, slots, 3, true, false);
    finite_difference_case<float>("finite_difference 3 slots", losses, slots, 3, true, false);
  }
  for (int64_t B : {1, 2, 3, 255, 256, 257, 1000, 4099}) {
    for (bool central : {true, false}) {
      for (bool specials : {false, true}) {
        std::vector<double> losses(central ? 2 * B : B + 1);
        for (double& l : losses) l = specials ? value() : uniform(0.0, 1e3);
        std::vector<Slot> slots(B);
        for (Slot& s : slots) s.h = specials && integer(0, 9) == 0 ? 0.0 : uniform(1e-6, 1e-2);
        for (bool zero : {true, false}) {
          const std::string where = "finite_difference B=" + std::to_string(B) +
                                    (central ? " central" : " forward") +
                                    (specials ? " specials" : "") + (zero ? " zero" : "");
          finite_difference_case<float>(where + " fp32", losses, slots, B, central, zero);
          finite_difference_case<double>(where + " fp64", losses, slots, B, central, zero);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------- dense_update
// Every parameter of the table in one call: the CPU kernel's loops per parameter
// against the one multi-tensor launch, over n coordinates, with the block [c, c+B).
template <typename acc_t>
void dense_case(const std::vector<DType>& types, const std::vector<int64_t>& sizes, int groups,
                int64_t c, int64_t B, bool specials) {
  Model model(types, sizes, groups, specials);
  const std::vector<HyperRow> hyper = make_hyper(groups);
  const int64_t n = model.n, P = static_cast<int64_t>(types.size());
  std::vector<acc_t> v_cpu(n), g(B);
  for (acc_t& vi : v_cpu) vi = static_cast<acc_t>(value(specials));
  for (acc_t& gj : g) gj = static_cast<acc_t>(value(specials));
  std::vector<acc_t> v_gpu = v_cpu;
  const int64_t counters[3] = {c, 0, 0};
  cpu::dense_update<acc_t>(model.table[0].data(), P, v_cpu.data(), g.data(), c, n, B, hyper.data());
  launched(cuda::dense_update<acc_t>(model.table[1].data(), P, v_gpu.data(), g.data(), counters, n,
                                     B, hyper.data(), nullptr),
           "dense_update");
  std::string kinds;
  for (DType d : types) kinds += std::string(dtype_name(d)) + ",";
  const std::string where = "dense_update [" + kinds + "] acc " + dtype_name(dtype_of<acc_t>()) +
                            " groups=" + std::to_string(groups) + " n=" + std::to_string(n) +
                            " c=" + std::to_string(c) + " B=" + std::to_string(B);
  same(where + " v", v_cpu, v_gpu);
  model.compare(where);
}

void test_dense_update() {
  // Parameters covering [0, 300), [300, 500) and [500, 1000), and blocks before, across
  // a boundary, inside, wrapping around n, and the whole vector.
  const std::vector<int64_t> sizes = {300, 200, 500};
  const int64_t blocks[][2] = {{0, 10},    {250, 100}, {350, 20},   {450, 100}, {600, 50},
                               {950, 400}, {999, 1},   {990, 1000}, {0, 1000}};
  for (int dt = 0; dt < 5; ++dt) {
    const std::vector<DType> types = dt < 4 ? std::vector<DType>(3, kDTypes[dt]) : mixed(3);
    for (const auto& b : blocks) {
      for (int groups : {1, 3}) {  // three groups: momentum 1, 0.9, 0.5; weight decay or not
        const bool specials = b[0] % 2 == 0;
        dense_case<float>(types, sizes, groups, b[0], b[1], specials);
        dense_case<double>(types, sizes, groups, b[0], b[1], specials);
      }
    }
  }
  // Many small tensors of mixed dtypes, one of them empty, in three groups.
  const std::vector<int64_t> small = {13, 0, 40, 1, 27, 5, 2, 30};
  for (const int64_t c : {int64_t{0}, int64_t{100}, int64_t{117}}) {
    dense_case<float>(mixed(8), small, 3, c, 25, true);
    dense_case<double>(mixed(8), small, 3, c, 118, false);
  }
  if (kLarge) {
    // A second grid-stride pass, the block wrapping around n at the far end.
    const int64_t half = kOnePass / 2;
    dense_case<float>({kHalf, kFloat, kBFloat16}, {half, 3, half + 4099}, 3, 2 * half + 3099, 3000,
                      true);
    dense_case<double>({kBFloat16, kDouble}, {half + 7, half + 4000}, 2, 5, 3000, false);
  }
}

// ---------------------------------------------------------------------------- fifo_update
template <typename acc_t, typename coord_t>
void fifo_case(const std::vector<DType>& types, const std::vector<int64_t>& sizes, int64_t m,
               int64_t B, int64_t head, int64_t c, bool specials) {
  const int groups_n = 3;
  Model model(types, sizes, groups_n, specials);
  const std::vector<HyperRow> hyper = make_hyper(groups_n);
  const int64_t n = model.n, P = static_cast<int64_t>(types.size());
  // Ring entries hold distinct coordinates: the fresh block [c, c+B) mod n goes to the
  // B slots from head on; the other slots hold the coordinates before it.
  std::vector<coord_t> coords_cpu(m);
  std::vector<acc_t> vals_cpu(m), g(B);
  for (int64_t s = 0; s < m; ++s) {
    const int64_t j = (s - head + m) % m;  // push order; the stale ones hold c - (m - j)
    coords_cpu[s] = j < B ? coord_t(-1) : static_cast<coord_t>(((c - (m - j)) % n + n) % n);
    vals_cpu[s] = static_cast<acc_t>(value(specials));
  }
  for (acc_t& gj : g) gj = static_cast<acc_t>(value(specials));
  std::vector<coord_t> coords_gpu = coords_cpu;
  std::vector<acc_t> vals_gpu = vals_cpu;
  const int64_t counters[3] = {c, head, 0};
  cpu::fifo_update<acc_t, coord_t>(coords_cpu.data(), vals_cpu.data(), m, g.data(), B,
                                   model.table[0].data(), P, head, c, n, hyper.data());
  launched(cuda::fifo_update<acc_t, coord_t>(coords_gpu.data(), vals_gpu.data(), m, g.data(), B,
                                             model.table[1].data(), P, counters, n, hyper.data(),
                                             nullptr),
           "fifo_update");
  const std::string where = std::string("fifo_update acc ") + dtype_name(dtype_of<acc_t>()) +
                            " coord " + std::to_string(8 * sizeof(coord_t)) +
                            " m=" + std::to_string(m) + " B=" + std::to_string(B) +
                            " head=" + std::to_string(head) + " c=" + std::to_string(c);
  same(where + " coords", coords_cpu, coords_gpu);
  same(where + " vals", vals_cpu, vals_gpu);
  model.compare(where);
}

template <typename acc_t, typename coord_t>
void fifo_cases() {
  const std::vector<int64_t> sizes = {50, 0, 123, 7, 320};  // n = 500
  for (int dt = 0; dt < 5; ++dt) {
    const std::vector<DType> types = dt < 4 ? std::vector<DType>(5, kDTypes[dt]) : mixed(5);
    const int64_t cases[][4] = {// m, B, head, c
                                {1, 1, 0, 0},     {7, 3, 5, 498},      {64, 10, 60, 495},
                                {300, 40, 0, 10}, {300, 300, 17, 470}, {500, 37, 499, 250}};
    for (const auto& k : cases) {
      fifo_case<acc_t, coord_t>(types, sizes, k[0], k[1], k[2], k[3], dt % 2 == 0);
    }
  }
}

void test_fifo_update() {
  fifo_cases<float, int64_t>();
  fifo_cases<double, int64_t>();
  fifo_cases<float, int32_t>();
  fifo_cases<double, int32_t>();
  if (kLarge) {
    // A ring needing a second grid-stride pass.
    const int64_t m = kOnePass + 333;
    fifo_case<float, int32_t>({kHalf, kFloat, kBFloat16}, {m / 2, 1000, m}, m, 5000, m - 2000,
                              m / 2 + 600, false);
  }
}

}  // namespace

int main() {
  test_plan();
  test_advance();
  test_finite_difference();
  test_dense_update();
  test_fifo_update();
  std::printf(
      "%lld launches of the emulated CUDA kernels, %lld output elements compared with the CPU "
      "kernels, %lld differ%s\n",
      static_cast<long long>(launches), static_cast<long long>(compared),
      static_cast<long long>(differ),
      kLarge ? "" : " (cases beyond one grid-stride pass skipped under AddressSanitizer)");
  return differ == 0 && compared > 0 ? 0 : 1;
}

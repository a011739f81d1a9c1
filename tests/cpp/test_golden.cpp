// Replays the golden trajectories of tests/make_golden.py (the Python reference)
// through cocd::Optimizer, step by step, with the tolerances of tests/test_native.py;
// then resumes each case from a state saved halfway and checks that the resumed run is
// bit for bit the unbroken one.
//   test_golden <dir with *.txt> <case name>...
#include <cstring>
#include <string>
#include <vector>

#include "cocd_kernels.h"
#include "dtype.h"
#include "golden.hpp"

namespace {

struct Tol {
  double rtol, atol;
};

Tol tolerance(cocd::ScalarType t) {
  switch (t) {
    case cocd::ScalarType::kFloat64:
      return {1e-12, 1e-14};
    case cocd::ScalarType::kFloat32:
      return {1e-6, 1e-7};
    case cocd::ScalarType::kFloat16:
      return {1e-3, 1e-4};
    default:
      return {8e-3, 1e-3};
  }
}

cocd::ScalarType scalar_type(const std::string& name) {
  if (name == "float64") return cocd::ScalarType::kFloat64;
  if (name == "float32") return cocd::ScalarType::kFloat32;
  if (name == "float16") return cocd::ScalarType::kFloat16;
  if (name == "bfloat16") return cocd::ScalarType::kBFloat16;
  throw std::runtime_error("unknown dtype " + name);
}

cocd::DType kernel(cocd::ScalarType t) { return static_cast<cocd::DType>(static_cast<int>(t)); }

bool close(double actual, double expected, Tol tol) {
  if (std::isnan(expected)) return std::isnan(actual);
  if (std::isinf(expected)) return actual == expected;
  return std::fabs(actual - expected) <= tol.atol + tol.rtol * std::fabs(expected);
}

// The parameter arrays of a case: caller-owned storage in each parameter's dtype.
struct Model {
  std::vector<std::vector<uint64_t>> storage;  // 8-byte aligned, big enough for any dtype
  std::vector<cocd::ParamSpan> spans;
  std::vector<double> x;  // the objective's scratch: x gathered as doubles

  explicit Model(const golden::Case& k) {
    int64_t n = 0;
    for (const golden::Param& p : k.params) {
      const int64_t numel = static_cast<int64_t>(p.values.size());
      storage.emplace_back(static_cast<size_t>(numel) + 1, 0);
      n += numel;
    }
    for (size_t i = 0; i < k.params.size(); ++i) {
      const golden::Param& p = k.params[i];
      const cocd::ScalarType t = scalar_type(p.dtype);
      const int64_t numel = static_cast<int64_t>(p.values.size());
      // A zero-element parameter passes a null pointer, as an empty tensor may.
      spans.emplace_back(numel ? storage[i].data() : nullptr, numel, t, p.group);
      for (int64_t j = 0; j < numel; ++j)
        cocd::store_as<double>(storage[i].data(), kernel(t), j, p.values[j]);
    }
    x.resize(static_cast<size_t>(n));
  }
  // A copy owns its own storage, so its spans must point there.
  Model(const Model& other) { *this = other; }
  Model& operator=(const Model& other) {
    storage = other.storage;
    spans = other.spans;
    x = other.x;
    for (size_t i = 0; i < spans.size(); ++i) {
      if (spans[i].numel) spans[i].data = storage[i].data();
    }
    return *this;
  }
  const double* gather() {
    size_t at = 0;
    for (const cocd::ParamSpan& s : spans) {
      for (int64_t j = 0; j < s.numel; ++j)
        x[at++] = cocd::load_as<double>(s.data, kernel(s.dtype), j);
    }
    return x.data();
  }
};

cocd::Optimizer make_optimizer(const golden::Case& k, Model& model) {
  cocd::Options o;
  o.compute_budget = k.B;
  o.memory_budget = k.m;
  o.central_difference = k.central;
  o.nonfinite = k.nonfinite == "zero" ? cocd::NonFinite::kZero : cocd::NonFinite::kRaise;
  o.init_grad = k.init_grad;
  return cocd::Optimizer(model.spans, k.steps.front().hyper, o);
}

struct Stats {
  int64_t compared = 0, exact = 0;
};

void compare(const golden::Case& k, const golden::Step& s, int64_t t, cocd::Optimizer& opt,
             Model& model, double loss, Stats& stats) {
  const Tol acc = tolerance(opt.buffer_type());
  const std::string at = k.name + " step " + std::to_string(t);
  auto check = [&](double actual, double expected, Tol tol, const char* what, int64_t i) {
    ++stats.compared;
    if (std::memcmp(&actual, &expected, sizeof actual) == 0) ++stats.exact;
    if (!close(actual, expected, tol)) {
      std::fprintf(stderr, "%s: %s[%lld] = %.17g, reference %.17g\n", at.c_str(), what,
                   static_cast<long long>(i), actual, expected);
      ++golden::failures;
    }
  };
  check(loss, s.loss, acc, "loss", 0);
  const double* x = model.gather();
  int64_t i = 0;
  for (const cocd::ParamSpan& span : model.spans) {
    for (int64_t j = 0; j < span.numel; ++j, ++i)
      check(x[i], s.x[i], tolerance(span.dtype), "x", i);
  }
  for (int64_t j = 0; j < opt.memory_budget(); ++j) {
    const double v = opt.buffer_type() == cocd::ScalarType::kFloat64
                         ? static_cast<const double*>(opt.buffer())[j]
                         : static_cast<const float*>(opt.buffer())[j];
    check(v, s.buffer[j], acc, "buffer", j);
  }
  if (opt.fifo()) {
    for (int64_t j = 0; j < opt.memory_budget(); ++j) CHECK(opt.coords()[j] == s.coords[j]);
  }
  CHECK(opt.head() == s.head);
  CHECK(opt.next_coordinate() == s.c);
  CHECK(opt.step_count() == t);
}

double step(const golden::Case& k, const golden::Step& s, cocd::Optimizer& opt, Model& model) {
  for (int32_t g = 0; g < k.groups; ++g) opt.set_group(g, s.hyper[g]);
  const bool cap = k.objective == "cap";
  const int64_t n = static_cast<int64_t>(model.x.size());
  return opt.step([&] { return golden::objective(model.gather(), n, cap); });
}

void run_case(const golden::Case& k) {
  Model model(k);
  cocd::Optimizer opt = make_optimizer(k, model);
  CHECK(opt.compute_budget() == k.expect_B);
  CHECK(opt.memory_budget() == k.expect_m);
  CHECK(opt.step_count() == 0);
  Stats stats;
  const int64_t half = static_cast<int64_t>(k.steps.size()) / 2;
  std::vector<unsigned char> saved_state;
  Model saved_model = model;
  for (int64_t t = 1; t <= static_cast<int64_t>(k.steps.size()); ++t) {
    const golden::Step& s = k.steps[t - 1];
    const double loss = step(k, s, opt, model);
    compare(k, s, t, opt, model, loss, stats);
    if (t == half) {
      saved_state = opt.save_state();
      saved_model = model;
    }
  }
  // Resume from the halfway state in a fresh optimizer over copied parameters.
  cocd::Optimizer resumed = make_optimizer(k, saved_model);
  resumed.load_state(saved_state.data(), saved_state.size());
  CHECK(resumed.step_count() == half);
  Stats ignored;
  for (int64_t t = half + 1; t <= static_cast<int64_t>(k.steps.size()); ++t) {
    const golden::Step& s = k.steps[t - 1];
    const double loss = step(k, s, resumed, saved_model);
    compare(k, s, t, resumed, saved_model, loss, ignored);
  }
  for (size_t i = 0; i < model.storage.size(); ++i)
    CHECK(saved_model.storage[i] == model.storage[i]);
  CHECK(resumed.save_state() == opt.save_state());
  std::printf("%-24s n=%lld B=%lld m=%lld steps=%zu: %lld values, %lld bit-exact\n", k.name.c_str(),
              static_cast<long long>(opt.size()), static_cast<long long>(opt.compute_budget()),
              static_cast<long long>(opt.memory_budget()), k.steps.size(),
              static_cast<long long>(stats.compared), static_cast<long long>(stats.exact));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <golden dir> <case>...\n", argv[0]);
    return 2;
  }
  for (int i = 2; i < argc; ++i) {
    try {
      run_case(golden::load(std::string(argv[1]) + "/" + argv[i] + ".txt"));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", argv[i], e.what());
      ++golden::failures;
    }
  }
  if (golden::failures) std::fprintf(stderr, "%d failure(s)\n", golden::failures);
  return golden::failures ? 1 : 0;
}

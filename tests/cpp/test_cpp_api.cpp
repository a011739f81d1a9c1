// cocd::Optimizer: option validation, fault handling (exact restore, state unchanged),
// the step's evaluation pattern, reset, and state save/load with its checks.
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "golden.hpp"

namespace {

using cocd::GroupOptions;
using cocd::Optimizer;
using cocd::Options;
using cocd::ParamSpan;

// Runs `make`, expecting std::invalid_argument whose message contains `needle`.
void expect_invalid(const std::function<void()>& make, const std::string& needle) {
  try {
    make();
    std::fprintf(stderr, "no exception; expected one mentioning '%s'\n", needle.c_str());
    ++golden::failures;
  } catch (const std::invalid_argument& e) {
    if (std::string(e.what()).find(needle) == std::string::npos) {
      std::fprintf(stderr, "message '%s' lacks '%s'\n", e.what(), needle.c_str());
      ++golden::failures;
    }
  }
}

template <typename E>
void expect_throw(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    std::fprintf(stderr, "no exception; expected one mentioning '%s'\n", needle.c_str());
    ++golden::failures;
  } catch (const E& e) {
    if (std::string(e.what()).find(needle) == std::string::npos) {
      std::fprintf(stderr, "message '%s' lacks '%s'\n", e.what(), needle.c_str());
      ++golden::failures;
    }
  }
}

GroupOptions group(double lr, double wd, double eps, double momentum) {
  GroupOptions g;
  g.lr = lr;
  g.weight_decay = wd;
  g.eps = eps;
  g.momentum = momentum;
  return g;
}

// A problem of n float32 coordinates with the golden objective.
struct Problem {
  std::vector<float> x;
  std::vector<double> scratch;
  explicit Problem(int64_t n) : x(static_cast<size_t>(n)), scratch(static_cast<size_t>(n)) {
    for (int64_t i = 0; i < n; ++i) x[i] = 0.8f * std::sin(1.7f * static_cast<float>(i) + 0.3f);
  }
  double f() {
    for (size_t i = 0; i < x.size(); ++i) scratch[i] = x[i];
    return golden::objective(scratch.data(), static_cast<int64_t>(x.size()), false);
  }
  std::vector<ParamSpan> spans() { return {ParamSpan(x.data(), static_cast<int64_t>(x.size()))}; }
};

uint64_t fnv1a(const unsigned char* p, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

// Rewrites the trailing checksum, so a test can reach the checks behind it.
void reseal(std::vector<unsigned char>& s) {
  const uint64_t h = fnv1a(s.data(), s.size() - 8);
  for (int i = 0; i < 8; ++i) s[s.size() - 8 + i] = static_cast<unsigned char>(h >> (8 * i));
}

void test_validation() {
  Problem p(10);
  const auto spans = p.spans();
  auto with = [&](GroupOptions g) { return [&, g] { Optimizer(spans, {g}); }; };
  expect_invalid(with(group(-1, 0, 0.1, 1)), "lr");
  expect_invalid(with(group(NAN, 0, 0.1, 1)), "lr");
  expect_invalid(with(group(INFINITY, 0, 0.1, 1)), "lr");
  expect_invalid(with(group(0.1, -0.5, 0.1, 1)), "weight_decay");
  expect_invalid(with(group(0.1, INFINITY, 0.1, 1)), "weight_decay");
  expect_invalid(with(group(0.1, 0, 0, 1)), "eps");
  expect_invalid(with(group(0.1, 0, -1, 1)), "eps");
  expect_invalid(with(group(0.1, 0, NAN, 1)), "eps");
  expect_invalid(with(group(0.1, 0, 0.1, 1.5)), "momentum");
  expect_invalid(with(group(0.1, 0, 0.1, -0.1)), "momentum");
  expect_invalid(with(group(0.1, 0, 0.1, NAN)), "momentum");
  Optimizer(spans, {group(0, 0, 1e-300, 0)});  // the edges are valid

  auto with_options = [&](Options o) { return [&, o] { Optimizer(spans, {GroupOptions()}, o); }; };
  Options o;
  o.compute_budget = 0;
  expect_invalid(with_options(o), "compute_budget");
  o.compute_budget = -3;
  expect_invalid(with_options(o), "compute_budget");
  o = Options();
  o.memory_budget = -1;
  expect_invalid(with_options(o), "memory_budget");
  o.compute_budget = 4;
  o.memory_budget = 2;
  expect_invalid(with_options(o), "memory_budget");
  o = Options();
  o.nonfinite = static_cast<cocd::NonFinite>(7);
  expect_invalid(with_options(o), "nonfinite");
  o = Options();
  o.init_grad = std::vector<double>(9, 0.0);
  expect_invalid(with_options(o), "expected exactly 10");
  o.init_grad = std::vector<double>(10, 0.0);
  o.init_grad[3] = NAN;
  expect_invalid(with_options(o), "init_grad");

  // Clamping: B > n refreshes every coordinate, m > n is dense.
  o = Options();
  o.compute_budget = 50;
  o.memory_budget = 1000;
  Optimizer clamped(spans, {GroupOptions()}, o);
  CHECK(clamped.compute_budget() == 10);
  CHECK(clamped.memory_budget() == 10);
  CHECK(!clamped.fifo());
  o.compute_budget = 3;
  o.memory_budget = 3;
  o.init_grad = std::vector<double>(3, 0.5);  // exactly m values after clamping
  Optimizer fifo(spans, {GroupOptions()}, o);
  CHECK(fifo.fifo());
  CHECK(static_cast<const float*>(fifo.buffer())[2] == 0.5f);

  float a[4] = {}, b[4] = {};
  expect_invalid([&] { Optimizer({}, {GroupOptions()}); }, "empty parameter list");
  expect_invalid([&] { Optimizer({ParamSpan(a, 4)}, {}); }, "groups");
  expect_invalid([&] { Optimizer({ParamSpan(a, 4)}, std::vector<GroupOptions>(65)); },
                 "at most 64");
  expect_invalid([&] { Optimizer({ParamSpan(static_cast<float*>(nullptr), 4)}, {GroupOptions()}); },
                 "null");
  expect_invalid([&] { Optimizer({ParamSpan(a, -1)}, {GroupOptions()}); }, "numel");
  expect_invalid(
      [&] { Optimizer({ParamSpan(a, 4, static_cast<cocd::ScalarType>(9))}, {GroupOptions()}); },
      "dtype");
  expect_invalid([&] { Optimizer({ParamSpan(a, 4, 1)}, {GroupOptions()}); }, "group 1");
  expect_invalid(
      [&] {
        Optimizer({ParamSpan(a, 4, 1), ParamSpan(b, 4, 0)}, {GroupOptions(), GroupOptions()});
      },
      "group order");
  expect_invalid([&] { Optimizer({ParamSpan(a, 4), ParamSpan(a + 2, 2)}, {GroupOptions()}); },
                 "overlap");
  expect_invalid([&] { Optimizer({ParamSpan(a, 0), ParamSpan(b, 0)}, {GroupOptions()}); },
                 "no elements");
  Optimizer({ParamSpan(a, 2), ParamSpan(a + 2, 2)}, {GroupOptions()});  // adjacent is fine

  // set_group validates and changes nothing on error.
  Optimizer opt(spans, {group(0.1, 0, 0.1, 0.5)});
  expect_invalid([&] { opt.set_group(0, group(-1, 0, 0.1, 0.5)); }, "lr");
  expect_invalid([&] { opt.set_group(1, GroupOptions()); }, "group index 1");
  expect_invalid([&] { opt.group(-1); }, "group index -1");
  CHECK(opt.group(0).lr == 0.1 && opt.group(0).momentum == 0.5);
  opt.set_group(0, group(0.2, 0.01, 0.05, 0.9));
  CHECK(opt.group(0).lr == 0.2 && opt.group(0).eps == 0.05);
  expect_invalid([&] { opt.step(nullptr, nullptr, nullptr); }, "objective is null");
}

double constant_loss() { return 2.5; }

// The evaluation pattern: 2B (central) or B + 1 (forward) calls, each at the base
// point with at most one coordinate changed; x restored before the update.
void test_evaluations() {
  for (bool central : {true, false}) {
    Problem p(13);
    Options o;
    o.compute_budget = 4;
    o.central_difference = central;
    Optimizer opt(p.spans(), {group(0.05, 0, 0.1, 1)}, o);
    for (int step = 0; step < 5; ++step) {
      const std::vector<float> base = p.x;
      int calls = 0;
      double f0 = 0.0;
      const double loss = opt.step([&] {
        int changed = 0;
        for (size_t i = 0; i < base.size(); ++i) changed += p.x[i] != base[i];
        CHECK(changed <= 1);
        const double f = p.f();
        if (calls++ == 0) f0 = f;
        return f;
      });
      CHECK(calls == (central ? 8 : 5));
      if (!central) CHECK(static_cast<float>(loss) == static_cast<float>(f0));  // f(x), fp32
      CHECK(opt.next_coordinate() == ((step + 1) * 4) % 13);
    }
    // Any callable works: a function by name, a const functor, a function pointer.
    const auto functor = [] { return 1.0f; };
    CHECK(opt.step(constant_loss) == 2.5);
    CHECK(opt.step(functor) == 1.0);
    double (*pointer)() = constant_loss;
    CHECK(opt.step(pointer) == 2.5);
  }
}

// A failing objective leaves x and the state exactly as they were.
void test_faults() {
  for (bool fifo : {false, true}) {
    Problem p(11);
    Options o;
    o.compute_budget = 3;
    o.memory_budget = fifo ? 6 : 0;
    Optimizer opt(p.spans(), {group(0.05, 0.01, 0.1, 0.9)}, o);
    for (int k = 0; k < 4; ++k) opt.step([&] { return p.f(); });
    const std::vector<float> x = p.x;
    const std::vector<unsigned char> state = opt.save_state();
    for (int fail_at = 0; fail_at < 6; ++fail_at) {
      int calls = 0;
      expect_throw<std::runtime_error>(
          [&] {
            opt.step([&] {
              if (calls++ == fail_at) throw std::runtime_error("objective failed");
              return p.f();
            });
          },
          "objective failed");
      CHECK(p.x == x);
      CHECK(opt.save_state() == state);
      calls = 0;
      CHECK(!opt.step(
          [](void* c, double* l) {
            *l = 1.0;
            return ++*static_cast<int*>(c) < 3;
          },
          &calls));
      CHECK(p.x == x);
      CHECK(opt.save_state() == state);
      // A non-finite loss: raise mode fails the step and changes nothing.
      calls = 0;
      expect_throw<cocd::NonFiniteError>(
          [&] { opt.step([&] { return calls++ == fail_at ? NAN : p.f(); }); }, "coordinate");
      CHECK(p.x == x);
      CHECK(opt.save_state() == state);
    }
    // Zero mode: such coordinates are refreshed with 0; no NaN reaches x or v.
    Options z = o;
    z.nonfinite = cocd::NonFinite::kZero;
    Optimizer zero(p.spans(), {group(0.05, 0.01, 0.1, 0.9)}, z);
    for (int k = 0; k < 10; ++k) {
      int calls = 0;
      zero.step([&] { return calls++ % 4 == 1 ? INFINITY : p.f(); });
    }
    for (float v : p.x) CHECK(std::isfinite(v));
    for (int64_t j = 0; j < zero.memory_budget(); ++j) {
      CHECK(std::isfinite(static_cast<const float*>(zero.buffer())[j]));
    }
  }
}

void test_reset_and_state() {
  Problem p(17);
  Options o;
  o.compute_budget = 3;
  o.memory_budget = 8;
  Optimizer opt(p.spans(), {group(0.05, 0, 0.1, 0.9)}, o);
  for (int k = 0; k < 7; ++k) opt.step([&] { return p.f(); });
  CHECK(opt.step_count() == 7);
  CHECK(opt.head() == (7 * 3) % 8);
  const std::vector<unsigned char> state = opt.save_state();
  CHECK(state.size() == opt.state_size());
  CHECK(state.size() == 64 + 8 * 4 + 8 * 8 + 8);

  // save into a caller buffer: too small is an error.
  std::vector<unsigned char> small(state.size() - 1);
  expect_invalid([&] { opt.save_state(small.data(), small.size()); }, "state needs");
  expect_invalid([&] { opt.save_state(nullptr, 1000); }, "null");

  // Rejected loads change nothing.
  auto rejects = [&](std::vector<unsigned char> s, const std::string& needle, bool seal) {
    if (seal) reseal(s);
    expect_throw<cocd::StateError>([&] { opt.load_state(s.data(), s.size()); }, needle);
    CHECK(opt.save_state() == state);
  };
  std::vector<unsigned char> s = state;
  s[0] = 'X';
  rejects(s, "magic", false);
  s = state;
  s[4] = 2;
  rejects(s, "version 2", false);
  rejects(std::vector<unsigned char>(state.begin(), state.end() - 1), "bytes", false);
  rejects(std::vector<unsigned char>(state.begin(), state.begin() + 4), "magic", false);
  s = state;
  s[70] ^= 1;
  rejects(s, "checksum", false);
  s = state;
  s[24] = 4;  // B
  rejects(s, "compute_budget=4", true);
  s = state;
  s[32] = 0;  // central
  rejects(s, "central_difference=0", true);
  s = state;
  s[40] = 17;  // c == n
  rejects(s, "out-of-range", true);
  s = state;
  s[56] = 8;  // head == m
  rejects(s, "out-of-range", true);
  s = state;
  std::memcpy(&s[64], "\x00\x00\xc0\x7f", 4);  // a NaN buffer entry
  rejects(s, "not finite", true);
  s = state;
  s[64 + 32] = 17;  // a ring coordinate == n
  rejects(s, "ring coordinate", true);
  expect_invalid([&] { opt.load_state(nullptr, 10); }, "null");

  // Wrong optimizer: other n or another buffer dtype.
  Problem q(18);
  Optimizer other(q.spans(), {GroupOptions()}, o);
  expect_throw<cocd::StateError>([&] { other.load_state(state.data(), state.size()); }, "n=17");
  std::vector<double> wide(17);
  Optimizer wider({ParamSpan(wide.data(), 17)}, {GroupOptions()}, o);
  expect_throw<cocd::StateError>([&] { wider.load_state(state.data(), state.size()); }, "bytes");

  // A valid load resumes bit for bit.
  Problem r = p;
  Optimizer resumed(r.spans(), {group(0.05, 0, 0.1, 0.9)}, o);
  resumed.load_state(state.data(), state.size());
  CHECK(resumed.save_state() == state);
  for (int k = 0; k < 5; ++k) {
    opt.step([&] { return p.f(); });
    resumed.step([&] { return r.f(); });
  }
  CHECK(p.x == r.x);
  CHECK(resumed.save_state() == opt.save_state());

  // reset: zero buffer, counters 0, ring 0..m-1, options kept.
  opt.reset();
  CHECK(opt.step_count() == 0 && opt.next_coordinate() == 0 && opt.head() == 0);
  for (int64_t j = 0; j < 8; ++j) {
    CHECK(static_cast<const float*>(opt.buffer())[j] == 0.0f);
    CHECK(opt.coords()[j] == j);
  }
  CHECK(opt.group(0).momentum == 0.9);

  // Moving keeps the state.
  Optimizer moved = std::move(resumed);
  CHECK(moved.step_count() == 12);
}

}  // namespace

int main() {
  test_validation();
  test_evaluations();
  test_faults();
  test_reset_and_state();
  if (golden::failures) std::fprintf(stderr, "%d failure(s)\n", golden::failures);
  return golden::failures ? 1 : 0;
}

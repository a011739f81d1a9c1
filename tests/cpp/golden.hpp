// Shared by the C++ tests: a tiny CHECK harness, the golden-file reader and the test
// objective, which must match objective() in tests/make_golden.py op for op.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cocd/optimizer.hpp"

namespace golden {

inline int failures = 0;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++golden::failures;                                                           \
    }                                                                               \
  } while (0)

// Each operation is one rounded double operation, in the same order as the Python
// version (Python floats are IEEE doubles), so both compute the same bits.
inline double objective(const double* x, int64_t n, bool cap) {
  if (cap && x[0] > 0.7) return INFINITY;
  double total = 0.0;
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double xi = x[i];
    const double w = 0.5 + static_cast<double>(i) / static_cast<double>(n - 1);
    const double d = xi - (0.5 - static_cast<double>(i % 7) * 0.125);
    total += w * d * d + 0.05 * (xi * xi) * (xi * xi);
    s += xi;
  }
  return total + 0.1 * s * s / static_cast<double>(n + 1);
}

struct Param {
  std::string dtype;
  int32_t group = 0;
  std::vector<double> values;
};

struct Step {
  std::vector<cocd::GroupOptions> hyper;
  double loss = 0;
  std::vector<double> x, buffer;
  std::vector<int64_t> coords;
  int64_t head = 0, c = 0;
};

struct Case {
  std::string name, objective, nonfinite;
  bool central = true;
  int64_t B = 0, m = 0, expect_B = 0, expect_m = 0;
  int32_t groups = 0;
  std::vector<Param> params;
  std::vector<double> init_grad;
  std::vector<Step> steps;
};

class Reader {
 public:
  explicit Reader(const std::string& path) {
    std::ifstream file(path);
    if (!file) throw std::runtime_error("cannot open " + path);
    std::string line, text;
    while (std::getline(file, line)) {
      if (!line.empty() && line[0] != '#') text += line + "\n";
    }
    in_.str(text);
  }
  void expect(const std::string& key) {
    const std::string got = word();
    if (got != key)
      throw std::runtime_error("golden file: expected '" + key + "', got '" + got + "'");
  }
  std::string word() {
    std::string w;
    if (!(in_ >> w)) throw std::runtime_error("golden file: unexpected end");
    return w;
  }
  double number() { return std::stod(word()); }  // strtod: also "inf" and "nan"
  int64_t integer() { return std::stoll(word()); }
  std::vector<double> numbers(int64_t count) {
    std::vector<double> out(static_cast<size_t>(count));
    for (double& v : out) v = number();
    return out;
  }

 private:
  std::istringstream in_;
};

inline Case load(const std::string& path) {
  Reader r(path);
  Case k;
  r.expect("case");
  k.name = r.word();
  r.expect("objective");
  k.objective = r.word();
  r.expect("central");
  k.central = r.integer() != 0;
  r.expect("nonfinite");
  k.nonfinite = r.word();
  r.expect("compute_budget");
  k.B = r.integer();
  r.expect("memory_budget");
  k.m = r.integer();
  r.expect("expect_B");
  k.expect_B = r.integer();
  r.expect("expect_m");
  k.expect_m = r.integer();
  r.expect("groups");
  k.groups = static_cast<int32_t>(r.integer());
  r.expect("params");
  const int64_t n_params = r.integer();
  int64_t n = 0;
  for (int64_t i = 0; i < n_params; ++i) {
    r.expect("param");
    Param p;
    p.dtype = r.word();
    p.group = static_cast<int32_t>(r.integer());
    const int64_t numel = r.integer();
    p.values = r.numbers(numel);
    n += numel;
    k.params.push_back(p);
  }
  r.expect("init_grad");
  k.init_grad = r.numbers(r.integer());
  r.expect("steps");
  const int64_t n_steps = r.integer();
  const bool fifo = k.expect_m < n;
  for (int64_t t = 1; t <= n_steps; ++t) {
    r.expect("step");
    if (r.integer() != t) throw std::runtime_error("golden file: steps out of order");
    Step s;
    for (int32_t g = 0; g < k.groups; ++g) {
      r.expect("hyper");
      if (r.integer() != g) throw std::runtime_error("golden file: groups out of order");
      cocd::GroupOptions h;
      h.lr = r.number();
      h.weight_decay = r.number();
      h.eps = r.number();
      h.momentum = r.number();
      s.hyper.push_back(h);
    }
    r.expect("loss");
    s.loss = r.number();
    r.expect("x");
    s.x = r.numbers(n);
    r.expect("buffer");
    s.buffer = r.numbers(k.expect_m);
    if (fifo) {
      r.expect("coords");
      for (int64_t j = 0; j < k.expect_m; ++j) s.coords.push_back(r.integer());
    }
    r.expect("head");
    s.head = r.integer();
    r.expect("c");
    s.c = r.integer();
    k.steps.push_back(s);
  }
  r.expect("end");
  return k;
}

}  // namespace golden

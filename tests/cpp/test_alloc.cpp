// The optimizer allocates its state once, at construction; a step (and save/load into
// caller buffers) allocates nothing. Global operator new is replaced with a counting
// version; and memory_bytes() follows the documented formula.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>

#include "cocd/cocd.h"
#include "golden.hpp"

namespace {
long g_allocations = 0;
}

void* operator new(std::size_t size) {
  ++g_allocations;
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

struct Config {
  const char* name;
  int64_t B, m;
  bool central;
  bool wide;  // one float64 span: float64 buffer
};

// The documented formula (docs/ondevice.md), without its fixed part.
std::size_t formula(const Config& c, int64_t n, int64_t P) {
  const int64_t m = c.m == 0 ? n : c.m;
  const int64_t a = c.wide ? 8 : 4;
  const int64_t evals = c.central ? 2 * c.B : c.B + 1;
  const int64_t fifo = m < n ? 4 * m : 0;
  return static_cast<std::size_t>(m * a + fifo + c.B * (48 + a) + 8 * evals + 32 * P);
}

void run(const Config& c, std::size_t* fixed_part) {
  std::vector<float> a(300, 0.25f);
  std::vector<double> b(100, -0.5);
  std::vector<uint16_t> h(50, 0x3c00);  // fp16 1.0
  std::vector<cocd::ParamSpan> spans = {
      cocd::ParamSpan(a.data(), 300, 0),
      cocd::ParamSpan(h.data(), 50, cocd::ScalarType::kFloat16, 1)};
  if (c.wide) spans.push_back(cocd::ParamSpan(b.data(), 100, 1));
  const int64_t n = c.wide ? 450 : 350;
  cocd::Options o;
  o.compute_budget = c.B;
  o.memory_budget = c.m;
  o.central_difference = c.central;
  cocd::Optimizer opt(spans, {cocd::GroupOptions(), cocd::GroupOptions()}, o);
  std::vector<unsigned char> state(opt.state_size());
  auto objective = [&] {
    double s = 0.0;
    for (float v : a) s += (v - 1.0) * (v - 1.0);
    for (double v : b) s += v * v;
    return s;
  };

  const long before = g_allocations;
  for (int k = 0; k < 25; ++k) opt.step(objective);
  opt.save_state(state.data(), state.size());
  const long before_load = g_allocations;
  opt.load_state(state.data(), state.size());
  const long in_load = g_allocations - before_load;
  opt.reset();
  for (int k = 0; k < 5; ++k) opt.step(objective);
  const long during = g_allocations - before - in_load;
  std::printf("%-16s memory_bytes %6zu, allocations during 30 steps + save/reset: %ld, load: %ld\n",
              c.name, opt.memory_bytes(), during, in_load);
  CHECK(during == 0);
  CHECK(in_load == (opt.fifo() ? 1 : 0));  // FIFO: one temporary copy of the ring, to check it
  CHECK(opt.memory_bytes() >= formula(c, n, static_cast<int64_t>(spans.size())));
  const std::size_t fixed = opt.memory_bytes() - formula(c, n, static_cast<int64_t>(spans.size()));
  if (*fixed_part == 0) *fixed_part = fixed;
  CHECK(fixed == *fixed_part);  // the rest is one constant: the optimizer object itself
  CHECK(fixed < 4096);
}

struct CState {
  float* x;
  int64_t n;
};

int c_objective(void* user, double* loss) {
  const CState* s = static_cast<const CState*>(user);
  double total = 0.0;
  for (int64_t i = 0; i < s->n; ++i) total += s->x[i] * s->x[i];
  *loss = total;
  return 0;
}

}  // namespace

int main() {
  std::size_t fixed = 0;
  const Config configs[] = {
      {"dense central", 4, 0, true, false}, {"dense forward", 7, 0, false, false},
      {"fifo central", 5, 40, true, false}, {"fifo forward", 3, 3, false, false},
      {"dense f64", 6, 0, true, true},      {"fifo f64", 8, 64, true, true},
  };
  for (const Config& c : configs) run(c, &fixed);
  std::printf("fixed part: %zu bytes\n", fixed);

  // The C API's step allocates nothing either.
  std::vector<float> x(64, 0.5f);
  cocd_param p = {x.data(), 64, COCD_FLOAT32, 0};
  cocd_group g;
  cocd_options o;
  cocd_group_defaults(&g);
  cocd_options_defaults(&o);
  o.compute_budget = 4;
  o.memory_budget = 16;
  cocd_optimizer* opt = nullptr;
  CHECK(cocd_create(&p, 1, &g, 1, &o, &opt) == COCD_OK);
  CState s = {x.data(), 64};
  const long before = g_allocations;
  double loss = 0.0;
  for (int k = 0; k < 20; ++k) CHECK(cocd_step(opt, c_objective, &s, &loss) == COCD_OK);
  CHECK(g_allocations == before);
  cocd_destroy(opt);
  return golden::failures ? 1 : 0;
}

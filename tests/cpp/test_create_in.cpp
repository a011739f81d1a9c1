// Heap-free construction: cocd_required_size / cocd_create_in (C) and
// Optimizer::required_bytes / the storage constructor (C++). An optimizer in caller
// memory steps exactly like a heap one, reports that memory as its size, checks the
// buffer it is given, and leaves the buffer reusable; on 32-bit targets (this test also
// runs under qemu-arm) sizes beyond the address space are refused.
#include <cstring>
#include <vector>

#include "cocd/cocd.h"
#include "golden.hpp"

namespace {

bool last_error_mentions(const char* needle) {
  const bool ok = std::strstr(cocd_last_error(), needle) != nullptr;
  if (!ok) std::fprintf(stderr, "last error '%s' lacks '%s'\n", cocd_last_error(), needle);
  return ok;
}

struct Quadratic {
  float* x;
  int64_t n;
};

int quadratic(void* user, double* loss) {
  const Quadratic* q = static_cast<const Quadratic*>(user);
  double total = 0.0;
  for (int64_t i = 0; i < q->n; ++i) {
    const double d = q->x[i] - 0.1 * static_cast<double>(i % 5);
    total += (1.0 + 0.25 * static_cast<double>(i % 3)) * d * d;
  }
  *loss = total;
  return 0;
}

void c_api(bool fifo) {
  constexpr int64_t n = 40;
  std::vector<float> heap_x(n), place_x(n);
  for (int64_t i = 0; i < n; ++i) heap_x[i] = place_x[i] = 0.02f * static_cast<float>(i) - 0.3f;
  cocd_group g;
  cocd_options o;
  cocd_group_defaults(&g);
  cocd_options_defaults(&o);
  g.lr = 0.05;
  g.momentum = 0.9;
  o.compute_budget = 6;
  o.memory_budget = fifo ? 12 : 0;
  const cocd_param heap_p = {heap_x.data(), n, COCD_FLOAT32, 0};
  const cocd_param place_p = {place_x.data(), n, COCD_FLOAT32, 0};

  size_t need = 0;
  CHECK(cocd_required_size(&place_p, 1, &g, 1, &o, &need) == COCD_OK);
  // Dense/FIFO float32, central: the README's formula plus a fixed part (the objects).
  const size_t m = fifo ? 12 : n;
  const size_t formula = 4 * m + (fifo ? 4 * m : 0) + 6 * (48 + 4) + 8 * 12 + 32 * 1;
  CHECK(need > formula && need - formula < 4096);

  std::vector<uint64_t> memory(need / 8 + 2, 0);
  auto* buffer = reinterpret_cast<unsigned char*>(memory.data());
  cocd_optimizer* placed = nullptr;
  // Too small by one byte, misaligned, NULL: refused, *out untouched.
  CHECK(cocd_create_in(buffer, need - 1, &place_p, 1, &g, 1, &o, &placed) ==
        COCD_ERR_INVALID_ARGUMENT);
  CHECK(last_error_mentions("needs"));
  CHECK(cocd_create_in(buffer + 4, need, &place_p, 1, &g, 1, &o, &placed) ==
        COCD_ERR_INVALID_ARGUMENT);
  CHECK(last_error_mentions("aligned"));
  CHECK(cocd_create_in(nullptr, need, &place_p, 1, &g, 1, &o, &placed) ==
        COCD_ERR_INVALID_ARGUMENT);
  CHECK(placed == nullptr);
  // Invalid options fail in cocd_required_size as in cocd_create.
  cocd_group bad = g;
  bad.lr = -1.0;
  size_t ignored = 0;
  CHECK(cocd_required_size(&place_p, 1, &bad, 1, &o, &ignored) == COCD_ERR_INVALID_ARGUMENT);
  CHECK(last_error_mentions("lr"));

  CHECK(cocd_create_in(buffer, need, &place_p, 1, &g, 1, &o, &placed) == COCD_OK);
  CHECK(reinterpret_cast<unsigned char*>(placed) == buffer);
  size_t bytes = 0;
  CHECK(cocd_memory_bytes(placed, &bytes) == COCD_OK && bytes == need);
  cocd_optimizer* heap = nullptr;
  CHECK(cocd_create(&heap_p, 1, &g, 1, &o, &heap) == COCD_OK);
  CHECK(cocd_memory_bytes(heap, &bytes) == COCD_OK && bytes == need);

  Quadratic hq = {heap_x.data(), n}, pq = {place_x.data(), n};
  for (int t = 0; t < 25; ++t) {
    double hl = 0.0, pl = 1.0;
    CHECK(cocd_step(heap, quadratic, &hq, &hl) == COCD_OK);
    CHECK(cocd_step(placed, quadratic, &pq, &pl) == COCD_OK);
    CHECK(std::memcmp(&hl, &pl, sizeof hl) == 0);
  }
  CHECK(std::memcmp(heap_x.data(), place_x.data(), n * sizeof(float)) == 0);
  // The state images are identical too.
  size_t size = 0;
  CHECK(cocd_state_size(heap, &size) == COCD_OK);
  std::vector<unsigned char> a(size), b(size);
  CHECK(cocd_save(heap, a.data(), size, nullptr) == COCD_OK);
  CHECK(cocd_save(placed, b.data(), size, nullptr) == COCD_OK);
  CHECK(a == b);
  cocd_destroy(heap);
  cocd_destroy(placed);  // frees nothing (ASan would report a bad free)

  // The buffer is reusable: a fresh optimizer there starts from zero state.
  CHECK(cocd_create_in(buffer, need, &place_p, 1, &g, 1, &o, &placed) == COCD_OK);
  int64_t steps = -1;
  CHECK(cocd_step_count(placed, &steps) == COCD_OK && steps == 0);
  cocd_destroy(placed);
}

void cpp_api() {
  std::vector<double> heap_x(30, 0.25), place_x(30, 0.25);
  cocd::Options o;
  o.compute_budget = 4;
  o.memory_budget = 10;
  o.central_difference = false;
  const std::vector<cocd::GroupOptions> groups = {cocd::GroupOptions()};
  const std::size_t need =
      cocd::Optimizer::required_bytes({cocd::ParamSpan(place_x.data(), 30)}, groups, o);
  std::vector<uint64_t> memory(need / 8 + 1);
  cocd::Optimizer heap({cocd::ParamSpan(heap_x.data(), 30)}, groups, o);
  cocd::Optimizer placed({cocd::ParamSpan(place_x.data(), 30)}, groups, o, memory.data(), need);
  CHECK(heap.memory_bytes() == sizeof(cocd::Optimizer) + need);
  CHECK(placed.memory_bytes() == heap.memory_bytes());
  auto f = [](const std::vector<double>& x) {
    double s = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) s += (x[i] - 0.01 * static_cast<double>(i)) * x[i];
    return s;
  };
  for (int t = 0; t < 12; ++t) {
    const double hl = heap.step([&] { return f(heap_x); });
    const double pl = placed.step([&] { return f(place_x); });
    CHECK(std::memcmp(&hl, &pl, sizeof hl) == 0);
  }
  CHECK(std::memcmp(heap_x.data(), place_x.data(), 30 * sizeof(double)) == 0);
  // Moving keeps the storage; a too-small buffer is refused.
  cocd::Optimizer moved = std::move(placed);
  CHECK(moved.step_count() == 12);
  bool refused = false;
  try {
    cocd::Optimizer small({cocd::ParamSpan(place_x.data(), 30)}, groups, o, memory.data(),
                          need - 8);
  } catch (const std::invalid_argument& e) {
    refused = std::strstr(e.what(), "needs") != nullptr;
  }
  CHECK(refused);
}

// n must fit the target's size_t: 2^30 float32 coordinates need 4 GiB of address space.
void address_space() {
  float x[4] = {};
  const cocd_param huge = {x, int64_t{1} << 30, COCD_FLOAT32, 0};
  cocd_group g;
  cocd_options o;
  cocd_group_defaults(&g);
  cocd_options_defaults(&o);
  size_t need = 0;
  const int status = cocd_required_size(&huge, 1, &g, 1, &o, &need);
  if (sizeof(std::size_t) == 4) {
    CHECK(status == COCD_ERR_INVALID_ARGUMENT);
    CHECK(last_error_mentions("address space"));
  } else {
    CHECK(status == COCD_OK && need > (std::size_t{4} << 30));  // 4n bytes of buffer alone
  }
}

}  // namespace

int main() {
  c_api(false);
  c_api(true);
  cpp_api();
  address_space();
  std::printf("size_t is %zu bits; %d failures\n", sizeof(std::size_t) * 8, golden::failures);
  return golden::failures ? 1 : 0;
}

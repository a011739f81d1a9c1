// The C API under hostile input: NULL pointers, bad sizes, misaligned and overlapping
// arrays, truncated, corrupted and re-checksummed state images. Every call must return
// OK or its documented error code (never INTERNAL, never a crash), a failed call must
// change nothing, and no step may write outside the arrays it was given (checked with
// canary bytes; the sanitizer build also runs this test).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cocd/cocd.h"
#include "golden.hpp"

namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

// A fixed-seed generator: the same cases on every run and platform.
struct Rng {
  uint64_t s = 0x2545F4914F6CDD1Dull;
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  template <typename T, std::size_t N>
  T pick(const T (&pool)[N]) {
    return pool[next() % N];
  }
};

bool mentions(const char* needle) {
  const bool ok = std::strstr(cocd_last_error(), needle) != nullptr;
  if (!ok) std::fprintf(stderr, "last error '%s' lacks '%s'\n", cocd_last_error(), needle);
  return ok;
}

uint64_t fnv1a(const unsigned char* p, std::size_t size) {  // the state image's checksum
  uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

void put_u64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

void reseal(std::vector<unsigned char>& image) {  // a valid checksum over tampered bytes
  put_u64(image.data() + image.size() - 8, fnv1a(image.data(), image.size() - 8));
}

// A finite loss that depends on every byte of the arena (so steps move the parameters).
struct Arena {
  alignas(16) unsigned char bytes[3][128];
};
int arena_loss(void* user, double* loss) {
  const auto* a = static_cast<const Arena*>(user);
  *loss = static_cast<double>(fnv1a(&a->bytes[0][0], sizeof a->bytes) >> 11) * 0x1.0p-53;
  return 0;
}

std::vector<unsigned char> save(const cocd_optimizer* opt) {
  size_t size = 0;
  CHECK(cocd_state_size(opt, &size) == COCD_OK);
  std::vector<unsigned char> out(size);
  CHECK(cocd_save(opt, out.data(), out.size(), nullptr) == COCD_OK);
  return out;
}

void test_null_pointers() {
  double x[4] = {1, 2, 3, 4};
  cocd_param p = {x, 4, COCD_FLOAT64, 0};
  cocd_group g;
  cocd_options o;
  cocd_group_defaults(&g);
  cocd_options_defaults(&o);
  cocd_group_defaults(nullptr);  // no-ops, no crash
  cocd_options_defaults(nullptr);
  cocd_optimizer* opt = nullptr;
  CHECK(cocd_create(&p, 1, &g, 1, &o, &opt) == COCD_OK);
  const auto before = save(opt);
  double loss = 0;
  int64_t steps = 0;
  size_t size = 0;
  unsigned char buf[256];
  cocd_group got;
  const int invalid = COCD_ERR_INVALID_ARGUMENT;
  CHECK(cocd_create(nullptr, 1, &g, 1, &o, &opt) == invalid);
  CHECK(cocd_create(&p, 1, nullptr, 1, &o, &opt) == invalid);
  CHECK(cocd_create(&p, 1, &g, 1, nullptr, &opt) == invalid);
  CHECK(cocd_create(&p, 1, &g, 1, &o, nullptr) == invalid);
  CHECK(cocd_step(nullptr, arena_loss, nullptr, &loss) == invalid);
  CHECK(cocd_step(opt, nullptr, nullptr, &loss) == invalid);
  CHECK(cocd_get_group(nullptr, 0, &got) == invalid);
  CHECK(cocd_get_group(opt, 0, nullptr) == invalid);
  CHECK(cocd_set_group(nullptr, 0, &g) == invalid);
  CHECK(cocd_set_group(opt, 0, nullptr) == invalid);
  CHECK(cocd_step_count(nullptr, &steps) == invalid);
  CHECK(cocd_step_count(opt, nullptr) == invalid);
  CHECK(cocd_memory_bytes(nullptr, &size) == invalid);
  CHECK(cocd_memory_bytes(opt, nullptr) == invalid);
  CHECK(cocd_state_size(nullptr, &size) == invalid);
  CHECK(cocd_state_size(opt, nullptr) == invalid);
  CHECK(cocd_save(nullptr, buf, sizeof buf, &size) == invalid);
  CHECK(cocd_save(opt, nullptr, sizeof buf, &size) == invalid);
  CHECK(cocd_load(nullptr, buf, sizeof buf) == invalid);
  CHECK(cocd_load(opt, nullptr, sizeof buf) == invalid);
  CHECK(cocd_reset(nullptr) == invalid);
  CHECK(cocd_save(opt, buf, 3, &size) == invalid);  // too small a buffer
  CHECK(save(opt) == before);
  CHECK(x[0] == 1 && x[3] == 4);
  cocd_destroy(opt);
  cocd_destroy(nullptr);
}

void test_sizes_and_alignment() {
  alignas(16) unsigned char raw[64] = {};
  cocd_group g;
  cocd_options o;
  cocd_group_defaults(&g);
  cocd_options_defaults(&o);
  cocd_optimizer* const sentinel = reinterpret_cast<cocd_optimizer*>(0x1);
  auto rejects = [&](cocd_param p, const char* needle) {
    cocd_optimizer* out = sentinel;
    CHECK(cocd_create(&p, 1, &g, 1, &o, &out) == COCD_ERR_INVALID_ARGUMENT);
    CHECK(out == sentinel);
    CHECK(mentions(needle));
  };
  for (int32_t dtype = 0; dtype < 4; ++dtype) {
    rejects({raw, kMax, dtype, 0}, "numel");
    rejects({raw, kMin, dtype, 0}, "numel");
    rejects({raw, -1, dtype, 0}, "numel");
    rejects({raw, kMax / 2 + 1, dtype, 0}, "numel");  // 2^62 elements: more bytes than PTRDIFF_MAX
  }
  rejects({raw + 1, 4, COCD_FLOAT16, 0}, "aligned");
  rejects({raw + 1, 4, COCD_BFLOAT16, 0}, "aligned");
  rejects({raw + 2, 4, COCD_FLOAT32, 0}, "aligned");
  rejects({raw + 4, 4, COCD_FLOAT64, 0}, "aligned");
  rejects({raw + 2, 4, COCD_FLOAT64, 0}, "aligned");
  // Aligned starts inside the same array are fine.
  cocd_param ok[2] = {{raw + 2, 3, COCD_FLOAT16, 0}, {raw + 8, 2, COCD_FLOAT32, 0}};
  cocd_optimizer* out = nullptr;
  CHECK(cocd_create(ok, 2, &g, 1, &o, &out) == COCD_OK);
  cocd_destroy(out);
  ok[1].data = raw + 4;  // overlaps bytes 4..7 of the first span
  out = sentinel;
  CHECK(cocd_create(ok, 2, &g, 1, &o, &out) == COCD_ERR_INVALID_ARGUMENT && out == sentinel);
  CHECK(mentions("overlap"));
  cocd_group huge = g;  // lr * weight_decay overflows: x would fill with inf
  huge.lr = 1e200;
  huge.weight_decay = 1e200;
  cocd_param p = {raw, 4, COCD_FLOAT32, 0};
  CHECK(cocd_create(&p, 1, &huge, 1, &o, &out) == COCD_ERR_INVALID_ARGUMENT);
  CHECK(mentions("lr * weight_decay") && mentions("(param group 0)"));
}

// Random parameter lists and options: OK or INVALID_ARGUMENT only; whatever is accepted
// never writes outside its spans.
void test_random_configurations() {
  Rng rng;
  // Each field is drawn from its bad pool one time in 16, else from its good pool,
  // so that both sides are exercised.
  const int64_t numels[] = {0, 1, 3, 5}, bad_numels[] = {-1, kMax, kMin, kMax / 2 + 1};
  const std::size_t offsets[] = {0, 8, 16, 24}, bad_offsets[] = {1, 2, 4, 6};
  const int32_t dtypes[] = {0, 1, 2, 3}, bad_dtypes[] = {-1, 4, 99};
  const int32_t bad_groups[] = {-1, 2, 7};
  const int64_t budgets[] = {1, 1, 2, 4, 7}, bad_budgets[] = {-1, kMin, kMax};
  const double lrs[] = {0.0, 0.01, 0.5}, bad_lrs[] = {-1.0, NAN, INFINITY, 1e200};
  const double init[5] = {0.5, -1.0, 2.0, NAN, 0.25};
  int accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto bad = [&] { return rng.next() % 16 == 0; };
    Arena arena;
    for (auto& row : arena.bytes) {
      for (auto& b : row) b = static_cast<unsigned char>(rng.next() & 0x3f);  // small values
    }
    const int64_t n_params = bad() ? 0 : 1 + static_cast<int64_t>(rng.next() % 3);
    cocd_param params[3];
    for (int64_t i = 0; i < 3; ++i) {
      // One array each (disjoint) and groups in order, unless drawn bad.
      const std::size_t row = bad() ? rng.next() % 3 : static_cast<std::size_t>(i);
      params[i].data = &arena.bytes[row][bad() ? rng.pick(bad_offsets) : rng.pick(offsets)];
      params[i].numel = bad() ? rng.pick(bad_numels) : rng.pick(numels);
      params[i].dtype = bad() ? rng.pick(bad_dtypes) : rng.pick(dtypes);
      params[i].group = bad() ? rng.pick(bad_groups) : static_cast<int32_t>(i / 2);
    }
    cocd_group groups[65];
    for (auto& gr : groups) {
      cocd_group_defaults(&gr);
      gr.lr = bad() ? rng.pick(bad_lrs) : rng.pick(lrs);
      gr.weight_decay = gr.lr == 1e200 ? 1e200 : 0.0;
    }
    cocd_options o;
    cocd_options_defaults(&o);
    o.compute_budget = bad() ? rng.pick(bad_budgets) : rng.pick(budgets);
    o.memory_budget = bad() ? rng.pick(bad_budgets) : rng.pick(budgets) - 1;  // 0: n
    o.central_difference = bad() ? 2 : static_cast<int32_t>(rng.next() % 2);
    o.nonfinite = bad() ? 7 : static_cast<int32_t>(rng.next() % 2);
    if (rng.next() % 8 == 0) {
      o.init_grad = init;
      o.init_grad_count = static_cast<int64_t>(rng.next() % 5);
    }
    const int32_t n_groups = bad() ? (rng.next() % 2 ? 0 : 65) : 2;
    cocd_optimizer* const sentinel = reinterpret_cast<cocd_optimizer*>(0x1);
    cocd_optimizer* opt = sentinel;
    const int status = cocd_create(params, n_params, groups, n_groups, &o, &opt);
    CHECK(status == COCD_OK || status == COCD_ERR_INVALID_ARGUMENT);
    if (status != COCD_OK) {
      CHECK(opt == sentinel && cocd_last_error()[0] != '\0');
      continue;
    }
    ++accepted;
    // What was accepted is valid: aligned, sized, disjoint spans.
    bool writable[3][128] = {};
    for (int64_t i = 0; i < n_params; ++i) {
      const cocd_param& q = params[i];
      const std::size_t elem = q.dtype == COCD_FLOAT64 ? 8 : q.dtype == COCD_FLOAT32 ? 4 : 2;
      CHECK(q.dtype >= 0 && q.dtype <= 3 && q.numel >= 0 && q.numel <= 5);
      CHECK(reinterpret_cast<uintptr_t>(q.data) % elem == 0);
      const auto* b = static_cast<const unsigned char*>(q.data);
      const std::size_t row = static_cast<std::size_t>(b - &arena.bytes[0][0]) / 128;
      const std::size_t col = static_cast<std::size_t>(b - &arena.bytes[row][0]);
      for (std::size_t k = 0; k < static_cast<std::size_t>(q.numel) * elem; ++k) {
        CHECK(!writable[row][col + k]);  // no two spans share a byte
        writable[row][col + k] = true;
      }
    }
    Arena before = arena;
    for (int s = 0; s < 3; ++s) {
      double loss = 0;
      const int st = cocd_step(opt, arena_loss, &arena, &loss);
      CHECK(st == COCD_OK || st == COCD_ERR_NONFINITE);
    }
    for (int r = 0; r < 3; ++r) {
      for (int k = 0; k < 128; ++k) {
        if (!writable[r][k]) CHECK(arena.bytes[r][k] == before.bytes[r][k]);
      }
    }
    cocd_destroy(opt);
  }
  std::printf("random configurations: %d of 3000 accepted\n", accepted);
  CHECK(accepted > 100);  // the accepted side is exercised too
}

// A FIFO optimizer (n = 12, m = 5, B = 2) and its state image after a few steps.
struct Saved {
  Arena arena{};
  cocd_optimizer* opt = nullptr;
  std::vector<unsigned char> image;
  Saved() {
    cocd_param p = {&arena.bytes[0][0], 12, COCD_FLOAT32, 0};
    for (int i = 0; i < 12; ++i) {
      const float v = 0.25f * static_cast<float>(i) - 1.0f;
      std::memcpy(&arena.bytes[0][4 * i], &v, 4);
    }
    cocd_group g;
    cocd_options o;
    cocd_group_defaults(&g);
    cocd_options_defaults(&o);
    o.compute_budget = 2;
    o.memory_budget = 5;
    CHECK(cocd_create(&p, 1, &g, 1, &o, &opt) == COCD_OK);
    for (int s = 0; s < 4; ++s) CHECK(cocd_step(opt, arena_loss, &arena, nullptr) == COCD_OK);
    image = save(opt);
  }
  ~Saved() { cocd_destroy(opt); }
};

constexpr std::size_t kHeader = 64;
constexpr std::size_t kRing = kHeader + 5 * 4;  // after the 5 float32 buffer values

void test_state_images() {
  Saved s;
  const std::size_t size = s.image.size();
  CHECK(size == kRing + 5 * 8 + 8);
  Saved fresh;  // the target of every load: must be unchanged after a failure
  CHECK(cocd_reset(fresh.opt) == COCD_OK);
  const auto pristine = save(fresh.opt);
  auto rejected = [&](const std::vector<unsigned char>& image, const char* needle) {
    CHECK(cocd_load(fresh.opt, image.data(), image.size()) == COCD_ERR_BAD_STATE);
    CHECK(mentions(needle));
    CHECK(save(fresh.opt) == pristine);
  };
  for (std::size_t cut = 0; cut < size; ++cut) {  // truncated
    CHECK(cocd_load(fresh.opt, s.image.data(), cut) == COCD_ERR_BAD_STATE);
    CHECK(save(fresh.opt) == pristine);
  }
  auto longer = s.image;
  longer.push_back(0);
  rejected(longer, "bytes");
  for (std::size_t i = 0; i < size; ++i) {  // any single corrupted byte: bad checksum
    auto bad = s.image;
    bad[i] ^= 0x5a;
    CHECK(cocd_load(fresh.opt, bad.data(), bad.size()) == COCD_ERR_BAD_STATE);
    CHECK(save(fresh.opt) == pristine);
  }
  // Tampered fields under a valid checksum are still caught.
  auto dup = s.image;
  std::memcpy(&dup[kRing + 8], &dup[kRing], 8);  // coordinate 1 := coordinate 0
  reseal(dup);
  rejected(dup, "appears twice");
  auto far = s.image;
  put_u64(&far[kRing + 16], 1000000000);
  reseal(far);
  rejected(far, "outside [0, n)");
  auto nan = s.image;
  const float q = NAN;
  std::memcpy(&nan[kHeader + 4], &q, 4);
  reseal(nan);
  rejected(nan, "not finite");
  auto head = s.image;
  put_u64(&head[56], 5);
  reseal(head);
  rejected(head, "out-of-range");
  auto steps = s.image;  // t so large that counting on would overflow
  put_u64(&steps[48], static_cast<uint64_t>(kMax));
  reseal(steps);
  rejected(steps, "out-of-range");
  // Random multi-byte corruption, resealed: either a clean rejection or a valid state
  // whose steps stay inside the parameters.
  Rng rng;
  int loaded = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    auto img = s.image;
    const int flips = 1 + static_cast<int>(rng.next() % 3);
    for (int f = 0; f < flips; ++f) {
      // Mostly the counters and the ring (where a valid-looking value is likely).
      const std::size_t at = rng.next() % 2 ? 40 + rng.next() % 24 : kRing + rng.next() % 40;
      img[at] = static_cast<unsigned char>(rng.next() % 2 ? img[at] ^ (1u << (rng.next() % 8))
                                                          : rng.next() % 13);
    }
    reseal(img);
    Saved target;
    const auto target_before = save(target.opt);
    const int status = cocd_load(target.opt, img.data(), img.size());
    CHECK(status == COCD_OK || status == COCD_ERR_BAD_STATE);
    if (status != COCD_OK) {
      CHECK(save(target.opt) == target_before);
      continue;
    }
    ++loaded;
    CHECK(save(target.opt) == img);  // loaded exactly
    Arena before = target.arena;
    for (int st = 0; st < 3; ++st)
      CHECK(cocd_step(target.opt, arena_loss, &target.arena, nullptr) == COCD_OK);
    for (int r = 0; r < 3; ++r) {
      for (int k = 0; k < 128; ++k) {
        if (r != 0 || k >= 48) CHECK(target.arena.bytes[r][k] == before.bytes[r][k]);
      }
    }
  }
  std::printf("resealed random corruptions: %d of 2000 loaded\n", loaded);
  CHECK(loaded > 20);
  // An image at an odd address loads (it is read byte by byte).
  std::vector<unsigned char> shifted(size + 1);
  std::memcpy(shifted.data() + 1, s.image.data(), size);
  CHECK(cocd_load(fresh.opt, shifted.data() + 1, size) == COCD_OK);
  CHECK(save(fresh.opt) == s.image);
}

}  // namespace

int main() {
  test_null_pointers();
  test_sizes_and_alignment();
  test_random_configurations();
  test_state_images();
  if (golden::failures) std::fprintf(stderr, "%d failure(s)\n", golden::failures);
  return golden::failures ? 1 : 0;
}

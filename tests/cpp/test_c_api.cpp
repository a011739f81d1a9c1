// The C API: every bad argument returns an error code with a message and changes
// nothing; failed steps are undone; save/load round-trips and rejects foreign states.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cocd/cocd.h"
#include "golden.hpp"

namespace {

bool last_error_mentions(const char* needle) {
  const bool ok = std::strstr(cocd_last_error(), needle) != nullptr;
  if (!ok) std::fprintf(stderr, "last error '%s' lacks '%s'\n", cocd_last_error(), needle);
  return ok;
}

struct Problem {
  std::vector<double> x = std::vector<double>(12);
  int calls = 0;
  int fail_at = -1;  // return this evaluation's status 5
  int nan_at = -1;   // return NaN at this evaluation
  Problem() {
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::cos(0.7 * static_cast<double>(i));
  }
};

int objective(void* user, double* loss) {
  Problem* p = static_cast<Problem*>(user);
  const int call = p->calls++;
  if (call == p->fail_at) return 5;
  *loss = call == p->nan_at ? NAN : golden::objective(p->x.data(), 12, false);
  return 0;
}

std::vector<unsigned char> save(const cocd_optimizer* opt) {
  size_t size = 0;
  CHECK(cocd_state_size(opt, &size) == COCD_OK);
  std::vector<unsigned char> out(size);
  size_t written = 0;
  CHECK(cocd_save(opt, out.data(), out.size(), &written) == COCD_OK);
  CHECK(written == size);
  return out;
}

void test_create() {
  Problem p;
  cocd_param param = {p.x.data(), 12, COCD_FLOAT64, 0};
  cocd_group g;
  cocd_options o;
  cocd_group_defaults(&g);
  cocd_options_defaults(&o);
  CHECK(g.lr == 1e-2 && g.weight_decay == 0.0 && g.eps == 1e-1 && g.momentum == 1.0);
  CHECK(o.compute_budget == 1 && o.memory_budget == 0 && o.central_difference == 1);
  CHECK(o.nonfinite == COCD_NONFINITE_RAISE && o.init_grad == nullptr);

  cocd_optimizer* const sentinel = reinterpret_cast<cocd_optimizer*>(0x1);
  cocd_optimizer* out = sentinel;
  auto rejects = [&](const cocd_param* ps, int64_t np, const cocd_group* gs, int32_t ng,
                     const cocd_options* os, const char* needle) {
    out = sentinel;
    CHECK(cocd_create(ps, np, gs, ng, os, &out) == COCD_ERR_INVALID_ARGUMENT);
    CHECK(out == sentinel);
    CHECK(last_error_mentions(needle));
  };
  CHECK(cocd_create(&param, 1, &g, 1, &o, nullptr) == COCD_ERR_INVALID_ARGUMENT);
  rejects(nullptr, 1, &g, 1, &o, "empty parameter list");
  rejects(&param, 0, &g, 1, &o, "empty parameter list");
  rejects(&param, 1, nullptr, 1, &o, "groups");
  rejects(&param, 1, &g, 0, &o, "groups");
  rejects(&param, 1, &g, 1, nullptr, "options");
  cocd_options bad = o;
  bad.central_difference = 2;
  rejects(&param, 1, &g, 1, &bad, "central_difference");
  bad = o;
  bad.nonfinite = 3;
  rejects(&param, 1, &g, 1, &bad, "nonfinite");
  bad = o;
  bad.init_grad_count = 12;
  rejects(&param, 1, &g, 1, &bad, "init_grad");
  const double init[5] = {1, 2, 3, 4, 5};
  bad.init_grad = init;
  bad.init_grad_count = 5;
  rejects(&param, 1, &g, 1, &bad, "expected exactly 12");
  bad = o;
  bad.compute_budget = 0;
  rejects(&param, 1, &g, 1, &bad, "compute_budget");
  bad.compute_budget = 6;
  bad.memory_budget = 5;
  rejects(&param, 1, &g, 1, &bad, "memory_budget");
  cocd_group bad_group = g;
  bad_group.eps = 0.0;
  rejects(&param, 1, &bad_group, 1, &o, "eps");
  cocd_param bad_param = param;
  bad_param.dtype = 11;
  rejects(&bad_param, 1, &g, 1, &o, "dtype");
  bad_param = param;
  bad_param.data = nullptr;
  rejects(&bad_param, 1, &g, 1, &o, "null");
  bad_param = param;
  bad_param.group = 1;
  rejects(&bad_param, 1, &g, 1, &o, "group 1");

  CHECK(cocd_create(&param, 1, &g, 1, &o, &out) == COCD_OK);
  CHECK(out != sentinel && out != nullptr);
  size_t bytes = 0;
  CHECK(cocd_memory_bytes(out, &bytes) == COCD_OK && bytes > 12 * 8);
  CHECK(cocd_memory_bytes(nullptr, &bytes) == COCD_ERR_INVALID_ARGUMENT);
  cocd_destroy(out);
  cocd_destroy(nullptr);
  CHECK(std::string(cocd_status_string(COCD_ERR_BAD_STATE)) == "bad state");
  CHECK(std::string(cocd_status_string(42)) == "unknown status");
}

void test_step_faults() {
  Problem p;
  cocd_param param = {p.x.data(), 12, COCD_FLOAT64, 0};
  cocd_group g;
  cocd_options o;
  cocd_group_defaults(&g);
  cocd_options_defaults(&o);
  g.lr = 0.05;
  g.momentum = 0.9;
  o.compute_budget = 3;
  o.memory_budget = 7;
  cocd_optimizer* opt = nullptr;
  CHECK(cocd_create(&param, 1, &g, 1, &o, &opt) == COCD_OK);
  double loss = 0.0;
  for (int k = 0; k < 3; ++k) CHECK(cocd_step(opt, objective, &p, &loss) == COCD_OK);
  CHECK(p.calls == 18);
  int64_t steps = 0;
  CHECK(cocd_step_count(opt, &steps) == COCD_OK && steps == 3);

  const std::vector<double> x = p.x;
  const std::vector<unsigned char> state = save(opt);
  const double sentinel = -12345.0;
  loss = sentinel;
  CHECK(cocd_step(nullptr, objective, &p, &loss) == COCD_ERR_INVALID_ARGUMENT);
  CHECK(cocd_step(opt, nullptr, &p, &loss) == COCD_ERR_INVALID_ARGUMENT);
  for (int at = 0; at < 6; ++at) {
    p.calls = 0;
    p.fail_at = at;
    CHECK(cocd_step(opt, objective, &p, &loss) == COCD_ERR_OBJECTIVE);
    CHECK(last_error_mentions("returned 5"));
    CHECK(p.x == x && save(opt) == state && loss == sentinel);
    p.calls = 0;
    p.fail_at = -1;
    p.nan_at = at;
    CHECK(cocd_step(opt, objective, &p, &loss) == COCD_ERR_NONFINITE);
    CHECK(last_error_mentions("non-finite"));
    CHECK(p.x == x && save(opt) == state && loss == sentinel);
    p.nan_at = -1;
  }

  // Groups: bad index or values change nothing.
  cocd_group got;
  CHECK(cocd_get_group(opt, 1, &got) == COCD_ERR_INVALID_ARGUMENT);
  CHECK(cocd_get_group(opt, 0, nullptr) == COCD_ERR_INVALID_ARGUMENT);
  cocd_group bad = g;
  bad.momentum = 2.0;
  CHECK(cocd_set_group(opt, 0, &bad) == COCD_ERR_INVALID_ARGUMENT);
  CHECK(last_error_mentions("momentum"));
  CHECK(cocd_set_group(opt, 0, nullptr) == COCD_ERR_INVALID_ARGUMENT);
  CHECK(cocd_get_group(opt, 0, &got) == COCD_OK && got.momentum == 0.9 && got.lr == 0.05);
  bad = g;
  bad.lr = 0.01;
  CHECK(cocd_set_group(opt, 0, &bad) == COCD_OK);
  CHECK(cocd_get_group(opt, 0, &got) == COCD_OK && got.lr == 0.01);
  CHECK(cocd_set_group(opt, 0, &g) == COCD_OK);

  // Save / load: argument checks, foreign states rejected, exact resume.
  size_t written = 0;
  std::vector<unsigned char> buf(state.size());
  CHECK(cocd_save(opt, nullptr, 100, &written) == COCD_ERR_INVALID_ARGUMENT);
  CHECK(cocd_save(opt, buf.data(), buf.size() - 1, &written) == COCD_ERR_INVALID_ARGUMENT);
  CHECK(cocd_load(opt, nullptr, 10) == COCD_ERR_INVALID_ARGUMENT);
  std::vector<unsigned char> junk(state.size(), 0x5a);
  CHECK(cocd_load(opt, junk.data(), junk.size()) == COCD_ERR_BAD_STATE);
  CHECK(last_error_mentions("magic"));
  std::vector<unsigned char> corrupt = state;
  corrupt[80] ^= 0x10;
  CHECK(cocd_load(opt, corrupt.data(), corrupt.size()) == COCD_ERR_BAD_STATE);
  CHECK(last_error_mentions("checksum"));
  CHECK(save(opt) == state);

  Problem q;
  q.x = p.x;
  cocd_param qparam = {q.x.data(), 12, COCD_FLOAT64, 0};
  cocd_optimizer* twin = nullptr;
  CHECK(cocd_create(&qparam, 1, &g, 1, &o, &twin) == COCD_OK);
  CHECK(cocd_load(twin, state.data(), state.size()) == COCD_OK);
  double l1 = 0.0, l2 = 0.0;
  for (int k = 0; k < 4; ++k) {
    CHECK(cocd_step(opt, objective, &p, &l1) == COCD_OK);
    CHECK(cocd_step(twin, objective, &q, &l2) == COCD_OK);
    CHECK(l1 == l2);
  }
  CHECK(p.x == q.x && save(opt) == save(twin));

  CHECK(cocd_reset(nullptr) == COCD_ERR_INVALID_ARGUMENT);
  CHECK(cocd_reset(opt) == COCD_OK);
  CHECK(cocd_step_count(opt, &steps) == COCD_OK && steps == 0);
  cocd_destroy(opt);
  cocd_destroy(twin);
}

}  // namespace

int main() {
  test_create();
  test_step_faults();
  if (golden::failures) std::fprintf(stderr, "%d failure(s)\n", golden::failures);
  return golden::failures ? 1 : 0;
}

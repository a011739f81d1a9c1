/* Train a small MLP with CoCD through the C API: no Python, no libtorch.
 *
 * A fixed "teacher" network (4 -> 8 tanh -> 1) labels synthetic inputs; a student of
 * the same shape learns to imitate it from loss values alone (zeroth order). Each step
 * evaluates the mini-batch loss 2B times, each time with one weight perturbed in place.
 *   train_mlp_c [epochs]     exits 1 unless the loss went down
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "cocd/cocd.h"

enum { D = 4, H = 8, N = 256, BATCH = 32 };

typedef struct mlp {
  float w1[H * D], b1[H], w2[H], b2[1];
} mlp;

/* A fixed linear congruential generator: the same data on every platform. */
static float uniform(uint32_t* state) {
  *state = *state * 1664525u + 1013904223u;
  return (float)(*state >> 8) / 16777216.0f * 2.0f - 1.0f;
}

static void init(mlp* m, uint32_t seed, float scale) {
  uint32_t s = seed;
  for (int i = 0; i < H * D; ++i) m->w1[i] = scale * uniform(&s);
  for (int i = 0; i < H; ++i) m->b1[i] = 0.5f * scale * uniform(&s);
  for (int i = 0; i < H; ++i) m->w2[i] = scale * uniform(&s);
  m->b2[0] = 0.0f;
}

static float forward(const mlp* m, const float* x) {
  float out = m->b2[0];
  for (int j = 0; j < H; ++j) {
    float a = m->b1[j];
    for (int k = 0; k < D; ++k) a += m->w1[j * D + k] * x[k];
    out += m->w2[j] * tanhf(a);
  }
  return out;
}

/* The objective: mean squared error of the student on one mini-batch. */
typedef struct batch {
  const mlp* student;
  const float* x;
  const float* y;
  int count;
} batch;

static int mse(void* user_data, double* loss) {
  const batch* b = (const batch*)user_data;
  double total = 0.0;
  for (int i = 0; i < b->count; ++i) {
    const double e = (double)forward(b->student, b->x + i * D) - (double)b->y[i];
    total += e * e;
  }
  *loss = total / b->count;
  return 0;
}

static int check(int status, const char* what) {
  if (status != COCD_OK) {
    fprintf(stderr, "%s failed: %s (%s)\n", what, cocd_status_string(status), cocd_last_error());
    exit(1);
  }
  return status;
}

int main(int argc, char** argv) {
  const int epochs = argc > 1 ? atoi(argv[1]) : 40;
  static float x[N * D], y[N];
  mlp teacher, student;
  init(&teacher, 7u, 1.0f);
  init(&student, 12345u, 0.3f);
  uint32_t s = 99u;
  for (int i = 0; i < N * D; ++i) x[i] = uniform(&s);
  for (int i = 0; i < N; ++i) y[i] = forward(&teacher, x + i * D);

  /* The student's four arrays, one param group, concatenated into x in this order. */
  const cocd_param params[4] = {{student.w1, H * D, COCD_FLOAT32, 0},
                                {student.b1, H, COCD_FLOAT32, 0},
                                {student.w2, H, COCD_FLOAT32, 0},
                                {student.b2, 1, COCD_FLOAT32, 0}};
  cocd_group group;
  cocd_group_defaults(&group);
  group.lr = 0.02;
  group.eps = 1e-2;
  group.momentum = 0.95;
  cocd_options options;
  cocd_options_defaults(&options);
  options.compute_budget = 8; /* B: coordinates refreshed per step (16 evaluations) */
  cocd_optimizer* opt = NULL;
  check(cocd_create(params, 4, &group, 1, &options, &opt), "cocd_create");
  size_t bytes = 0;
  check(cocd_memory_bytes(opt, &bytes), "cocd_memory_bytes");
  printf("CoCD (C API): %d parameters, optimizer memory %zu bytes\n", H * D + 2 * H + 1, bytes);

  batch all = {&student, x, y, N};
  double first = 0.0, last = 0.0;
  mse(&all, &first);
  printf("epoch %3d  loss %.6f\n", 0, first);
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    for (int start = 0; start < N; start += BATCH) {
      batch b = {&student, x + start * D, y + start, BATCH};
      check(cocd_step(opt, mse, &b, NULL), "cocd_step");
    }
    mse(&all, &last);
    printf("epoch %3d  loss %.6f\n", epoch, last);
  }
  cocd_destroy(opt);
  return last < first ? 0 : 1;
}

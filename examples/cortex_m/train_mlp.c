/* CoCD on a microcontroller: a 2-6-1 MLP (25 float32 parameters) learns
 * y = x0*x1 + x0/2 - x1^2/4 from 32 samples held in flash. No heap: the optimizer lives
 * in a static buffer sized by cocd_required_size(). The same file builds for the
 * Cortex-M4F (startup_m4.c: output over semihosting) and for the host (host.c: stdout);
 * both print the same losses, bit for bit.
 *
 * example_main(1) instead runs one of each measured operation between marker calls,
 * for instruction counting (benchmarks/footprint.py): a loss evaluation, a CoCD step
 * and a plain SGD step (hand-written backprop) on the same model. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cocd/cocd.h"
#include "example.h"

#define D 2
#define H 6
#define N 32
#define NPARAM (H * D + H + H + 1)
#define STEPS 300
#define PRINT_EVERY 25

/* x0, x1, y: an 8 x 4 grid on [-0.875, 0.875] x [-0.75, 0.75]. */
static const float kData[N][3] = {
    {-0.875f, -0.75f, 0.078125f},  {-0.875f, -0.25f, -0.234375f}, {-0.875f, 0.25f, -0.671875f},
    {-0.875f, 0.75f, -1.234375f},  {-0.625f, -0.75f, 0.015625f},  {-0.625f, -0.25f, -0.171875f},
    {-0.625f, 0.25f, -0.484375f},  {-0.625f, 0.75f, -0.921875f},  {-0.375f, -0.75f, -0.046875f},
    {-0.375f, -0.25f, -0.109375f}, {-0.375f, 0.25f, -0.296875f},  {-0.375f, 0.75f, -0.609375f},
    {-0.125f, -0.75f, -0.109375f}, {-0.125f, -0.25f, -0.046875f}, {-0.125f, 0.25f, -0.109375f},
    {-0.125f, 0.75f, -0.296875f},  {0.125f, -0.75f, -0.171875f},  {0.125f, -0.25f, 0.015625f},
    {0.125f, 0.25f, 0.078125f},    {0.125f, 0.75f, 0.015625f},    {0.375f, -0.75f, -0.234375f},
    {0.375f, -0.25f, 0.078125f},   {0.375f, 0.25f, 0.265625f},    {0.375f, 0.75f, 0.328125f},
    {0.625f, -0.75f, -0.296875f},  {0.625f, -0.25f, 0.140625f},   {0.625f, 0.25f, 0.453125f},
    {0.625f, 0.75f, 0.640625f},    {0.875f, -0.75f, -0.359375f},  {0.875f, -0.25f, 0.203125f},
    {0.875f, 0.25f, 0.640625f},    {0.875f, 0.75f, 0.953125f},
};

/* The model's parameters: the optimizer's four arrays (25 coordinates). */
static float w1[H * D], b1[H], w2[H], b2[1];

/* The optimizer's memory: 8-byte aligned, checked against cocd_required_size(). */
static uint64_t optimizer_memory[3072 / sizeof(uint64_t)];

static float softsign(float z) { return z / (1.0f + (z < 0 ? -z : z)); }

static float predict(const float* x, float* hidden) {
  float out = b2[0];
  for (int j = 0; j < H; ++j) {
    const float z = w1[j * D] * x[0] + w1[j * D + 1] * x[1] + b1[j];
    const float h = softsign(z);
    if (hidden != NULL) hidden[j] = z;
    out += w2[j] * h;
  }
  return out;
}

/* The objective: mean squared error over all 32 samples. */
static int mse(void* unused, double* loss) {
  (void)unused;
  float total = 0.0f;
  for (int i = 0; i < N; ++i) {
    const float e = predict(kData[i], NULL) - kData[i][2];
    total += e * e;
  }
  *loss = (double)(total / N);
  return 0;
}

/* The baseline: one plain SGD step, gradient by backpropagation. */
static void sgd_step(float lr) {
  float gw1[H * D] = {0}, gb1[H] = {0}, gw2[H] = {0}, gb2 = 0.0f;
  for (int i = 0; i < N; ++i) {
    float z[H];
    const float e = predict(kData[i], z) - kData[i][2];
    const float de = 2.0f * e / N;
    gb2 += de;
    for (int j = 0; j < H; ++j) {
      const float a = 1.0f + (z[j] < 0 ? -z[j] : z[j]);
      gw2[j] += de * (z[j] / a);
      const float dz = de * w2[j] / (a * a); /* softsign'(z) = 1 / (1 + |z|)^2 */
      gw1[j * D] += dz * kData[i][0];
      gw1[j * D + 1] += dz * kData[i][1];
      gb1[j] += dz;
    }
  }
  for (int k = 0; k < H * D; ++k) w1[k] -= lr * gw1[k];
  for (int j = 0; j < H; ++j) b1[j] -= lr * gb1[j], w2[j] -= lr * gw2[j];
  b2[0] -= lr * gb2;
}

/* Deterministic initial weights in [-scale, scale) from an integer generator. */
static void init_model(void) {
  uint32_t s = 2024u;
  float* arrays[4] = {w1, b1, w2, b2};
  const int sizes[4] = {H * D, H, H, 1};
  for (int a = 0; a < 4; ++a) {
    for (int k = 0; k < sizes[a]; ++k) {
      s = s * 1664525u + 1013904223u;
      arrays[a][k] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 1.5f;
    }
  }
}

/* Text without printf: decimal with 9 digits after the point, and the exact bits. */
static void print_loss(int step, double loss) {
  char line[96];
  char* p = line;
  const char* head = "step ";
  while (*head) *p++ = *head++;
  char digits[12];
  int k = 0;
  do digits[k++] = (char)('0' + step % 10), step /= 10;
  while (step > 0);
  while (k > 0) *p++ = digits[--k];
  const char* mid = "  loss ";
  while (*mid) *p++ = *mid++;
  uint64_t fixed = (uint64_t)(loss * 1e9 + 0.5); /* losses here are < 1000 */
  uint64_t whole = fixed / 1000000000u, frac = fixed % 1000000000u;
  k = 0;
  do digits[k++] = (char)('0' + whole % 10), whole /= 10;
  while (whole > 0);
  while (k > 0) *p++ = digits[--k];
  *p++ = '.';
  for (uint64_t d = 100000000u; d > 0; d /= 10) *p++ = (char)('0' + frac / d % 10);
  const char* bits = "  bits 0x";
  while (*bits) *p++ = *bits++;
  uint64_t u;
  memcpy(&u, &loss, sizeof u);
  for (int shift = 60; shift >= 0; shift -= 4) *p++ = "0123456789abcdef"[(u >> shift) & 15];
  *p++ = '\n';
  *p = '\0';
  example_write(line);
}

static void print_number(const char* label, uint32_t value) {
  char line[80];
  char digits[12];
  char* p = line;
  while (*label) *p++ = *label++;
  int k = 0;
  do digits[k++] = (char)('0' + value % 10), value /= 10;
  while (value > 0);
  while (k > 0) *p++ = digits[--k];
  *p++ = '\n';
  *p = '\0';
  example_write(line);
}

/* The measured operations: each called once between marks (noinline, so profilers see
 * them as functions too). */
static cocd_optimizer* g_opt;
static volatile double g_sink; /* keeps the measured loss (and its call) alive */
__attribute__((noinline)) void measured_loss(void) {
  double loss;
  mse(NULL, &loss);
  g_sink = loss;
}
__attribute__((noinline)) void measured_cocd_step(void) { cocd_step(g_opt, mse, NULL, NULL); }
__attribute__((noinline)) void measured_sgd_step(void) { sgd_step(0.05f); }
__attribute__((noinline)) void measure_mark(int which) { __asm__ volatile("" ::"r"(which)); }

int example_main(int measure_only) {
  init_model();
  const cocd_param params[4] = {{w1, H * D, COCD_FLOAT32, 0},
                                {b1, H, COCD_FLOAT32, 0},
                                {w2, H, COCD_FLOAT32, 0},
                                {b2, 1, COCD_FLOAT32, 0}};
  cocd_group group;
  cocd_group_defaults(&group);
  group.lr = 0.05;
  group.eps = 1e-2;
  group.momentum = 0.9;
  cocd_options options;
  cocd_options_defaults(&options);
  options.compute_budget = 5; /* B: 5 of the 25 coordinates per step, 10 evaluations */
  size_t need = 0;
  if (cocd_required_size(params, 4, &group, 1, &options, &need) != COCD_OK ||
      need > sizeof optimizer_memory ||
      cocd_create_in(optimizer_memory, sizeof optimizer_memory, params, 4, &group, 1, &options,
                     &g_opt) != COCD_OK) {
    example_write("cocd setup failed: ");
    example_write(cocd_last_error());
    example_write("\n");
    return 1;
  }

  if (measure_only) {
    cocd_step(g_opt, mse, NULL, NULL); /* warm-up: the first step touches everything once */
    measure_mark(0), measure_mark(1);
    measure_mark(2), measured_loss(), measure_mark(3);
    measure_mark(4), measured_cocd_step(), measure_mark(5);
    measure_mark(6), measured_sgd_step(), measure_mark(7);
    return 0;
  }

  print_number("CoCD on a 2-6-1 MLP: parameters ", NPARAM);
  print_number("optimizer memory (cocd_required_size), bytes: ", (uint32_t)need);
  double loss = 0.0, first = 0.0;
  mse(NULL, &first);
  print_loss(0, first);
  for (int step = 1; step <= STEPS; ++step) {
    if (cocd_step(g_opt, mse, NULL, &loss) != COCD_OK) {
      example_write(cocd_last_error());
      example_write("\n");
      return 1;
    }
    if (step % PRINT_EVERY == 0) {
      mse(NULL, &loss);
      print_loss(step, loss);
    }
  }
  cocd_destroy(g_opt); /* frees nothing: the memory is ours */
  return loss < first / 4 ? 0 : 1;
}

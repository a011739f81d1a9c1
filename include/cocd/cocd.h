/* CoCD C API: the optimizer of docs/ALGORITHM.md over caller-owned parameter arrays.
 *
 * Every function returns a cocd_status; on failure cocd_last_error() describes it
 * (per thread) and nothing was changed: no argument, parameter or optimizer state.
 * No exception crosses this boundary. A step allocates no memory.
 *
 *   cocd_param p = {weights, 100, COCD_FLOAT32, 0};
 *   cocd_group g;  cocd_options o;  cocd_optimizer* opt;
 *   cocd_group_defaults(&g);  cocd_options_defaults(&o);
 *   if (cocd_create(&p, 1, &g, 1, &o, &opt) != COCD_OK) puts(cocd_last_error());
 *   cocd_step(opt, my_objective, my_data, &loss);   (int my_objective(void*, double*))
 *   cocd_destroy(opt);
 */
#ifndef COCD_COCD_H_
#define COCD_COCD_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cocd_status {
  COCD_OK = 0,
  COCD_ERR_INVALID_ARGUMENT = 1, /* null pointer, bad size or invalid option */
  COCD_ERR_OBJECTIVE = 2,        /* the objective returned non-zero; step undone */
  COCD_ERR_NONFINITE = 3,        /* non-finite loss (nonfinite = RAISE); step undone */
  COCD_ERR_BAD_STATE = 4,        /* cocd_load: not a state of this optimizer */
  COCD_ERR_OUT_OF_MEMORY = 5,
  COCD_ERR_INTERNAL = 6
} cocd_status;

/* Parameter storage: fp16 and bf16 arrays hold raw 16-bit patterns (uint16_t). */
typedef enum cocd_dtype {
  COCD_FLOAT16 = 0,
  COCD_BFLOAT16 = 1,
  COCD_FLOAT32 = 2,
  COCD_FLOAT64 = 3
} cocd_dtype;

typedef enum cocd_nonfinite { COCD_NONFINITE_RAISE = 0, COCD_NONFINITE_ZERO = 1 } cocd_nonfinite;

/* A caller-owned contiguous array; valid and unmoved while the optimizer lives.
 * Arrays are concatenated in order into x; their groups must be non-decreasing. */
typedef struct cocd_param {
  void* data;
  int64_t numel;
  int32_t dtype; /* cocd_dtype */
  int32_t group; /* index into the groups passed to cocd_create */
} cocd_param;

/* Per-group hyperparameters; defaults lr 1e-2, weight_decay 0, eps 1e-1, momentum 1. */
typedef struct cocd_group {
  double lr;           /* finite, >= 0 */
  double weight_decay; /* finite, >= 0 */
  double eps;          /* finite, > 0 */
  double momentum;     /* in [0, 1] */
} cocd_group;

/* Optimizer-wide options. */
typedef struct cocd_options {
  int64_t compute_budget;     /* B >= 1, clamped to n (default 1) */
  int64_t memory_budget;      /* m; 0 means n; clamped to n; >= B (default 0) */
  int32_t central_difference; /* 1 central (default), 0 forward */
  int32_t nonfinite;          /* cocd_nonfinite (default RAISE) */
  const double* init_grad;    /* NULL, or init_grad_count == m finite values (copied) */
  int64_t init_grad_count;
} cocd_options;

typedef struct cocd_optimizer cocd_optimizer;

/* The loss at the current (perturbed) parameters: write *loss, return 0; any other
 * return value aborts the step, which restores x and fails with COCD_ERR_OBJECTIVE. */
typedef int (*cocd_objective)(void* user_data, double* loss);

void cocd_group_defaults(cocd_group* group);
void cocd_options_defaults(cocd_options* options);

/* Allocates all the optimizer's memory; *out is set only on success. */
int cocd_create(const cocd_param* params, int64_t n_params, const cocd_group* groups,
                int32_t n_groups, const cocd_options* options, cocd_optimizer** out);

/* Without a heap: cocd_required_size checks the arguments as cocd_create does and
 * writes the bytes the optimizer needs; cocd_create_in builds it in the caller's
 * `buffer` (8-byte aligned, at least that size, unmoved while the optimizer lives) and
 * allocates nothing. cocd_destroy then releases nothing but the optimizer.
 *   static uint64_t memory[512];   (4 KiB, 8-byte aligned)
 *   cocd_required_size(p, 1, &g, 1, &o, &size);   (size <= sizeof memory)
 *   cocd_create_in(memory, sizeof memory, p, 1, &g, 1, &o, &opt);            */
int cocd_required_size(const cocd_param* params, int64_t n_params, const cocd_group* groups,
                       int32_t n_groups, const cocd_options* options, size_t* size);
int cocd_create_in(void* buffer, size_t size, const cocd_param* params, int64_t n_params,
                   const cocd_group* groups, int32_t n_groups, const cocd_options* options,
                   cocd_optimizer** out);

/* One step; *loss (may be NULL) receives the loss estimate: f(x) with forward
 * differences, the block mean of (f(x+eps) + f(x-eps)) / 2 with central ones. */
int cocd_step(cocd_optimizer* opt, cocd_objective objective, void* user_data, double* loss);

int cocd_get_group(const cocd_optimizer* opt, int32_t index, cocd_group* group);
int cocd_set_group(cocd_optimizer* opt, int32_t index, const cocd_group* group);

int cocd_step_count(const cocd_optimizer* opt, int64_t* steps);
/* Bytes held by the optimizer (state and bookkeeping), not counting the parameters. */
int cocd_memory_bytes(const cocd_optimizer* opt, size_t* bytes);

/* State save/load: a versioned byte image, checked in full on load. */
int cocd_state_size(const cocd_optimizer* opt, size_t* size);
int cocd_save(const cocd_optimizer* opt, void* buffer, size_t capacity, size_t* written);
int cocd_load(cocd_optimizer* opt, const void* buffer, size_t size);

/* Zero the buffer and the counters; options are kept. */
int cocd_reset(cocd_optimizer* opt);

void cocd_destroy(cocd_optimizer* opt); /* NULL is a no-op */

/* The message of this thread's last failed call ("" if none); valid until the next call. */
const char* cocd_last_error(void);
const char* cocd_status_string(int status);

#ifdef __cplusplus
}
#endif

#endif /* COCD_COCD_H_ */

// CoCD kernels: torch-free declarations shared by the CPU and CUDA builds.
//
// Everything here takes raw pointers, element counts and (for CUDA) a stream, so the
// same sources build inside the PyTorch extension and, from CMakeLists.txt, without
// libtorch for on-device use. Indices and counts are 64-bit throughout.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define COCD_HD __host__ __device__ __forceinline__
#else
#define COCD_HD inline
#endif

namespace cocd {

// Storage dtypes of parameters (and of the loss a closure returns).
enum DType : int32_t { kHalf = 0, kBFloat16 = 1, kFloat = 2, kDouble = 3 };

// ParamRef::meta holds the dtype in its low byte and the param group above it.
constexpr int kGroupShift = 8;

// One row of the parameter table: where a parameter's elements live and which
// coordinates they are. The table is an int64 [P, 4] tensor on the parameters'
// device, built once and rebuilt only when a parameter's storage moves. Rows are in
// coordinate order, so a coordinate's row is found by binary search on `start`.
struct ParamRef {
  int64_t ptr;    // address of element 0 (contiguous row-major storage)
  int64_t start;  // first coordinate of this parameter in the flat vector x
  int64_t numel;
  int64_t meta;  // dtype | group << kGroupShift
};
static_assert(sizeof(ParamRef) == 4 * sizeof(int64_t), "ParamRef is a row of int64[P, 4]");

// One coordinate of the step's block (an int64 [B, 6] tensor). plan() fills it from
// the unperturbed x, so every evaluation of the step perturbs the same base point and
// restoring writes back the saved bits: never x + eps - eps.
struct Slot {
  int64_t param;   // row of the parameter table
  int64_t offset;  // element inside that parameter
  uint64_t saved;  // original value, raw bits in the parameter's dtype
  uint64_t plus;   // round(x + eps), raw bits
  uint64_t minus;  // round(x - eps) (central) or the original bits (forward)
  double h;        // realised step plus - minus, exact in float64
};
static_assert(sizeof(Slot) == 6 * sizeof(int64_t), "Slot is a row of int64[B, 6]");

// One param group's hyperparameters: row g of a float64 [G, 4] tensor (one row per
// group, on the parameters' device). The kernels read the rows through a pointer, so a
// step captured in a CUDA graph replays with whatever values the tensor holds then.
struct HyperRow {
  double lr;
  double weight_decay;
  double eps;
  double momentum;
};
static_assert(sizeof(HyperRow) == 4 * sizeof(double), "HyperRow is a row of float64[G, 4]");

// The central-difference loss estimate is the mean of the B values (f+ + f-)/2, summed
// in one order on every device so that CPU and CUDA agree bit for bit: value j is added,
// in order of j, to lane j mod kSumLanes (starting from 0.0), then the lanes are summed
// as a tree, lane t += lane t + s for s = kSumLanes/2, ..., 2, 1; lane 0 holds the sum.
// The CUDA kernel runs one thread per lane.
constexpr int kSumLanes = 256;

// Evaluation k of a step: which slot it perturbs and in which direction.
// Central: k = 2j is x_j + eps, k = 2j + 1 is x_j - eps. Forward: k = 0 is f(x) and
// k = j + 1 is x_j + eps. Returns -1 for "no perturbation" (and for k outside [0, E)).
COCD_HD int64_t eval_slot(int64_t k, int64_t n_eval, bool central) {
  if (k < 0 || k >= n_eval) return -1;
  return central ? k / 2 : k - 1;
}

// Whether evaluation k is at x - eps (central only).
COCD_HD bool eval_minus(int64_t k, bool central) { return central && k % 2 == 1; }

// The evaluation of slot j at x + eps (``minus``: x - eps, central only): eval_slot's
// inverse. These three functions are the evaluation layout on the kernel side.
COCD_HD int64_t eval_index(int64_t j, bool minus, bool central) {
  return central ? 2 * j + (minus ? 1 : 0) : j + 1;
}

// ---------------------------------------------------------------------------- CPU
namespace cpu {

// Fill the block's slots for coordinates c, c+1, ..., c+B-1 (mod n).
void plan(Slot* slots, int64_t B, const ParamRef* table, int64_t P, int64_t c, int64_t n,
          const HyperRow* hyper, bool central);

// Finish evaluation `from` (store its loss if `loss` is non-null, restore its
// coordinate unless `to` perturbs the same one) and start evaluation `to`.
void advance(double* losses, int64_t n_eval, const Slot* slots, const ParamRef* table,
             const void* loss, DType loss_dtype, int64_t from, int64_t to, bool central);

// Estimates g (acc_t = float or double) from the losses; writes the returned loss
// estimate to *loss_out and the number of non-finite estimates to *bad. With
// zero_nonfinite, such estimates are stored as 0.
template <typename acc_t>
void finite_difference(acc_t* g, acc_t* loss_out, int32_t* bad, const double* losses,
                       const Slot* slots, int64_t B, bool central, bool zero_nonfinite);

// Dense decay + refresh + descend over every parameter of the table (P rows, the
// buffer v holding one entry per coordinate): v <- momentum*v except the fresh block
// [c, c+B) mod n, where v <- g; x <- x*(1 - lr*wd) - lr*v, with each parameter's group
// row of `hyper`. One pass over x and v.
template <typename acc_t>
void dense_update(const ParamRef* table, int64_t P, acc_t* v, const acc_t* g, int64_t c, int64_t n,
                  int64_t B, const HyperRow* hyper);

// FIFO decay + push + scatter-descend in one pass over the ring of m entries. The B
// fresh entries go to ring slots head, head+1, ... (mod m) with coordinates c, c+1, ...
// coord_t is int64_t (the torch ops) or int32_t (the on-device core, n < 2^31).
template <typename acc_t, typename coord_t>
void fifo_update(coord_t* coords, acc_t* vals, int64_t m, const acc_t* g, int64_t B,
                 const ParamRef* table, int64_t P, int64_t head, int64_t c, int64_t n,
                 const HyperRow* hyper);

}  // namespace cpu
}  // namespace cocd

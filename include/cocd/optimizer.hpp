// cocd::Optimizer: CoCD (docs/ALGORITHM.md) over caller-owned parameter arrays, with
// no dependency beyond the C++ standard library. The C API (cocd/cocd.h) wraps it.
//
//   float w[64], b[8];
//   cocd::Optimizer opt({cocd::ParamSpan(w, 64), cocd::ParamSpan(b, 8)}, {cocd::GroupOptions()});
//   double loss = opt.step([&] { return my_loss(w, b); });
//
// The objective is called 2B times per step (B + 1 with forward differences), each
// time with one coordinate of the parameters perturbed in place; it must compute the
// same function at every call of one step. After step() the parameters hold the
// updated values.
//
// An Optimizer is not thread-safe (one step at a time), and a moved-from one may only
// be destroyed or assigned to.
//
// Errors: invalid arguments throw std::invalid_argument naming the bad value; a
// non-finite loss in NonFinite::kRaise mode throws cocd::NonFiniteError; a state
// buffer that does not fit this optimizer throws cocd::StateError. In every error
// case the parameters and the optimizer are exactly as before the call. A library
// built without exceptions (bare metal) reports errors through the C API's status
// codes; an error in a C++ API call traps there.
//
// Without a heap: required_bytes() says how much storage an optimizer needs and the
// storage constructor builds it there, allocating nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

namespace cocd {

namespace detail {
struct Access;  // the C API's entry to construction from plain arrays
}  // namespace detail

// Storage type of a parameter array. fp16 and bf16 arrays hold the raw 16-bit
// patterns (uint16_t); estimates and the buffer are float32 for them.
enum class ScalarType : int32_t { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2, kFloat64 = 3 };

// A caller-owned, contiguous parameter array. It must stay valid (and not move) for
// the optimizer's lifetime. Spans are concatenated in the order given to form the
// coordinate vector x; their groups must be non-decreasing (0, 0, 1, 2, 2, ...).
struct ParamSpan {
  void* data = nullptr;
  int64_t numel = 0;
  ScalarType dtype = ScalarType::kFloat32;
  int32_t group = 0;

  ParamSpan() = default;
  ParamSpan(float* p, int64_t count, int32_t g = 0)
      : data(p), numel(count), dtype(ScalarType::kFloat32), group(g) {}
  ParamSpan(double* p, int64_t count, int32_t g = 0)
      : data(p), numel(count), dtype(ScalarType::kFloat64), group(g) {}
  ParamSpan(void* p, int64_t count, ScalarType type, int32_t g = 0)
      : data(p), numel(count), dtype(type), group(g) {}
};

// Per-group hyperparameters (ALGORITHM.md, "Options"); changeable between steps.
struct GroupOptions {
  double lr = 1e-2;           // finite, >= 0
  double weight_decay = 0.0;  // finite, >= 0; x <- x (1 - lr wd) - lr v
  double eps = 1e-1;          // finite, > 0; finite-difference radius
  double momentum = 1.0;      // in [0, 1]; decay of stored estimates (0: BCCD)
};

// What a non-finite loss or estimate does: kRaise fails the step (NonFiniteError,
// nothing changed); kZero refreshes such coordinates with 0.
enum class NonFinite : int32_t { kRaise = 0, kZero = 1 };

// Optimizer-wide options, fixed at construction.
struct Options {
  int64_t compute_budget = 1;  // B >= 1, clamped to n
  int64_t memory_budget = 0;   // m; 0 means n; clamped to n; must be >= B. m < n: FIFO mode
  bool central_difference = true;
  NonFinite nonfinite = NonFinite::kRaise;
  std::vector<double> init_grad;  // empty: zeros; else exactly m finite values
};

class NonFiniteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class StateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Optimizer {
 public:
  // All memory is allocated here (see memory_bytes()); step() allocates nothing.
  Optimizer(const std::vector<ParamSpan>& params, const std::vector<GroupOptions>& groups,
            const Options& options = Options());
  // The same optimizer in caller-owned `storage` (8-byte aligned, at least
  // required_bytes() long, outliving the optimizer): nothing is allocated, ever.
  Optimizer(const std::vector<ParamSpan>& params, const std::vector<GroupOptions>& groups,
            const Options& options, void* storage, std::size_t storage_bytes);
  // Checks the arguments as the constructor does and returns the storage they need.
  static std::size_t required_bytes(const std::vector<ParamSpan>& params,
                                    const std::vector<GroupOptions>& groups,
                                    const Options& options = Options());
  ~Optimizer();
  Optimizer(Optimizer&&) noexcept;
  Optimizer& operator=(Optimizer&&) noexcept;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One CoCD step with `objective()` -> a loss convertible to double. Returns the
  // loss estimate: f(x) (forward) or the block mean of (f(x+eps) + f(x-eps)) / 2
  // (central). An exception from the objective propagates after x is restored; the
  // optimizer state is then unchanged.
  template <typename F>
  double step(F&& objective);

  // The same step for callers that report failure by return value (the C API): the
  // objective writes the loss and returns true, or returns false to abort the step,
  // which then returns false with x and the state exactly as before.
  using ObjectiveFn = bool (*)(void* context, double* loss);
  bool step(ObjectiveFn objective, void* context, double* loss = nullptr);

  GroupOptions group(int32_t g) const;
  void set_group(int32_t g, const GroupOptions& options);  // takes effect at the next step
  int32_t num_groups() const;

  int64_t size() const;            // n
  int64_t compute_budget() const;  // B after clamping
  int64_t memory_budget() const;   // m after clamping
  bool fifo() const;               // m < n
  bool central_difference() const;
  NonFinite nonfinite() const;
  int64_t step_count() const;       // t
  int64_t next_coordinate() const;  // c
  int64_t head() const;             // FIFO: the ring slot written next (0 in dense mode)

  ScalarType buffer_type() const;  // kFloat32, or kFloat64 when any parameter is float64
  const void* buffer() const;      // the m stored estimates, of buffer_type()
  const int32_t* coords() const;   // FIFO: the m ring coordinates; nullptr in dense mode

  // Bytes this optimizer holds (its storage and the object), excluding the caller's
  // parameters: sizeof(Optimizer) + required_bytes().
  std::size_t memory_bytes() const;

  // State: a versioned little-endian byte image (buffer, ring, c, t, head and the
  // options it depends on); the parameters themselves are the caller's to save.
  std::size_t state_size() const;
  std::size_t save_state(void* out, std::size_t capacity) const;  // returns bytes written
  std::vector<unsigned char> save_state() const;
  void load_state(const void* data, std::size_t size);  // checks everything first

  void reset();  // zero the buffer, c = t = head = 0, ring back to 0..m-1; options kept

 private:
  struct Impl;
  Impl* impl_ = nullptr;  // in its storage block, which it frees when it owns it
  explicit Optimizer(Impl* impl) : impl_(impl) {}
  friend struct detail::Access;
};

template <typename F>
double Optimizer::step(F&& objective) {
  using Fn = std::remove_reference_t<F>;
  if constexpr (std::is_function_v<Fn>) {  // a plain function, passed by name
    Fn* function = objective;
    return step([function] { return function(); });
  } else {
    // A non-owning trampoline: no std::function, so a step allocates nothing.
    const ObjectiveFn call = [](void* context, double* loss) {
      *loss = static_cast<double>((*static_cast<Fn*>(context))());
      return true;
    };
    double loss = 0.0;
    step(call, const_cast<void*>(static_cast<const void*>(std::addressof(objective))), &loss);
    return loss;
  }
}

}  // namespace cocd

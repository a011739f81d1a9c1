// The C API (include/cocd/cocd.h) over cocd::Optimizer. Every entry point checks its
// pointers, then runs the C++ call inside guard(), which turns any exception into a
// status code and a per-thread message: no exception crosses the C boundary. Built
// without exceptions (bare metal), the core reports errors through report_error(),
// which jumps back to the guard of the running call.
#include "cocd/cocd.h"

#include <csetjmp>
#include <cstdlib>
#include <new>
#include <stdexcept>

#include "cocd/optimizer.hpp"
#include "internal.h"
#include "text.h"

// An optimizer from cocd_create or cocd_create_in: this header, then (at kHeaderBytes)
// the optimizer's own block. `release` frees the whole block (std::free), or is null
// for caller memory: then a program that only creates in place links no allocator.
struct cocd_optimizer {
  cocd::Optimizer opt;
  void (*release)(void*);
};

namespace {

constexpr std::size_t kAlign = cocd::detail::kStorageAlign;
constexpr std::size_t kHeaderBytes = (sizeof(cocd_optimizer) + kAlign - 1) / kAlign * kAlign;

// A fixed buffer: reporting an error must not allocate (nor fail for lack of memory).
// Bare-metal builds have one thread and no TLS runtime.
#if COCD_BARE_METAL
char g_error[512] = "";
#else
thread_local char g_error[512] = "";
#endif

int fail(int status, const char* message) {
  std::size_t k = 0;
  for (; message[k] != '\0' && k + 1 < sizeof g_error; ++k) g_error[k] = message[k];
  g_error[k] = '\0';
  return status;
}

#if !defined(__cpp_exceptions)
// The running call's guard: where report_error() jumps. The guarded bodies hold no
// objects with destructors (everything lives in caller memory), so nothing is skipped.
std::jmp_buf* g_guard = nullptr;
int g_jump_status = 0;

template <typename F>
int guard(F&& body) noexcept {
  std::jmp_buf here;
  std::jmp_buf* const outer = g_guard;
  g_guard = &here;
  if (setjmp(here) != 0) {
    g_guard = outer;
    return g_jump_status;
  }
  const int status = body();
  g_guard = outer;
  return status;
}
#else
template <typename F>
int guard(F&& body) noexcept {
  try {
    return body();
  } catch (const std::invalid_argument& e) {
    return fail(COCD_ERR_INVALID_ARGUMENT, e.what());
  } catch (const cocd::NonFiniteError& e) {
    return fail(COCD_ERR_NONFINITE, e.what());
  } catch (const cocd::StateError& e) {
    return fail(COCD_ERR_BAD_STATE, e.what());
  } catch (const std::bad_alloc&) {
    return fail(COCD_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::length_error&) {  // a size beyond what any allocation can hold
    return fail(COCD_ERR_OUT_OF_MEMORY, "out of memory: a requested size is too large");
  } catch (const std::exception& e) {
    return fail(COCD_ERR_INTERNAL, e.what());
  } catch (...) {
    return fail(COCD_ERR_INTERNAL, "unknown internal error");
  }
}
#endif

struct CObjective {
  cocd_objective fn;
  void* user_data;
  int status;
};

bool call_objective(void* context, double* loss) {
  auto* o = static_cast<CObjective*>(context);
  o->status = o->fn(o->user_data, loss);
  return o->status == 0;
}

// Out of line: cocd_step's frame carries no message buffer.
[[gnu::noinline]] int objective_failed(int status) {
  const cocd::detail::Text message =
      "the objective returned " + cocd::detail::str(status) +
      "; the step was undone (parameters and optimizer state unchanged)";
  return fail(COCD_ERR_OBJECTIVE, message.c_str());
}

cocd::GroupOptions to_group(const cocd_group& g) {
  cocd::GroupOptions out;
  out.lr = g.lr;
  out.weight_decay = g.weight_decay;
  out.eps = g.eps;
  out.momentum = g.momentum;
  return out;
}

// The checks of the C arguments that the core cannot see (NULL, counts, C booleans).
int check_c_inputs(const char* fn, const cocd_param* params, int64_t n_params,
                   const cocd_group* groups, int32_t n_groups, const cocd_options* options) {
  using cocd::detail::Text;
  if (params == nullptr || n_params <= 0) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                (fn + Text(": empty parameter list (params is NULL or n_params <= 0)")).c_str());
  }
  if (groups == nullptr || n_groups <= 0) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                (fn + Text(": no groups (groups is NULL or n_groups <= 0)")).c_str());
  }
  if (options == nullptr) {
    return fail(COCD_ERR_INVALID_ARGUMENT, (fn + Text(": options is NULL")).c_str());
  }
  if (options->central_difference != 0 && options->central_difference != 1) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                (fn + Text(": central_difference must be 0 or 1 (a bool)")).c_str());
  }
  if (options->init_grad_count < 0 ||
      (options->init_grad == nullptr) != (options->init_grad_count == 0)) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                (fn + Text(": init_grad must be NULL with init_grad_count 0, or point to "
                           "init_grad_count >= 1 values"))
                    .c_str());
  }
  // 32-bit targets: counts must fit size_t.
  constexpr uint64_t kMaxCount = static_cast<uint64_t>(static_cast<std::size_t>(-1));
  if (static_cast<uint64_t>(n_params) > kMaxCount ||
      static_cast<uint64_t>(options->init_grad_count) > kMaxCount) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                (fn + Text(": n_params or init_grad_count exceeds this target's size_t")).c_str());
  }
  return COCD_OK;
}

cocd::ParamSpan c_param(const void* params, std::size_t i) {
  const cocd_param& p = static_cast<const cocd_param*>(params)[i];
  return cocd::ParamSpan(p.data, p.numel, static_cast<cocd::ScalarType>(p.dtype), p.group);
}

cocd::GroupOptions c_group(const void* groups, std::size_t i) {
  return to_group(static_cast<const cocd_group*>(groups)[i]);
}

cocd::detail::Inputs c_inputs(const cocd_param* params, int64_t n_params, const cocd_group* groups,
                              int32_t n_groups, const cocd_options* options) {
  cocd::detail::Inputs in;
  in.n_params = static_cast<std::size_t>(n_params);
  in.params = params;
  in.param = c_param;
  in.n_groups = static_cast<std::size_t>(n_groups);
  in.groups = groups;
  in.group = c_group;
  in.compute_budget = options->compute_budget;
  in.memory_budget = options->memory_budget;
  in.central_difference = options->central_difference == 1;
  in.nonfinite = options->nonfinite;
  in.init_grad = options->init_grad;
  in.init_grad_count = static_cast<std::size_t>(options->init_grad_count);
  return in;
}

int required_size(const char* fn, const cocd_param* params, int64_t n_params,
                  const cocd_group* groups, int32_t n_groups, const cocd_options* options,
                  size_t* size) {
  const int status = check_c_inputs(fn, params, n_params, groups, n_groups, options);
  if (status != COCD_OK) return status;
  return guard([&] {
    const cocd::detail::Inputs in = c_inputs(params, n_params, groups, n_groups, options);
    *size = kHeaderBytes + cocd::detail::Access::required_bytes(in);
    return static_cast<int>(COCD_OK);
  });
}

// The optimizer in `buffer`: the header, then the core's block. *out is set on success.
int create_in(const char* fn, const cocd_param* params, int64_t n_params, const cocd_group* groups,
              int32_t n_groups, const cocd_options* options, void* buffer, size_t size,
              void (*release)(void*), cocd_optimizer** out) {
  using cocd::detail::Text;
  const int status = check_c_inputs(fn, params, n_params, groups, n_groups, options);
  if (status != COCD_OK) return status;
  if (buffer == nullptr)
    return fail(COCD_ERR_INVALID_ARGUMENT, (fn + Text(": buffer is NULL")).c_str());
  if (reinterpret_cast<uintptr_t>(buffer) % kAlign != 0) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                (fn + Text(": buffer is not ") + cocd::detail::str(kAlign) +
                 "-byte aligned; align it (alignas(8) or a double/uint64_t array)")
                    .c_str());
  }
  if (size < kHeaderBytes) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                (fn + Text(": buffer of ") + cocd::detail::str(size) +
                 " bytes is too small; cocd_required_size() gives the size needed")
                    .c_str());
  }
  return guard([&] {
    const cocd::detail::Inputs in = c_inputs(params, n_params, groups, n_groups, options);
    auto* block = static_cast<unsigned char*>(buffer);
    cocd::Optimizer opt =
        cocd::detail::Access::create_in(in, block + kHeaderBytes, size - kHeaderBytes, nullptr);
    *out = new (buffer) cocd_optimizer{std::move(opt), release};
    return static_cast<int>(COCD_OK);
  });
}

}  // namespace

#if !defined(__cpp_exceptions)
[[noreturn]] void cocd::detail::report_error(int status, const char* message) {
  fail(status, message);
  if (g_guard == nullptr) __builtin_trap();  // a C++ API call: no way to report it
  g_jump_status = status;
  std::longjmp(*g_guard, 1);
}
#endif

extern "C" {

void cocd_group_defaults(cocd_group* group) {
  if (group == nullptr) return;
  const cocd::GroupOptions d;
  group->lr = d.lr;
  group->weight_decay = d.weight_decay;
  group->eps = d.eps;
  group->momentum = d.momentum;
}

void cocd_options_defaults(cocd_options* options) {
  if (options == nullptr) return;
  const cocd::Options d;
  options->compute_budget = d.compute_budget;
  options->memory_budget = d.memory_budget;
  options->central_difference = d.central_difference ? 1 : 0;
  options->nonfinite = static_cast<int32_t>(d.nonfinite);
  options->init_grad = nullptr;
  options->init_grad_count = 0;
}

int cocd_create(const cocd_param* params, int64_t n_params, const cocd_group* groups,
                int32_t n_groups, const cocd_options* options, cocd_optimizer** out) {
  if (out == nullptr) return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_create: out is NULL");
  size_t bytes = 0;
  const int status =
      required_size("cocd_create", params, n_params, groups, n_groups, options, &bytes);
  if (status != COCD_OK) return status;
  void* block = std::malloc(bytes);
  if (block == nullptr) return fail(COCD_ERR_OUT_OF_MEMORY, "cocd_create: out of memory");
  const int created = create_in("cocd_create", params, n_params, groups, n_groups, options, block,
                                bytes, std::free, out);
  if (created != COCD_OK) std::free(block);
  return created;
}

int cocd_step(cocd_optimizer* opt, cocd_objective objective, void* user_data, double* loss) {
  if (opt == nullptr) return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_step: opt is NULL");
  if (objective == nullptr) return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_step: objective is NULL");
  return guard([&] {
    CObjective o{objective, user_data, 0};
    if (opt->opt.step(call_objective, &o, loss)) return static_cast<int>(COCD_OK);
    return objective_failed(o.status);
  });
}

int cocd_get_group(const cocd_optimizer* opt, int32_t index, cocd_group* group) {
  if (opt == nullptr || group == nullptr) {
    return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_get_group: opt or group is NULL");
  }
  return guard([&] {
    const cocd::GroupOptions g = opt->opt.group(index);
    group->lr = g.lr;
    group->weight_decay = g.weight_decay;
    group->eps = g.eps;
    group->momentum = g.momentum;
    return static_cast<int>(COCD_OK);
  });
}

int cocd_set_group(cocd_optimizer* opt, int32_t index, const cocd_group* group) {
  if (opt == nullptr || group == nullptr) {
    return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_set_group: opt or group is NULL");
  }
  return guard([&] {
    opt->opt.set_group(index, to_group(*group));
    return static_cast<int>(COCD_OK);
  });
}

int cocd_step_count(const cocd_optimizer* opt, int64_t* steps) {
  if (opt == nullptr || steps == nullptr) {
    return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_step_count: opt or steps is NULL");
  }
  *steps = opt->opt.step_count();
  return COCD_OK;
}

int cocd_memory_bytes(const cocd_optimizer* opt, size_t* bytes) {
  if (opt == nullptr || bytes == nullptr) {
    return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_memory_bytes: opt or bytes is NULL");
  }
  *bytes = kHeaderBytes + (opt->opt.memory_bytes() - sizeof(cocd::Optimizer));
  return COCD_OK;
}

int cocd_state_size(const cocd_optimizer* opt, size_t* size) {
  if (opt == nullptr || size == nullptr) {
    return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_state_size: opt or size is NULL");
  }
  *size = opt->opt.state_size();
  return COCD_OK;
}

int cocd_save(const cocd_optimizer* opt, void* buffer, size_t capacity, size_t* written) {
  if (opt == nullptr || buffer == nullptr) {
    return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_save: opt or buffer is NULL");
  }
  return guard([&] {
    const std::size_t n = opt->opt.save_state(buffer, capacity);
    if (written != nullptr) *written = n;
    return static_cast<int>(COCD_OK);
  });
}

int cocd_load(cocd_optimizer* opt, const void* buffer, size_t size) {
  if (opt == nullptr || buffer == nullptr) {
    return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_load: opt or buffer is NULL");
  }
  return guard([&] {
    opt->opt.load_state(buffer, size);
    return static_cast<int>(COCD_OK);
  });
}

int cocd_reset(cocd_optimizer* opt) {
  if (opt == nullptr) return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_reset: opt is NULL");
  opt->opt.reset();
  return COCD_OK;
}

void cocd_destroy(cocd_optimizer* opt) {
  if (opt == nullptr) return;
  void (*const release)(void*) = opt->release;
  opt->~cocd_optimizer();
  if (release != nullptr) release(opt);
}

const char* cocd_last_error(void) { return g_error; }

int cocd_required_size(const cocd_param* params, int64_t n_params, const cocd_group* groups,
                       int32_t n_groups, const cocd_options* options, size_t* size) {
  if (size == nullptr) return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_required_size: size is NULL");
  return required_size("cocd_required_size", params, n_params, groups, n_groups, options, size);
}

int cocd_create_in(void* buffer, size_t size, const cocd_param* params, int64_t n_params,
                   const cocd_group* groups, int32_t n_groups, const cocd_options* options,
                   cocd_optimizer** out) {
  if (out == nullptr) return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_create_in: out is NULL");
  return create_in("cocd_create_in", params, n_params, groups, n_groups, options, buffer, size,
                   nullptr, out);
}

const char* cocd_status_string(int status) {
  switch (status) {
    case COCD_OK:
      return "ok";
    case COCD_ERR_INVALID_ARGUMENT:
      return "invalid argument";
    case COCD_ERR_OBJECTIVE:
      return "the objective failed";
    case COCD_ERR_NONFINITE:
      return "non-finite loss";
    case COCD_ERR_BAD_STATE:
      return "bad state";
    case COCD_ERR_OUT_OF_MEMORY:
      return "out of memory";
    case COCD_ERR_INTERNAL:
      return "internal error";
    default:
      return "unknown status";
  }
}

}  // extern "C"

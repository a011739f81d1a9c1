// The C API (include/cocd/cocd.h) over cocd::Optimizer. Every entry point checks its
// pointers, then runs the C++ call inside guard(), which turns any exception into a
// status code and a per-thread message: no exception crosses the C boundary.
#include "cocd/cocd.h"

#include <cstdio>
#include <new>
#include <stdexcept>
#include <vector>

#include "cocd/optimizer.hpp"

struct cocd_optimizer {
  cocd::Optimizer opt;
};

namespace {

// A fixed buffer: reporting an error must not allocate (nor fail for lack of memory).
thread_local char g_error[512] = "";

int fail(int status, const char* message) {
  std::snprintf(g_error, sizeof g_error, "%s", message);
  return status;
}

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

cocd::GroupOptions to_group(const cocd_group& g) {
  cocd::GroupOptions out;
  out.lr = g.lr;
  out.weight_decay = g.weight_decay;
  out.eps = g.eps;
  out.momentum = g.momentum;
  return out;
}

}  // namespace

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
  if (params == nullptr || n_params <= 0) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                "cocd_create: empty parameter list (params is NULL or n_params <= 0)");
  }
  if (groups == nullptr || n_groups <= 0) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                "cocd_create: no groups (groups is NULL or n_groups <= 0)");
  }
  if (options == nullptr) return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_create: options is NULL");
  if (options->central_difference != 0 && options->central_difference != 1) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                "cocd_create: central_difference must be 0 or 1 (a bool)");
  }
  if (options->init_grad_count < 0 ||
      (options->init_grad == nullptr) != (options->init_grad_count == 0)) {
    return fail(COCD_ERR_INVALID_ARGUMENT,
                "cocd_create: init_grad must be NULL with init_grad_count 0, or point to "
                "init_grad_count >= 1 values");
  }
  return guard([&] {
    std::vector<cocd::ParamSpan> spans(static_cast<std::size_t>(n_params));
    for (int64_t i = 0; i < n_params; ++i) {
      spans[i] = cocd::ParamSpan(params[i].data, params[i].numel,
                                 static_cast<cocd::ScalarType>(params[i].dtype), params[i].group);
    }
    std::vector<cocd::GroupOptions> hyper;
    for (int32_t gi = 0; gi < n_groups; ++gi) hyper.push_back(to_group(groups[gi]));
    cocd::Options opts;
    opts.compute_budget = options->compute_budget;
    opts.memory_budget = options->memory_budget;
    opts.central_difference = options->central_difference == 1;
    opts.nonfinite = static_cast<cocd::NonFinite>(options->nonfinite);
    if (options->init_grad != nullptr) {
      opts.init_grad.assign(options->init_grad, options->init_grad + options->init_grad_count);
    }
    *out = new cocd_optimizer{cocd::Optimizer(spans, hyper, opts)};
    return static_cast<int>(COCD_OK);
  });
}

int cocd_step(cocd_optimizer* opt, cocd_objective objective, void* user_data, double* loss) {
  if (opt == nullptr) return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_step: opt is NULL");
  if (objective == nullptr) return fail(COCD_ERR_INVALID_ARGUMENT, "cocd_step: objective is NULL");
  return guard([&] {
    CObjective o{objective, user_data, 0};
    if (opt->opt.step(call_objective, &o, loss)) return static_cast<int>(COCD_OK);
    char message[160];
    std::snprintf(message, sizeof message,
                  "the objective returned %d; the step was undone (parameters and optimizer "
                  "state unchanged)",
                  o.status);
    return fail(COCD_ERR_OBJECTIVE, message);
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
  *bytes = sizeof(cocd_optimizer) - sizeof(cocd::Optimizer) + opt->opt.memory_bytes();
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

void cocd_destroy(cocd_optimizer* opt) { delete opt; }

const char* cocd_last_error(void) { return g_error; }

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

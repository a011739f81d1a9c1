"""Closures written for other optimizers, as ``CoCD.step`` runs them.

Gradient-based optimizers take closures that compute gradients: LBFGS-style ones call
``loss.backward()`` inside, torchzero-style ones take a ``backward`` argument, and
training frameworks wrap the user's closure in their own (PyTorch Lightning hands
``functools.partial(wrapper, ..., closure)``). CoCD never uses gradients, so:

- a closure with a ``backward`` parameter is called with ``backward=False``;
- ``Tensor.backward`` does nothing while a step evaluates the closure (on the thread
  that runs the step), and the first step that meets such a call warns, once;
- a ``ModelObjective`` found inside a framework's ``functools.partial`` is evaluated
  directly (its fast block evaluation is kept) and the wrapper is called once per step,
  so the framework's hooks still run.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import warnings

import torch

from .evaluation import evaluates_blocks

BACKWARD_WARNING = (
    "CoCD.step: the closure calls backward(), but CoCD is zeroth-order and never uses "
    "gradients, so those calls were skipped (each would cost a backward pass per "
    "evaluation, 2*compute_budget per step). Return the loss without calling backward() "
    "or zero_grad(). With PyTorch Lightning, use manual optimization "
    "(self.automatic_optimization = False) and cocd_cuda.integrations.cocd_training_step; "
    "with skorch, cocd_cuda.integrations.CoCDNetMixin; with Hugging Face, "
    "cocd_cuda.integrations.CoCDTrainer."
)


def takes_backward(closure) -> bool:
    """Whether ``closure`` has a parameter named ``backward`` (torchzero's convention)."""
    code = getattr(closure, "__code__", None)  # functions, lambdas, bound methods: fast
    if code is not None:
        named = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        return "backward" in named
    try:
        param = inspect.signature(closure).parameters.get("backward")
    except (TypeError, ValueError):  # builtins and the like have no signature
        return False
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return param is not None and param.kind in kinds


def wrapped_objective(closure):
    """The block evaluator (a ``ModelObjective``) a framework's partial wraps, or None."""
    if not isinstance(closure, functools.partial):
        return None
    found = [
        c for c in (closure.func, *closure.args, *closure.keywords.values()) if evaluates_blocks(c)
    ]
    return found[0] if len(found) == 1 else None


def split(closure, objective):
    """(what to call once per step, what to evaluate at every point).

    The first is None when nothing needs calling besides the evaluations.
    """
    if objective is not None:
        if not callable(objective):
            raise TypeError(
                f"objective must be a callable returning the loss (e.g. a ModelObjective), "
                f"got {type(objective).__name__}"
            )
        return closure, objective
    if closure is None:
        return None, None
    inner = wrapped_objective(closure)
    if inner is not None:
        bare = closure.func is inner and not closure.args and not closure.keywords
        return (None if bare else closure), inner
    if not evaluates_blocks(closure) and takes_backward(closure):
        return None, functools.partial(closure, backward=False)
    return None, closure


_state = threading.local()  # .skipping: whether this thread is inside a CoCD step
_lock = threading.Lock()
_users = 0  # steps, on any thread, that have the patch installed
_original_backward = torch.Tensor.backward


def _backward(tensor, *args, **kwargs):
    if getattr(_state, "skipping", None) is None:
        return _original_backward(tensor, *args, **kwargs)
    _state.skipping[0] = True
    return None


@contextlib.contextmanager
def skipping_backward():
    """``Tensor.backward`` does nothing on this thread inside; yields [called]."""
    global _users
    record, outer = [False], getattr(_state, "skipping", None)
    with _lock:
        _users += 1
        torch.Tensor.backward = _backward
    _state.skipping = record
    try:
        yield record
    finally:
        _state.skipping = outer
        with _lock:
            _users -= 1
            if _users == 0:
                torch.Tensor.backward = _original_backward


def warn_backward(stacklevel: int) -> None:
    warnings.warn(BACKWARD_WARNING, UserWarning, stacklevel=stacklevel + 1)

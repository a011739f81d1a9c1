"""Closures written for other optimizers and frameworks run as CoCD's own would."""

import functools
import threading
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cocd_cuda import CoCD, ModelObjective
from cocd_cuda.closures import BACKWARD_WARNING


def problem():
    torch.manual_seed(1)  # the same model at every call
    gen = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=gen)
    return model, x, y


def trajectory(backend, make_closure, steps=3, **step_kw):
    """Parameters after each step and the returned losses, with the warnings raised."""
    model, x, y = problem()
    opt = CoCD(model.parameters(), lr=0.1, compute_budget=4, backend=backend)
    closure = make_closure(model, opt, x, y)
    out = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(steps):
            loss = opt.step(closure, **step_kw)
            out.append((loss.clone(), [p.detach().clone() for p in model.parameters()]))
    grads = [p.grad for p in model.parameters()]
    return out, [str(w.message) for w in caught], grads


def plain(model, opt, x, y):
    return lambda: F.cross_entropy(model(x), y)


def same(a, b):
    for (la, pa), (lb, pb) in zip(a, b, strict=True):
        assert torch.equal(la, lb)
        for u, v in zip(pa, pb, strict=True):
            assert torch.equal(u, v)


def lbfgs_style(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def grad_enabled_style(model, opt, x, y):
    """As Lightning's automatic optimization: gradients on, backward inside."""

    def closure():
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        return loss.detach()

    return closure


@pytest.mark.parametrize("style", [lbfgs_style, grad_enabled_style])
def test_backward_inside_is_skipped_and_warned_once(backend, style):
    reference, quiet, _ = trajectory(backend, plain)
    got, messages, grads = trajectory(backend, style)
    same(got, reference)
    assert quiet == []
    assert messages == [BACKWARD_WARNING]
    assert all(g is None for g in grads)  # no gradient was ever computed
    assert torch.Tensor.backward is not None
    loss = (torch.ones(2, requires_grad=True) * 3).sum()
    loss.backward()  # backward works again after the steps


def test_backward_restored_when_the_closure_raises(backend):
    model, x, y = problem()
    opt = CoCD(model.parameters(), compute_budget=2, backend=backend)

    def closure():
        F.cross_entropy(model(x), y).backward()
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        opt.step(closure)
    w = torch.ones(3, requires_grad=True)
    (w * 2).sum().backward()
    assert torch.equal(w.grad, torch.full((3,), 2.0))


def test_other_threads_keep_their_backward(backend):
    """Only the stepping thread's backward calls are skipped."""
    model, x, y = problem()
    opt = CoCD(model.parameters(), compute_budget=2, backend=backend)
    w = torch.ones(3, requires_grad=True)

    def other():
        (w * 5).sum().backward()

    def closure():
        if w.grad is None:
            t = threading.Thread(target=other)
            t.start()
            t.join()
        return F.cross_entropy(model(x), y)

    opt.step(closure)
    assert torch.equal(w.grad, torch.full((3,), 5.0))


class TorchzeroClosure:
    def __init__(self, model, opt, x, y):
        self.model, self.opt, self.x, self.y, self.flags = model, opt, x, y, []

    def __call__(self, backward=True):
        self.flags.append(backward)
        loss = F.cross_entropy(self.model(self.x), self.y)
        if backward:
            self.opt.zero_grad()
            loss.backward()
        return loss


def torchzero_function(model, opt, x, y):
    def closure(backward=True):
        loss = F.cross_entropy(model(x), y)
        if backward:
            raise AssertionError("called with backward=True")
        return loss

    return closure


@pytest.mark.parametrize("style", [TorchzeroClosure, torchzero_function])
def test_backward_argument_gets_false(backend, style):
    reference, _, _ = trajectory(backend, plain)
    got, messages, grads = trajectory(backend, style)
    same(got, reference)
    assert messages == []  # nothing was skipped: the closure was asked for no gradients
    assert all(g is None for g in grads)


def test_closure_with_only_kwargs_is_called_bare(backend):
    seen = []

    def make(model, opt, x, y):
        def closure(*args, **kwargs):
            seen.append((args, kwargs))
            return F.cross_entropy(model(x), y)

        return closure

    trajectory(backend, make, steps=1)
    assert seen and all(s == ((), {}) for s in seen)


class CountingObjective(ModelObjective):
    """Counts block evaluations (the fast path) and plain calls (the slow one)."""

    blocks = calls = 0

    def evaluate_block(self, block):
        CountingObjective.blocks += 1
        return super().evaluate_block(block)

    def __call__(self):
        CountingObjective.calls += 1
        return super().__call__()


def framework_wrapper(model, optimizer, closure):
    """As Lightning's precision plugin: run the closure, then hooks."""
    framework_wrapper.hooks += 1
    return closure()


def objective_run(backend, how, steps=3):
    CountingObjective.blocks = CountingObjective.calls = 0
    framework_wrapper.hooks = 0
    model, x, y = problem()
    opt = CoCD(model.parameters(), lr=0.1, compute_budget=4, backend=backend)
    obj = CountingObjective(model, F.cross_entropy, x, y, strategy="layered")
    kw = {}
    if how == "plain":
        closure = obj
    elif how == "bare_partial":
        closure = functools.partial(obj)
    elif how == "framework_partial":
        closure = functools.partial(framework_wrapper, model, opt, obj)
    else:  # step(objective=...) through a framework that has no closure of its own
        closure = functools.partial(framework_wrapper, model, opt, lambda: None)
        kw = {"objective": obj}
    losses = [opt.step(closure, **kw) for _ in range(steps)]
    return losses, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("how", ["bare_partial", "framework_partial", "objective"])
def test_wrapped_objective_keeps_the_block_path(backend, how):
    losses_ref, params_ref = objective_run(backend, "plain")
    losses, params = objective_run(backend, how)
    assert CountingObjective.blocks == 3  # one block evaluation per step
    # Only the wrapper's own call of the objective (once per step) is a plain call.
    assert CountingObjective.calls == (3 if how == "framework_partial" else 0)
    assert framework_wrapper.hooks == (0 if how == "bare_partial" else 3)
    for a, b in zip(losses, losses_ref, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(params, params_ref, strict=True):
        assert torch.equal(a, b)


def test_objective_must_be_callable(backend):
    model, _, _ = problem()
    opt = CoCD(model.parameters(), backend=backend)
    with pytest.raises(TypeError, match="objective must be a callable"):
        opt.step(objective=3)


def test_built_in_inference_mode_steps_outside(backend):
    model, x, y = problem()
    with torch.inference_mode():
        opt = CoCD(model.parameters(), lr=0.1, compute_budget=4, backend=backend)
    ref_model, _, _ = problem()
    ref = CoCD(ref_model.parameters(), lr=0.1, compute_budget=4, backend=backend)
    for _ in range(2):
        opt.step(lambda: F.cross_entropy(model(x), y))
        ref.step(lambda: F.cross_entropy(ref_model(x), y))
    assert opt.step_count == 2
    for a, b in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(a, b)  # the same run as one built outside inference mode

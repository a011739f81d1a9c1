"""CoCD's step checked against ALGORITHM.md: analytic results and a hand-rolled float64 loop."""

import math

import pytest
import torch

from cocd_cuda import CoCD

F64 = torch.float64


# ----------------------------------------------------------------------------- helpers
def quadratic(n, device="cpu", seed=0):
    """f(x) = 0.5 x^T A x - b^T x with a random SPD A (float64); returns f, A, b."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n, n, generator=gen, dtype=F64)
    A = (q @ q.T / n + torch.eye(n, dtype=F64)).to(device)
    b = torch.randn(n, generator=gen, dtype=F64).to(device)
    return (lambda x: 0.5 * x @ A @ x - b @ x), A, b


def bumpy(n, device="cpu", seed=1):
    """A smooth non-quadratic objective (finite differences are not exact on it)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=gen, dtype=F64).to(device)
    return lambda x: (torch.cos(x) * w).sum() + 0.25 * (x**4).sum() + 0.5 * (x[:-1] * x[1:]).sum()


def flat(params):
    """The flat vector x (float64) of the parameters in logical row-major order."""
    return torch.cat([p.detach().reshape(-1).to(F64) for p in params])


def closure_of(objective, params):
    """The optimizer's closure: the objective at the current parameters."""
    return lambda: objective(flat(params))


def on_list(objective, device="cpu"):
    """The objective as a function of a list of floats, for the hand-rolled loop."""
    return lambda xs: float(objective(torch.tensor(xs, dtype=F64, device=device)))


def hyper(lr=0.01, weight_decay=0.0, eps=0.1, momentum=1.0):
    return dict(lr=lr, weight_decay=weight_decay, eps=eps, momentum=momentum)


class HandRolled:
    """ALGORITHM.md's step written out with Python floats (float64), one coordinate at a time.

    The buffer is always a ring of (coordinate, value) entries; with m == n the slot of
    coordinate i is i, which is the dense layout.
    """

    def __init__(self, x, group_sizes, hypers, B, m=None, central=True, init=None):
        self.x = [float(a) for a in x]
        self.n = len(self.x)
        self.group_of = [g for g, size in enumerate(group_sizes) for _ in range(size)]
        self.hypers = [dict(h) for h in hypers]
        self.B = min(B, self.n)
        self.m = self.n if m is None else min(m, self.n)
        self.central = central
        self.coords = list(range(self.m))
        self.v = [0.0] * self.m if init is None else [float(a) for a in init]
        self.head = self.c = 0

    def hp(self, i):
        return self.hypers[self.group_of[i]]

    def step(self, f):
        self.v = [self.hp(i)["momentum"] * v for i, v in zip(self.coords, self.v, strict=True)]
        f0 = None if self.central else f(self.x)
        for j in range(self.B):
            i = (self.c + j) % self.n
            eps = self.hp(i)["eps"]
            plus, minus = list(self.x), list(self.x)
            plus[i] = self.x[i] + eps
            if self.central:
                minus[i] = self.x[i] - eps
            h = plus[i] - minus[i]
            f_plus, f_minus = f(plus), (f(minus) if self.central else f0)
            self.coords[self.head] = i
            self.v[self.head] = (f_plus - f_minus) / h if h != 0 else 0.0
            self.head = (self.head + 1) % self.m
        self.c = (self.c + self.B) % self.n
        for i, v in zip(self.coords, self.v, strict=True):
            lr, wd = self.hp(i)["lr"], self.hp(i)["weight_decay"]
            self.x[i] = self.x[i] * (1 - lr * wd) - lr * v


def assert_matches(opt, params, ref, rtol=1e-12):
    """Parameters, buffer and ring of ``opt`` equal the hand-rolled state."""
    dev = params[0].device
    torch.testing.assert_close(
        flat(params), torch.tensor(ref.x, dtype=F64, device=dev), rtol=rtol, atol=1e-14
    )
    st = opt.state_dict()["state"]
    torch.testing.assert_close(
        st["buffer"].to(F64), torch.tensor(ref.v, dtype=F64, device=dev), rtol=rtol, atol=1e-14
    )
    if ref.m < ref.n:
        assert st["coords"].tolist() == ref.coords
        assert st["head"] == ref.head
    assert st["c"] == ref.c


MODES = [
    pytest.param(True, None, id="dense-central"),
    pytest.param(False, None, id="dense-forward"),
    pytest.param(True, 4, id="fifo-central"),
    pytest.param(False, 4, id="fifo-forward"),
    pytest.param(True, 3, id="fifo-m-equals-B"),
]


# --------------------------------------------------------------- BCCD and gradient descent
def test_momentum_zero_is_bccd(backend, device):
    """momentum=0: only the block moves, by lr times the exact partial derivative."""
    n, B, lr = 7, 3, 0.05
    f, A, b = quadratic(n, device)
    x = torch.randn(n, dtype=F64, device=device)
    # A nonzero initial buffer would move every coordinate if it were not decayed to 0.
    opt = CoCD(
        [x], lr=lr, momentum=0.0, compute_budget=B, init_grad=torch.full((n,), 5.0), backend=backend
    )
    for step in range(4):
        before = x.clone()
        grad = A @ before - b
        opt.step(closure_of(f, [x]))
        block = [(step * B + j) % n for j in range(B)]
        outside = [i for i in range(n) if i not in block]
        torch.testing.assert_close(
            x[block], before[block] - lr * grad[block], rtol=1e-10, atol=1e-12
        )
        assert torch.equal(x[outside], before[outside])
        # The buffer holds the last block's estimates only.
        v = opt._state.v
        torch.testing.assert_close(v[block], grad[block], rtol=1e-10, atol=1e-12)
        assert torch.count_nonzero(v[outside]) == 0


@pytest.mark.parametrize("momentum", [1.0, 0.5, 0.0], ids=["gamma1", "gamma0.5", "gamma0"])
def test_full_block_is_gradient_descent(backend, device, momentum):
    """B = n, central, float64: iterates are x <- x - lr (A x - b) whatever the momentum."""
    n, lr = 6, 0.1
    f, A, b = quadratic(n, device)
    x = torch.randn(n, dtype=F64, device=device)
    expected = x.clone()
    opt = CoCD([x], lr=lr, compute_budget=n, momentum=momentum, backend=backend)
    for _ in range(5):
        opt.step(closure_of(f, [x]))
        expected = expected - lr * (A @ expected - b)
        torch.testing.assert_close(x, expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("momentum", [1.0, 0.8], ids=["gamma1", "gamma0.8"])
@pytest.mark.parametrize(("central", "memory"), MODES)
def test_matches_hand_rolled_loop(backend, device, central, memory, momentum):
    """B < n: x, buffer and ring equal the hand-rolled algorithm after every step."""
    n, B = 7, 3
    f = bumpy(n, device)
    x = torch.randn(n, dtype=F64, device=device)
    h = hyper(lr=0.05, weight_decay=0.1, eps=0.1, momentum=momentum)
    ref = HandRolled(x.tolist(), [n], [h], B, memory, central)
    opt = CoCD(
        [x],
        **h,
        compute_budget=B,
        memory_budget=memory,
        central_difference=central,
        backend=backend,
    )
    for _ in range(6):
        opt.step(closure_of(f, [x]))
        ref.step(on_list(f, device))
        assert_matches(opt, [x], ref)
    assert opt.step_count == 6


# -------------------------------------------------------------------------------- FIFO
def test_fifo_eviction_order(backend):
    """The ring starts as coordinates 0..m-1 (0 oldest); each push overwrites the oldest."""
    x = torch.randn(5, dtype=F64)
    f = bumpy(5)
    opt = CoCD([x], compute_budget=2, memory_budget=3, backend=backend)
    assert opt._state.coords.tolist() == [0, 1, 2]
    assert opt._state.counters.head == 0
    # Blocks [0,1], [2,3], [4,0], [1,2] pushed into slots starting at the oldest entry.
    expected = [([0, 1, 2], 2), ([3, 1, 2], 1), ([3, 4, 0], 0), ([1, 2, 0], 2)]
    for coords, head in expected:
        opt.step(closure_of(f, [x]))
        assert opt._state.coords.tolist() == coords
        assert opt._state.counters.head == head


@pytest.mark.parametrize("memory", [None, 4], ids=["dense", "fifo"])
def test_init_grad_entry_k_is_coordinate_k(backend, device, memory):
    """init_grad[k] is the estimate of coordinate k: the first descend uses it."""
    n, lr = 6, 0.1
    x = torch.randn(n, dtype=F64, device=device)
    x0 = x.clone()
    m = n if memory is None else memory
    init = torch.arange(1.0, m + 1, dtype=F64) * 0.5
    opt = CoCD([x], lr=lr, compute_budget=1, memory_budget=memory, init_grad=init, backend=backend)
    opt.step(closure_of(bumpy(n, device), [x]))  # refreshes coordinate 0 only
    init = init.to(device)
    torch.testing.assert_close(x[1:m], x0[1:m] - lr * init[1:m], rtol=1e-15, atol=0)
    torch.testing.assert_close(opt._state.v[1:m], init[1:m], rtol=0, atol=0)
    assert torch.equal(x[m:], x0[m:])


def test_fifo_descend_skips_coordinates_outside_ring(backend):
    """Weight decay reaches the ring's coordinates only; the others stay bit for bit."""
    n, lr, wd = 6, 0.1, 0.5
    x = torch.randn(n, dtype=F64)
    x0 = x.clone()
    opt = CoCD([x], lr=lr, weight_decay=wd, compute_budget=1, memory_budget=3, backend=backend)
    opt.step(closure_of(bumpy(n), [x]))
    # Coordinates 1, 2 are in the ring with estimate 0: decayed only.
    torch.testing.assert_close(x[1:3], x0[1:3] * (1 - lr * wd), rtol=1e-15, atol=0)
    assert x[0] != x0[0]
    assert torch.equal(x[3:], x0[3:])


def test_fifo_decay_uses_momentum_of_entry_group(backend):
    """Each ring entry decays by the momentum of its coordinate's group."""
    a, b = torch.randn(3, dtype=F64), torch.randn(3, dtype=F64)
    groups = [{"params": [a], "momentum": 0.5}, {"params": [b], "momentum": 0.25}]
    init = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    opt = CoCD(groups, lr=0.0, compute_budget=1, memory_budget=4, init_grad=init, backend=backend)
    closure = closure_of(bumpy(6), [a, b])
    opt.step(closure)  # refresh coordinate 0; coordinates 1, 2 in group 0, 3 in group 1
    assert opt._state.v[1:].tolist() == [2.0 * 0.5, 3.0 * 0.5, 4.0 * 0.25]
    fresh0 = float(opt._state.v[0])
    opt.step(closure)  # refresh coordinate 1
    assert opt._state.v[[0, 2, 3]].tolist() == [fresh0 * 0.5, 3.0 * 0.25, 4.0 * 0.25**2]
    opt.step(closure)
    opt.step(closure)
    opt.step(closure)  # coordinate 4 (group 1) evicts coordinate 0 in slot 0
    assert opt._state.coords.tolist() == [4, 1, 2, 3]
    fresh = opt._state.v.tolist()
    opt.step(closure)  # coordinate 5 evicts coordinate 1; slot 0 is coordinate 4 of group 1
    assert opt._state.coords.tolist() == [4, 5, 2, 3]
    assert opt._state.v[[0, 2, 3]].tolist() == [fresh[0] * 0.25, fresh[2] * 0.5, fresh[3] * 0.25]


# ------------------------------------------------------------------- evaluation pattern
@pytest.mark.parametrize("budget", [1, 3, 5, 9], ids=lambda b: f"B{b}")
@pytest.mark.parametrize("central", [True, False], ids=["central", "forward"])
def test_evaluation_count(backend, central, budget):
    """A step calls the closure 2B times (central) or B + 1 times (forward), B clamped to n."""
    x = torch.randn(5, dtype=F64)
    calls = []
    f = bumpy(5)

    def closure():
        calls.append(1)
        return f(x)

    opt = CoCD([x], compute_budget=budget, central_difference=central, backend=backend)
    B = min(budget, 5)
    for step in range(1, 3):
        opt.step(closure)
        assert len(calls) == step * (2 * B if central else B + 1)


@pytest.mark.parametrize("central", [True, False], ids=["central", "forward"])
def test_evaluation_order_and_base_point(backend, central):
    """Evaluations: f(x) first (forward), then x +- eps e_i for i = c, ..., c+B-1 mod n."""
    B, eps = 2, 0.125
    x = torch.tensor([0.5, -1.0, 2.0, 0.25, 3.0], dtype=F64)
    seen = []

    def closure():
        d = x - base
        moved = torch.nonzero(d).flatten().tolist()
        assert len(moved) <= 1  # one coordinate at a time, around the same base point
        seen.append(None if not moved else (moved[0], float(d[moved[0]])))
        return (x**2).sum()

    opt = CoCD([x], lr=0.01, eps=eps, compute_budget=B, central_difference=central, backend=backend)
    for block in ([0, 1], [2, 3], [4, 0]):
        base = x.clone()
        seen.clear()
        opt.step(closure)
        if central:
            expected = [e for i in block for e in ((i, eps), (i, -eps))]
        else:
            expected = [None] + [(i, eps) for i in block]
        assert seen == expected


def test_closure_runs_without_grad(backend):
    """The closure is evaluated under torch.no_grad(), even when the caller enables grad."""
    model = torch.nn.Linear(3, 1)
    X = torch.randn(8, 3)
    modes = []

    def closure():
        modes.append(torch.is_grad_enabled())
        return model(X).pow(2).mean()

    opt = CoCD(model.parameters(), compute_budget=2, backend=backend)
    with torch.enable_grad():
        loss = opt.step(closure)
    assert modes == [False] * 4
    assert not loss.requires_grad
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------- param groups
@pytest.mark.parametrize("memory", [None, 5], ids=["dense", "fifo"])
def test_per_group_hyperparameters(backend, device, memory):
    """Two groups with their own lr, eps, momentum and weight decay match the hand-rolled loop."""
    a = torch.randn(4, dtype=F64, device=device)
    b = torch.randn(3, dtype=F64, device=device)
    h0 = hyper(lr=0.05, weight_decay=0.1, eps=0.2, momentum=0.9)
    h1 = hyper(lr=0.02, weight_decay=0.0, eps=0.05, momentum=0.5)
    f = bumpy(7, device)
    ref = HandRolled(flat([a, b]).tolist(), [4, 3], [h0, h1], B=3, m=memory)
    groups = [{"params": [a], **h0}, {"params": [b], **h1}]
    opt = CoCD(groups, compute_budget=3, memory_budget=memory, backend=backend)
    for _ in range(6):
        opt.step(closure_of(f, [a, b]))
        ref.step(on_list(f, device))
        assert_matches(opt, [a, b], ref)


@pytest.mark.parametrize("kind", ["StepLR", "LambdaLR"])
def test_lr_scheduler_sets_next_step_lr(backend, kind):
    """An LR scheduler's new lr is used by the next step."""
    a, b = torch.randn(3, dtype=F64), torch.randn(4, dtype=F64)
    h0, h1 = hyper(lr=0.1, momentum=0.9), hyper(lr=0.04, eps=0.05)
    opt = CoCD([{"params": [a], **h0}, {"params": [b], **h1}], compute_budget=2, backend=backend)
    if kind == "StepLR":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        factor = [0.5**k for k in range(5)]
    else:
        factor = [1.0, 3.0, 0.0, 2.0, 0.25, 1.0]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: factor[k])
    f = bumpy(7)
    ref = HandRolled(flat([a, b]).tolist(), [3, 4], [h0, h1], B=2)
    for k in range(5):
        ref.hypers[0]["lr"], ref.hypers[1]["lr"] = 0.1 * factor[k], 0.04 * factor[k]
        opt.step(closure_of(f, [a, b]))
        ref.step(on_list(f))
        assert_matches(opt, [a, b], ref)
        sched.step()


def test_param_group_changes_take_effect_next_step(backend):
    """eps, momentum and weight_decay edited in param_groups are read at the next step."""
    x = torch.randn(6, dtype=F64)
    h = hyper(lr=0.05)
    f = bumpy(6)
    ref = HandRolled(x.tolist(), [6], [h], B=2, m=4)
    opt = CoCD([x], **h, compute_budget=2, memory_budget=4, backend=backend)
    for change in [{}, {"eps": 0.3}, {"momentum": 0.5}, {"weight_decay": 0.2}, {"lr": 0.0}]:
        opt.param_groups[0].update(change)
        ref.hypers[0].update(change)
        opt.step(closure_of(f, [x]))
        ref.step(on_list(f))
        assert_matches(opt, [x], ref)


# ------------------------------------------------------------------- low precision
LOW = [pytest.param(torch.float16, id="fp16"), pytest.param(torch.bfloat16, id="bf16")]


@pytest.mark.parametrize(
    ("central", "memory"),
    [
        pytest.param(True, None, id="dense-central"),
        pytest.param(True, 6, id="fifo-central"),
        pytest.param(False, None, id="dense-forward"),
    ],
)
@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_lr_zero_is_bit_identical(backend, dtype, central, memory):
    """lr=0: fp16/bf16 parameters are restored exactly, even where x+eps-eps drifts."""
    big = torch.tensor([1000.0, 999.5, 1001.0, -998.0, 1024.0], dtype=dtype)
    small = torch.tensor([1.0, 0.3, -2.7, 0.0999, 65.3, 7.77, -0.011], dtype=dtype)
    groups = [{"params": [big], "eps": 1e-3}, {"params": [small], "eps": 0.3}]
    # The naive add-then-subtract does not come back to every value.
    assert not torch.equal((small + 0.3) - 0.3, small)
    saved = [big.clone(), small.clone()]
    w = torch.linspace(-1, 1, 12)

    def closure():
        z = torch.cat([big.float() / 1000, small.float()])
        return (w * z).sum() + (z**2).sum()

    opt = CoCD(
        groups,
        lr=0.0,
        compute_budget=5,
        memory_budget=memory,
        central_difference=central,
        backend=backend,
    )
    for _ in range(4):
        opt.step(closure)
    bits = torch.int16
    assert torch.equal(big.view(bits), saved[0].view(bits))
    assert torch.equal(small.view(bits), saved[1].view(bits))
    assert bool(torch.isfinite(opt._state.v).all())
    assert torch.count_nonzero(opt._state.v) > 0


@pytest.mark.parametrize(
    ("dtype", "acc"),
    [
        pytest.param(torch.float16, torch.float32, id="fp16"),
        pytest.param(torch.bfloat16, torch.float32, id="bf16"),
        pytest.param(torch.float32, torch.float32, id="fp32"),
        pytest.param(torch.float64, torch.float64, id="fp64"),
    ],
)
def test_buffer_dtype(backend, dtype, acc):
    """The buffer is float32 for fp16/bf16/fp32 parameters and float64 for float64."""
    x = torch.ones(4, dtype=dtype)
    opt = CoCD([x], backend=backend)
    assert opt._state.v.dtype == acc
    fifo = CoCD([x], memory_budget=2, backend=backend)
    assert fifo._state.v.dtype == acc


def rounded(value, dtype):
    """value (a Python float) rounded to float32 and then to ``dtype``, as a Python float."""
    return float(torch.tensor(value, dtype=F64).float().to(dtype).double())


@pytest.mark.parametrize(
    ("dtype", "central", "eps"),
    [
        pytest.param(torch.float16, True, 3e-4, id="fp16-central"),
        pytest.param(torch.float16, False, 7e-4, id="fp16-forward"),
        pytest.param(torch.bfloat16, True, 3e-3, id="bf16-central"),
        pytest.param(torch.bfloat16, False, 5e-3, id="bf16-forward"),
    ],
)
def test_realised_step_is_the_denominator(backend, dtype, central, eps):
    """On f = sum(w x) the estimate is exactly w_i with h = x+ - x-, and 0 where h == 0."""
    values = [1.0, -1.0, 2.0, 0.75, 1000.0]
    w = [0.123456789, -2.5, 0.7071067811865476, 3.3, 1.75]
    x = torch.tensor(values, dtype=dtype)
    wt = torch.tensor(w, dtype=F64)
    opt = CoCD([x], lr=0.0, eps=eps, compute_budget=5, central_difference=central, backend=backend)
    opt.step(lambda: (wt * x.double()).sum())
    h = [rounded(a + eps, dtype) - (rounded(a - eps, dtype) if central else a) for a in values]
    nominal = 2 * eps if central else eps
    assert h[0] != 0 and abs(h[0] - nominal) > 0.1 * nominal  # realised step != nominal
    assert h[4] == 0.0  # 1000 +- eps rounds back to 1000
    expected = [wi if hi != 0 else 0.0 for wi, hi in zip(w, h, strict=True)]
    expected = torch.tensor(expected, dtype=torch.float32)
    torch.testing.assert_close(opt._state.v, expected, rtol=2e-7, atol=0)


# -------------------------------------------------------------------------- quick start
def test_quick_start_linear_regression(backend):
    """The README quick start: Linear(1, 1) fits y = 3x - 0.5 like gradient descent."""
    X = torch.linspace(-1, 1, 64).unsqueeze(1)
    Y = 3 * X - 0.5
    model = torch.nn.Linear(1, 1)
    w0, b0 = model.weight.item(), model.bias.item()
    opt = CoCD(model.parameters(), compute_budget=8, momentum=0.99, lr=0.1, backend=backend)
    assert opt.compute_budget == 2

    def closure():
        return torch.nn.functional.mse_loss(model(X), Y)

    # Analytic gradient descent on the MSE (B = n: every coordinate is fresh each step).
    xs, ys = X.double().flatten(), Y.double().flatten()
    w, b = w0, b0
    for k in range(300):
        opt.step(closure)
        r = w * xs + b - ys
        w, b = w - 0.1 * float(2 * (r * xs).mean()), b - 0.1 * float(2 * r.mean())
        if k < 10:
            assert math.isclose(model.weight.item(), w, rel_tol=1e-4, abs_tol=1e-5)
            assert math.isclose(model.bias.item(), b, rel_tol=1e-4, abs_tol=1e-5)
    wf, bf = model.weight.item(), model.bias.item()
    assert abs(wf - 3) < 1e-2
    assert abs(bf + 0.5) < 1e-2
    assert float(((wf * xs + bf - ys) ** 2).mean()) < 1e-4


# ------------------------------------------------------------------------ returned loss
def test_returned_loss_forward_is_f_of_x(backend, device):
    """Forward differences return f(x) at the step's base point, exactly."""
    x = torch.randn(5, dtype=F64, device=device)
    f = bumpy(5, device)
    opt = CoCD([x], compute_budget=3, central_difference=False, backend=backend)
    for _ in range(3):
        expected = f(x.clone())
        loss = opt.step(closure_of(f, [x]))
        assert loss.dim() == 0
        assert loss.device == x.device
        assert float(loss) == float(expected)


def test_returned_loss_central_is_mean_of_pair_averages(backend, device):
    """Central differences return mean over the block of (f+ + f-)/2."""
    x = torch.randn(5, dtype=F64, device=device)
    f = bumpy(5, device)
    values = []

    def closure():
        values.append(float(f(x)))
        return f(x)

    opt = CoCD([x], compute_budget=3, backend=backend)
    for _ in range(3):
        values.clear()
        at_x = float(f(x))
        loss = opt.step(closure)
        pairs = [(values[2 * j] + values[2 * j + 1]) / 2 for j in range(3)]
        assert loss.dim() == 0
        assert loss.device == x.device
        assert math.isclose(float(loss), sum(pairs) / 3, rel_tol=1e-14)
        assert float(loss) != at_x  # an O(eps^2) estimate of f(x), not f(x)


def test_python_float_loss(backend):
    """A closure returning a Python float gives the same run as one returning a tensor."""
    x = torch.randn(6, dtype=F64)
    y = x.clone()
    f = bumpy(6)
    opt_x = CoCD([x], lr=0.05, compute_budget=4, backend=backend)
    opt_y = CoCD([y], lr=0.05, compute_budget=4, backend=backend)
    for _ in range(3):
        loss_x = opt_x.step(lambda: float(f(x)))
        loss_y = opt_y.step(closure_of(f, [y]))
        assert torch.equal(x, y)
        assert torch.equal(opt_x._state.v, opt_y._state.v)
        assert float(loss_x) == float(loss_y)


@pytest.mark.parametrize(
    "loss_dtype", [torch.float16, torch.bfloat16, torch.float32], ids=["fp16", "bf16", "fp32"]
)
def test_loss_of_another_dtype(backend, loss_dtype):
    """A loss in another dtype is read as is: estimates use its rounded values."""
    x = torch.randn(6, dtype=F64)
    f = bumpy(6)
    h = hyper(lr=0.05, eps=0.2)
    ref = HandRolled(x.tolist(), [6], [h], B=3)
    opt = CoCD([x], **h, compute_budget=3, backend=backend)
    for _ in range(3):
        opt.step(lambda: f(x).to(loss_dtype))
        ref.step(lambda xs: float(torch.tensor(on_list(f)(xs), dtype=F64).to(loss_dtype)))
        assert_matches(opt, [x], ref)


# ---------------------------------------------------------------------- tensor layouts
def transposed():
    """A leaf whose storage is column-major: logical order != storage order."""
    return torch.randn(4, 3, dtype=F64).t()


def channels_last():
    return torch.randn(2, 3, 2, 2, dtype=F64).to(memory_format=torch.channels_last)


# The native kernels take contiguous tensors only; "auto" falls back to the reference.
@pytest.mark.filterwarnings("ignore:cocd_cuda. running the reference implementation")
@pytest.mark.parametrize("memory", [None, 7], ids=["dense", "fifo"])
@pytest.mark.parametrize("make", [transposed, channels_last], ids=["transposed", "channels_last"])
def test_noncontiguous_params_use_logical_order(backend, make, memory):
    """Non-contiguous parameters are walked in logical row-major order, like a contiguous copy."""
    p = make()
    assert not p.is_contiguous()
    q = p.contiguous().clone()
    strides = p.stride()
    w = torch.randn(p.shape, dtype=F64)

    def objective(t):
        return (w * t).sum() + 0.5 * (w.abs() * t * t).sum()

    kw = dict(lr=0.1, momentum=0.0, memory_budget=memory)
    opt_p, opt_q = CoCD([p], **kw, backend="auto"), CoCD([q], **kw, backend=backend)
    for i in range(2):  # B = 1: step i changes logical element i only
        before = p.clone()
        opt_p.step(lambda: objective(p))
        opt_q.step(lambda: objective(q))
        assert torch.nonzero((p != before).reshape(-1)).flatten().tolist() == [i]
    opt_p.param_groups[0]["momentum"] = opt_q.param_groups[0]["momentum"] = 0.9
    for _ in range(3):
        opt_p.step(lambda: objective(p))
        opt_q.step(lambda: objective(q))
    torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt_p._state.v, opt_q._state.v, rtol=1e-12, atol=1e-14)
    assert p.stride() == strides


def test_requires_grad_false_is_optimized(backend):
    """A tensor that does not require grad is optimized like any other, without autograd."""
    n, lr = 4, 0.1
    f, A, b = quadratic(2 * n)
    frozen = torch.randn(n, dtype=F64)
    param = torch.nn.Parameter(torch.randn(n, dtype=F64))
    expected = flat([frozen, param])
    opt = CoCD([frozen, param], lr=lr, compute_budget=2 * n, backend=backend)
    opt.step(closure_of(f, [frozen, param]))
    expected = expected - lr * (A @ expected - b)
    torch.testing.assert_close(flat([frozen, param]), expected, rtol=1e-12, atol=1e-13)
    assert not frozen.requires_grad
    assert param.grad is None


@pytest.mark.parametrize("memory", [None, 5], ids=["dense", "fifo"])
def test_zero_element_params_are_skipped(backend, memory):
    """Empty tensors take no coordinates; blocks span tensors and wrap around mod n."""
    a = torch.randn(3, dtype=F64)
    e1 = torch.zeros(0, dtype=F64)
    s = torch.tensor(0.7, dtype=F64)  # 0-dim: one coordinate
    e2 = torch.zeros(2, 0, dtype=F64, requires_grad=True)
    b = torch.randn(2, 2, dtype=F64, requires_grad=True)
    h0, h1 = hyper(lr=0.05, eps=0.1, momentum=0.9), hyper(lr=0.02, eps=0.2, weight_decay=0.1)
    groups = [{"params": [a, e1, s], **h0}, {"params": [e2, b], **h1}]
    params = [a, e1, s, e2, b]
    f = bumpy(8)
    ref = HandRolled(flat(params).tolist(), [4, 4], [h0, h1], B=3, m=memory)
    opt = CoCD(groups, compute_budget=3, memory_budget=memory, backend=backend)
    for _ in range(5):  # blocks [0,1,2], [3,4,5], [6,7,0], [1,2,3], [4,5,6]
        opt.step(closure_of(f, params))
        ref.step(on_list(f))
        assert_matches(opt, params, ref)
    assert e1.shape == (0,)
    assert e2.shape == (2, 0)
    assert s.shape == ()

"""The random-direction peers: SPSA, ZO-SGD and MeZO (cocd_cuda.baselines)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cocd_cuda.baselines import SPSA, ZOSGD, MeZO

ALL = [SPSA, ZOSGD, MeZO]


def quadratic(n=6, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=dtype)
    A = a @ a.T / n + torch.eye(n, dtype=dtype)
    b = torch.randn(n, generator=gen, dtype=dtype)
    x0 = torch.randn(n, generator=gen, dtype=dtype)
    return A, b, x0


def small_mlp(device="cpu", dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    model = model.to(device, dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(16, 5, generator=gen).to(device, dtype)
    y = torch.randn(16, 2, generator=gen).to(device, dtype)

    def closure():
        return torch.nn.functional.mse_loss(model(x), y)

    return model, closure


def estimate(cls, x0, f, seed, q=1, **kw):
    """The optimizer's gradient estimate: with lr = 1, g = x - x_new."""
    x = x0.clone()
    opt = cls([x], lr=1.0, eps=1e-2, num_directions=q, seed=seed, **kw)
    opt.step(lambda: f(x))
    return x0 - x


@pytest.mark.parametrize("cls", ALL)
def test_estimate_mean_approaches_gradient(cls):
    A, b, x0 = quadratic()

    def f(x):
        return 0.5 * x @ A @ x - b @ x

    grad = A @ x0 - b
    seeds = 2000
    mean = sum(estimate(cls, x0, f, seed, q=4) for seed in range(seeds)) / seeds
    rel = float((mean - grad).norm() / grad.norm())
    assert rel < 0.1, rel
    # a single estimate is far from the gradient: the average is what converges
    one = estimate(cls, x0, f, 0, q=1)
    assert float((one - grad).norm() / grad.norm()) > rel


def test_spsa_directions_are_rademacher_and_zosgd_gaussian():
    A, b, x0 = quadratic(n=400)

    def f(x):
        return 0.5 * x @ A @ x - b @ x

    g = estimate(SPSA, x0, f, seed=3)
    # on a quadratic the central difference is exact: g = (d . grad) d, |d_i| = 1
    assert torch.allclose(g.abs(), g.abs()[0].expand_as(g), rtol=1e-9)
    z = estimate(ZOSGD, x0, f, seed=3)
    z = z / (z @ (A @ x0 - b)).abs().sqrt()  # = +-d, d ~ N(0, I)
    assert abs(float(z.std()) - 1.0) < 0.15
    assert len(torch.unique(z.abs())) > 300


@pytest.mark.parametrize("cls", ALL)
def test_fixed_seed_gives_identical_runs(cls, device):
    runs = []
    for seed in (7, 7, 8):
        model, closure = small_mlp(device)
        opt = cls(model.parameters(), lr=0.05, eps=1e-3, num_directions=3, seed=seed)
        losses = [opt.step(closure) for _ in range(5)]
        runs.append((torch.stack(losses), torch.cat([p.reshape(-1) for p in model.parameters()])))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][1], runs[2][1])


def test_mezo_takes_the_same_steps_as_zosgd(device):
    params = []
    for cls in (ZOSGD, MeZO):
        model, closure = small_mlp(device)
        opt = cls(model.parameters(), lr=0.1, eps=1e-2, num_directions=4, weight_decay=0.3,
                  seed=11, chunk_size=8)  # fmt: skip
        for _ in range(4):
            opt.step(closure)
        params.append(torch.cat([p.reshape(-1) for p in model.parameters()]))
    if device == "cpu":
        assert torch.equal(params[0], params[1])
    else:
        torch.testing.assert_close(params[0], params[1])


@pytest.mark.parametrize("cls", ALL)
def test_counts_two_evaluations_per_direction(cls):
    model, closure = small_mlp()
    calls = []

    def counting():
        calls.append(1)
        return closure()

    opt = cls(model.parameters(), num_directions=5, seed=0)
    assert opt.evaluations_per_step == 10
    for step in range(1, 4):
        opt.step(counting)
        assert len(calls) == 10 * step
        assert opt.evaluations == 10 * step
        assert opt.step_count == step


@pytest.mark.parametrize("cls", ALL)
def test_returns_mean_loss_as_0dim_tensor(cls):
    model, closure = small_mlp()
    values = []

    def recording():
        out = closure()
        values.append(float(out))
        return out

    opt = cls(model.parameters(), num_directions=3, seed=0)
    loss = opt.step(recording)
    assert loss.shape == () and loss.dtype == torch.float32
    assert float(loss) == pytest.approx(sum(values) / len(values), rel=1e-6)


@pytest.mark.parametrize("cls", ALL)
def test_weight_decay_is_decoupled(cls):
    x = torch.randn(50)
    x0 = x.clone()
    opt = cls([x], lr=0.1, eps=1e-2, weight_decay=0.5, num_directions=2, seed=0)
    opt.step(lambda: torch.tensor(1.0))  # flat objective: zero estimate, decay only
    assert torch.equal(x, x0 * (1 - 0.1 * 0.5))


class AllocationLog(TorchDispatchMode):
    """Records the element count of every tensor an aten op newly allocates."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat_in, _ = tree_flatten((args, kwargs))
        inputs = {t.untyped_storage().data_ptr() for t in flat_in if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.sizes.append((str(func), t.numel()))
        return out


@pytest.mark.parametrize("exact", [True, False])
def test_mezo_allocates_nothing_parameter_sized_per_step(exact):
    w = torch.randn(5000)
    m = torch.randn(40, 50)
    a, v = torch.randn(5000), torch.randn(50)

    def closure():  # allocates only scalars and a 40-vector
        return torch.dot(w, a) + torch.mv(m, v).sum()

    opt = MeZO([w, m], lr=1e-3, eps=1e-3, num_directions=3, seed=0,
               chunk_size=512, exact_restore=exact)  # fmt: skip
    opt.step(closure)  # warm-up outside the log
    with AllocationLog() as log:
        opt.step(closure)
    largest = max(n for _, n in log.sizes)
    assert largest <= 512, sorted(log.sizes, key=lambda s: -s[1])[:3]

    # the same log sees ZO-SGD's per-step temporaries of parameter size
    zo = ZOSGD([w, m], lr=1e-3, eps=1e-3, num_directions=3, seed=0, chunk_size=512)
    with AllocationLog() as log:
        zo.step(closure)
    assert max(n for _, n in log.sizes) >= 5000


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_mezo_restores_parameters_exactly(dtype, device):
    gen = torch.Generator().manual_seed(0)
    # magnitudes from 1e-6 to 1e2: eps * z both far above and far below x
    w = torch.randn(3000, generator=gen) * 10 ** torch.empty(3000).uniform_(-6, 2, generator=gen)
    w = w.to(device, dtype)
    saved = w.clone()
    opt = MeZO([w], lr=0.0, eps=1e-1, num_directions=4, seed=1, chunk_size=700)
    for _ in range(3):
        opt.step(lambda: (w.float() ** 2).sum())
    assert torch.equal(w, saved)


def test_mezo_in_place_restore_is_not_exact():
    """Why exact_restore keeps a copy: round(round(x + e z) - 2 e z) + e z) != x."""
    w = torch.full((2000,), 1e-7)
    saved = w.clone()
    opt = MeZO([w], lr=0.0, eps=1e-1, num_directions=1, seed=1, exact_restore=False)
    opt.step(lambda: w.sum())
    assert not torch.equal(w, saved)
    torch.testing.assert_close(w, saved, atol=1e-7, rtol=0)  # close, to rounding


@pytest.mark.parametrize("cls", ALL)
def test_closure_error_restores_everything(cls):
    model, closure = small_mlp()
    opt = cls(model.parameters(), lr=0.1, num_directions=3, seed=4)
    opt.step(closure)
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return closure()

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(failing)
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, b)
    assert opt.step_count == 1 and opt.evaluations == 6

    # the failed step left no trace: the next step equals a fresh run's second step
    model2, closure2 = small_mlp()
    opt2 = cls(model2.parameters(), lr=0.1, num_directions=3, seed=4)
    opt2.step(closure2)
    assert torch.equal(opt.step(closure), opt2.step(closure2))
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("cls", ALL)
def test_nonfinite_loss_raises_and_changes_nothing(cls):
    x = torch.randn(20)
    saved = x.clone()
    opt = cls([x], lr=0.1, num_directions=2, seed=0)
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step(lambda: torch.tensor(float("nan")))
    assert torch.equal(x, saved) and opt.step_count == 0 and opt.evaluations == 0


@pytest.mark.parametrize("cls", ALL)
def test_state_dict_resumes_bit_for_bit(cls):
    model, closure = small_mlp()
    opt = cls(model.parameters(), lr=0.05, num_directions=2, seed=9)
    for _ in range(3):
        opt.step(closure)
    state = opt.state_dict()
    snapshot = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        opt.step(closure)

    model2, closure2 = small_mlp()
    with torch.no_grad():
        for p, s in zip(model2.parameters(), snapshot, strict=True):
            p.copy_(s)
    opt2 = cls(model2.parameters(), lr=0.05, num_directions=2, seed=123)
    opt2.load_state_dict(state)
    for _ in range(2):
        opt2.step(closure2)
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert opt2.step_count == 5 and opt2.evaluations == 20


def test_lr_is_read_from_param_groups_each_step():
    x = torch.randn(10)
    opt = ZOSGD([x], lr=0.1, weight_decay=1.0, seed=0)
    opt.param_groups[0]["lr"] = 0.0
    saved = x.clone()
    opt.step(lambda: x.sum())
    assert torch.equal(x, saved)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-1.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(eps=0.0), "eps"),
        (dict(num_directions=0), "num_directions"),
        (dict(num_directions=True), "num_directions"),
        (dict(weight_decay=-0.1), "weight_decay"),
        (dict(seed=-1), "seed"),
    ],
)
@pytest.mark.parametrize("cls", ALL)
def test_invalid_options_are_rejected(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([torch.zeros(3)], **kwargs)


@pytest.mark.parametrize("cls", ALL)
def test_needs_a_closure(cls):
    opt = cls([torch.zeros(3)], seed=0)
    with pytest.raises(TypeError, match="closure"):
        opt.step()

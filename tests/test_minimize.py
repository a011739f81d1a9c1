"""cocd_cuda.minimize: steps computed by hand, exact evaluation counts, bounds and errors."""

import math

import numpy as np
import pytest
import torch

import cocd_cuda
from cocd_cuda import minimize

A = np.array([1.0, 3.0])


def quad(x):
    """f(x) = x0^2 + 3 x1^2; central differences are exact for it: g = (2 x0, 6 x1)."""
    return float(np.sum(A * x * x))


def test_one_full_step_by_hand():
    # B = n, one step: x1 = x0 - lr g(x0) = (1 - 0.1*2, -2 - 0.1*(-12)) = (0.8, -0.8)
    res = minimize(quad, [1.0, -2.0], max_evals=6, compute_budget=2, lr=0.1, eps=0.5)
    np.testing.assert_allclose(res.x, [0.8, -0.8], rtol=0, atol=1e-12)
    assert res.fun == pytest.approx(0.64 + 3 * 0.64, abs=1e-12)
    np.testing.assert_allclose(res.jac, [2.0, -12.0], atol=1e-12)
    # 1 at x0 + 2B = 4 for the step + 1 at the end
    assert (res.nfev, res.nit, res.status, res.success) == (6, 1, 1, False)
    assert "budget" in res.message
    assert isinstance(res.x, np.ndarray) and res.x.dtype == np.float64


def test_two_coordinate_steps_with_momentum_by_hand():
    # B = 1, momentum 0.5. Step 1 refreshes coordinate 0: v = (2, 0), x = (0.8, -2).
    # Step 2 decays v to (1, 0) and refreshes coordinate 1 at x1 = -2: v = (1, -12),
    # x = (0.8 - 0.1, -2 + 1.2) = (0.7, -0.8).
    res = minimize(quad, [1.0, -2.0], maxiter=2, compute_budget=1, lr=0.1, eps=0.5, momentum=0.5)
    np.testing.assert_allclose(res.x, [0.7, -0.8], atol=1e-12)
    np.testing.assert_allclose(res.jac, [1.0, -12.0], atol=1e-12)
    assert (res.nit, res.nfev) == (2, 1 + 2 * 2 + 1)


@pytest.mark.parametrize(
    "central, max_evals, steps",
    [
        (True, 20, 4),  # 1 + 4k + 1 <= 20 -> k = 4, nfev 18
        (True, 5, 0),  # one step (4) plus the final evaluation does not fit: x0 only
        (False, 20, 6),  # forward: B + 1 = 3 per step, 1 + 3k + 1 <= 20 -> k = 6
    ],
)
def test_budget_is_counted_exactly(central, max_evals, steps):
    calls = []

    def f(x):
        calls.append(x.copy())
        return quad(x[:2]) + x[2] ** 2

    res = minimize(
        f,
        [1.0, -2.0, 0.5],
        max_evals=max_evals,
        compute_budget=2,
        lr=0.01,
        central_difference=central,
    )
    per_step = 4 if central else 3
    expected = 1 + steps * per_step + (1 if steps else 0)
    assert res.nit == steps
    assert res.nfev == len(calls) == expected <= max_evals
    if steps == 0:
        np.testing.assert_array_equal(res.x, [1.0, -2.0, 0.5])
        assert res.fun == quad(np.array([1.0, -2.0])) + 0.25
    # the last call is at the returned point, and fun is its value
    np.testing.assert_array_equal(calls[-1], res.x)


def test_converges_on_an_ill_conditioned_quadratic():
    n = 20
    scales = np.logspace(0, 2, n)

    def f(x):
        return float(np.sum(scales * x * x))

    res = minimize(f, np.ones(n), max_evals=40_000, compute_budget=5, lr=1e-3, momentum=0.9)
    assert res.fun < 1e-6 * f(np.ones(n))


def test_torch_function_gets_tensors_and_returns_tensor_x():
    seen = []

    def f(x):
        seen.append((type(x), x.dtype))
        return (x**2).sum()

    x0 = torch.tensor([1.0, -1.0], dtype=torch.float32)
    res = minimize(f, x0, max_evals=6, compute_budget=2, lr=0.25, eps=0.5)
    assert set(seen) == {(torch.Tensor, torch.float32)}
    assert isinstance(res.x, torch.Tensor) and res.x.dtype == torch.float32
    torch.testing.assert_close(res.x, torch.tensor([0.5, -0.5]))  # x - 0.25 * 2x
    assert x0.tolist() == [1.0, -1.0]  # x0 is never modified


def test_fun_may_keep_or_modify_its_argument():
    kept = []

    def f(x):
        kept.append(x)
        value = quad(x)
        x[:] = 1e9  # scribbling on the argument must not reach the optimizer
        return value

    res = minimize(f, [1.0, -2.0], max_evals=6, compute_budget=2, lr=0.1, eps=0.5)
    np.testing.assert_allclose(res.x, [0.8, -0.8], atol=1e-12)
    assert len({id(k) for k in kept}) == len(kept)


def test_bounds_clip_x0_and_every_step():
    # unconstrained, the step from (1, -2) goes to (0.8, -0.8); the box stops x1 at -1.5
    res = minimize(
        quad, [3.0, -2.0], max_evals=6, compute_budget=2, lr=0.1, eps=0.5,
        bounds=[(None, 1.0), (-3.0, -1.5)],
    )  # fmt: skip
    np.testing.assert_allclose(res.x, [0.8, -1.5], atol=1e-12)

    class Box:  # anything with lb / ub, like scipy.optimize.Bounds
        lb, ub = np.array([-1.0, -1.0]), np.array([1.0, 1.0])

    res = minimize(quad, [5.0, 0.0], max_evals=2, bounds=Box())
    np.testing.assert_array_equal(res.x, [1.0, 0.0])


def test_callback_sees_each_step_and_can_stop():
    seen = []

    def cb(info):
        seen.append((info.nit, info.nfev, info.x.copy()))
        return info.nit == 3

    res = minimize(quad, [1.0, -2.0], compute_budget=1, lr=0.1, callback=cb)
    assert [s[0] for s in seen] == [1, 2, 3]
    assert [s[1] for s in seen] == [3, 5, 7]
    assert (res.status, res.success, res.nit, res.nfev) == (2, False, 3, 8)
    np.testing.assert_array_equal(seen[-1][2], res.x)


def test_gtol_stops_at_a_stationary_point():
    res = minimize(lambda x: 5.0, [1.0, 2.0, 3.0], compute_budget=2, gtol=0.0)
    assert (res.status, res.success, res.nit) == (0, True, 2)  # one whole cycle
    np.testing.assert_array_equal(res.x, [1.0, 2.0, 3.0])


def test_progress_bar_counts_evaluations(capsys):
    pytest.importorskip("tqdm")
    res = minimize(quad, [1.0, -2.0], max_evals=30, compute_budget=2, progress=True)
    assert res.nfev == 1 + 7 * 4 + 1
    assert f"{res.nfev}/30" in capsys.readouterr().err


@pytest.mark.parametrize(
    "x0, match",
    [
        ([[1.0, 2.0]], r"1-D with shape \(n,\), got shape \(1, 2\)"),
        (3.0, r"got shape \(\)"),
        ([], "empty"),
        ([1.0, math.nan], r"non-finite entries \(indices \[1\]\)"),
        (["a", "b"], "real numbers"),
        (torch.tensor([1j]), "complex"),
    ],
)
def test_bad_x0_is_rejected(x0, match):
    with pytest.raises(ValueError, match=match):
        minimize(quad, x0)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(max_evals=0), "max_evals: 0"),
        (dict(compute_budget=1.5), "compute_budget: 1.5"),
        (dict(gtol=-1.0), "gtol"),
        (dict(lr=-1.0), "lr"),
        (dict(bounds=[(0, 1)]), r"2 \(lo, hi\) pairs"),
        (dict(bounds=[(0, 1), (2, 1)]), "coordinate 1 are empty"),
    ],
)
def test_bad_options_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        minimize(quad, [1.0, 2.0], **kw)


def test_nonfinite_start_and_fun_value():
    with pytest.raises(ValueError, match=r"fun\(x0\) = nan"):
        minimize(lambda x: math.nan, [1.0])
    with pytest.raises(TypeError, match="real scalar"):
        minimize(lambda x: "x", [1.0])
    with pytest.raises(ValueError, match="scalar"):
        minimize(lambda x: torch.ones(2), torch.ones(2))


def test_nonfinite_during_the_run_raises_with_the_last_point():
    # log(x) is finite at x0 = 1 but not beyond x < 0: step 1 lands at x = 1 - 2 * 1 = -1
    def f(x):
        return math.log(x[0]) if x[0] > 0 else math.nan

    with pytest.raises(FloatingPointError, match="step 2") as info:
        minimize(f, [1.0], compute_budget=1, lr=2.0, eps=1e-3, max_evals=100)
    np.testing.assert_allclose(info.value.result.x, [1.0 - 2.0 * 1.0], atol=1e-6)
    assert info.value.result.nit == 1

    res = minimize(f, [1.0], compute_budget=1, lr=2.0, eps=1e-3, max_evals=12, nonfinite="zero")
    assert res.nit == 5 and math.isnan(res.fun)


def test_exported_from_the_package():
    assert cocd_cuda.minimize is minimize
    r = cocd_cuda.OptimizeResult(x=1)
    assert r.x == 1 and r["x"] == 1

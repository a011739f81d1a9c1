"""HybridCD (cocd_cuda.baselines): one Jacobi sweep computed by hand, batched = sequential."""

import pytest
import torch

import cocd_cuda
from cocd_cuda.baselines import HybridCD

X0 = [1.0, 0.1, -0.1, 0.0]


def sum_of_squares(x):
    return lambda: (x * x).sum()


@pytest.mark.parametrize("gradient", ["exact", "zeroth"])
def test_one_sweep_by_hand(gradient):
    # f = sum x^2 at (1, 0.1, -0.1, 0): g = (2, 0.2, -0.2, 0); threshold 0.5.
    # x0: |g| > 0.5, gradient step: x* - x = -0.25 * 2 = -0.5.
    # x1 = 0.1: s = 0.5 gives 0.6^2, (-0.4)^2; s = 0.25 gives 0.35^2, (-0.15)^2, all above
    #   0.1^2; s = 0.125 gives (-0.025)^2 < 0.01: x* - x = -0.125.
    # x2 = -0.1: the mirror image, +0.125.  x3 = 0: every trial point is worse, no move.
    # alpha = 0.5: x = (0.75, 0.0375, -0.0375, 0).
    x = torch.tensor(X0, dtype=torch.float64, requires_grad=gradient == "exact")
    opt = HybridCD([x], threshold=0.5, alpha=0.5, lr=0.25, gradient=gradient, tries=10)
    loss = opt.step(sum_of_squares(x))
    assert float(loss) == pytest.approx(1.02, abs=1e-12)
    torch.testing.assert_close(
        x.detach(),
        torch.tensor([0.75, 0.0375, -0.0375, 0.0], dtype=torch.float64),
        atol=1e-9,
        rtol=0,
    )
    # f(x); 3 halvings for x1, x2 and x3 (2 points each), then 7 more for x3 alone;
    # the zeroth-order variant adds 2 points per coordinate for its differences
    line_search = 3 * 3 * 2 + 7 * 2
    assert opt.evaluations == 1 + line_search + (8 if gradient == "zeroth" else 0)
    assert opt.gradients == (1 if gradient == "exact" else 0)


def test_threshold_sends_every_coordinate_to_a_gradient_step():
    # threshold below every |g| except the zero one: plain gradient descent, damped by alpha
    x = torch.tensor([1.0, 0.1, -0.1], dtype=torch.float64, requires_grad=True)
    opt = HybridCD([x], threshold=0.1, alpha=0.5, lr=0.25, tries=1)
    opt.step(sum_of_squares(x))
    torch.testing.assert_close(x.detach(), torch.tensor([0.75, 0.075, -0.075], dtype=torch.float64))
    assert opt.evaluations == 1  # no line search at all


def _net():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    # float64: the zeroth-order variant divides rounding differences by eps
    inputs, targets = torch.randn(6, 3).double(), torch.randn(6, 1).double()
    model.double()
    return model, inputs, targets


@pytest.mark.parametrize("gradient", ["exact", "zeroth"])
def test_batched_model_objective_matches_plain_closure(gradient):
    runs = []
    for batched in (True, False):
        model, inputs, targets = _net()
        obj = cocd_cuda.ModelObjective(model, torch.nn.MSELoss(), inputs, targets, "layered")

        def plain(model=model, inputs=inputs, targets=targets):
            return torch.nn.functional.mse_loss(model(inputs), targets)

        opt = HybridCD(model.parameters(), threshold=0.05, alpha=0.3, gradient=gradient)
        losses = [float(opt.step(obj if batched else plain)) for _ in range(5)]
        runs.append((losses, [p.detach().clone() for p in model.parameters()], opt.evaluations))
    (l1, p1, e1), (l2, p2, e2) = runs
    assert e1 == e2
    assert l1 == pytest.approx(l2, rel=1e-9)
    for a, b in zip(p1, p2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert l1[-1] < l1[0]


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(threshold=0.0), "threshold"),
        (dict(alpha=-1.0), "alpha"),
        (dict(gradient="fd"), "'exact' or 'zeroth'"),
        (dict(tries=0), "tries"),
        (dict(eps=0.0), "eps"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        HybridCD([torch.zeros(2, requires_grad=True)], **kw)


def test_exact_needs_grad():
    with pytest.raises(ValueError, match="requires_grad_"):
        HybridCD([torch.zeros(2)])

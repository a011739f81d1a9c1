"""Figure 5's measurement: the full finite-difference gradient and the buffer's error
(benchmarks/grad_error.py)."""

import copy
import json

import pytest
import torch
from conftest import needs_sarcos
from torch import nn
from torch.nn import functional as F

import cocd_cuda
from benchmarks import grad_error, models


def settings(lr=0.05, momentum=1.0, eps=0.5, weight_decay=1e-2):
    return dict(
        lr=lr,
        momentum=momentum,
        eps=eps,
        weight_decay=weight_decay,
        backend="auto",
        strategy="auto",
    )


def tiny_mlp(seed=1):
    """21-4-4-4-4-7 in float64: 183 parameters, the SARCOS net's shape (seed 1: no dead
    first-layer unit, so the first blocks have non-zero differences)."""
    torch.manual_seed(seed)
    return models.sarcos_mlp(hidden=4).double()


def batches(count, rows=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(rows, 21, generator=gen, dtype=torch.float64),
            torch.randn(rows, 7, generator=gen, dtype=torch.float64) * 3,
        )
        for _ in range(count)
    ]


def fd_at(model, batch, eps):
    """grad_eps f at the model's current weights on one batch."""
    opt = cocd_cuda.CoCD(model.parameters(), eps=eps, compute_budget=1)
    return grad_error.fd_gradient(cocd_cuda.ModelObjective(model, F.mse_loss, *batch), opt)


def test_fd_gradient_equals_hand_computed_values():
    """f(w, b) = relu(2w + b)^2 at w = 0.25, b = -0.25 with eps = 1:
    w: f(1.25, -0.25) = 2.25^2 = 5.0625, f(-0.75, -0.25) = 0 -> 5.0625 / 2 = 2.53125;
    b: f(0.25, 0.75) = 1.25^2 = 1.5625, f(0.25, -1.25) = 0 -> 1.5625 / 2 = 0.78125.
    (The exact gradient is (1.0, 0.5): the radius matters.)"""
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU()).double()
    with torch.no_grad():
        model[0].weight.fill_(0.25)
        model[0].bias.fill_(-0.25)
    x = torch.tensor([[2.0]], dtype=torch.float64)
    y = torch.zeros(1, 1, dtype=torch.float64)
    g = fd_at(model, (x, y), eps=1.0)
    assert g.tolist() == [2.53125, 0.78125]
    assert model[0].weight.item() == 0.25 and model[0].bias.item() == -0.25  # restored


def test_fd_gradient_equals_sequential_perturbation():
    """Every parameter's first and last coordinate, perturbed in place and evaluated."""
    model, batch, eps = tiny_mlp(), batches(1)[0], 0.5
    g = fd_at(model, batch, eps)
    n = sum(p.numel() for p in model.parameters())
    assert g.shape == (n,)
    start = 0
    for p in model.parameters():
        flat = p.data.view(-1)
        for k in (0, p.numel() - 1):
            original = flat[k].item()
            values = []
            for value in (original + eps, original - eps):
                flat[k] = value
                with torch.no_grad():
                    values.append(F.mse_loss(model(batch[0]), batch[1]).item())
            flat[k] = original
            h = (original + eps) - (original - eps)
            expected = (values[0] - values[1]) / h
            assert g[start + k].item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
        start += p.numel()
    assert g.abs().min() < g.abs().max() / 10  # distinct values: a shuffled order would fail


def test_error_is_zero_when_every_coordinate_is_refreshed():
    """B = n: the buffer after step t holds the finite differences at x_t, the point the
    step started from, so the error is 0 at every step (and it is not at x_{t+1})."""
    model, data_, s = tiny_mlp(), batches(3), settings()
    n = sum(p.numel() for p in model.parameters())
    run = grad_error.train_and_measure(model, data_, s, n, every=1)
    assert run["status"] == "ok" and [r["step"] for r in run["measurements"]] == [1, 2, 3]
    for r in run["measurements"]:
        assert r["fd_norm"] > 0.1
        assert r["error"] <= 1e-12 * r["fd_norm"]
    # The premise: measured at x_{t+1} instead, the same buffer would be off.
    model = tiny_mlp()
    opt = cocd_cuda.CoCD(
        model.parameters(),
        lr=s["lr"],
        eps=s["eps"],
        compute_budget=n,
        momentum=s["momentum"],
        weight_decay=s["weight_decay"],
    )
    opt.step(cocd_cuda.ModelObjective(model, F.mse_loss, *data_[0]))
    moved = fd_at(model, data_[0], s["eps"])
    assert float((grad_error.buffer(opt) - moved).norm()) > 1e-3 * float(moved.norm())


def test_error_after_two_steps_counts_stale_and_missing_estimates():
    """B < n, momentum gamma. After step 1 the buffer is g0 = grad_eps f(x_0) on block 0
    and 0 elsewhere; after step 2 it is gamma g0 on block 0, g1 = grad_eps f(x_1) on
    block 1 and 0 elsewhere, so the errors are ||g0[B:]|| and
    ||(gamma g0 - g1)[:B], 0, g1[2B:]||, with g0, g1 computed here step by step."""
    B, gamma = 40, 0.5
    model, data_, s = tiny_mlp(), batches(2), settings(momentum=gamma)
    start = copy.deepcopy(model)
    run = grad_error.train_and_measure(model, data_, s, B, every=1)
    errors = [r["error"] for r in run["measurements"]]

    g0 = fd_at(start, data_[0], s["eps"])
    opt = cocd_cuda.CoCD(
        start.parameters(),
        lr=s["lr"],
        eps=s["eps"],
        compute_budget=B,
        momentum=gamma,
        weight_decay=s["weight_decay"],
    )
    opt.step(cocd_cuda.ModelObjective(start, F.mse_loss, *data_[0]))
    g1 = fd_at(start, data_[1], s["eps"])
    expected = [
        float(g0[B:].norm()),
        float(torch.cat([gamma * g0[:B] - g1[:B], g1[2 * B :]]).norm()),
    ]
    assert errors == pytest.approx(expected, rel=1e-6)
    assert expected[1] != pytest.approx(float(g1[B:].norm()), rel=1e-3)  # the stale part counts


def test_batch_noise_compares_two_batches_at_the_same_point():
    """The noise at step 1 is ||grad_eps f_0(x_0) - grad_eps f_1(x_0)||; the step's own
    error (B = n) stays 0: measuring the noise leaves the step's batch in place."""
    model, data_, s = tiny_mlp(), batches(2), settings()
    n = sum(p.numel() for p in model.parameters())
    start = copy.deepcopy(model)
    run = grad_error.train_and_measure(model, data_, s, n, every=1, noise=True)
    first = run["measurements"][0]
    expected = fd_at(start, data_[0], s["eps"]) - fd_at(start, data_[1], s["eps"])
    assert first["batch_noise"] == pytest.approx(float(expected.norm()), rel=1e-9)
    assert first["batch_noise"] > 0.1 and first["error"] <= 1e-12 * first["fd_norm"]
    assert grad_error.summarise(run, n)["mean_batch_noise"] == pytest.approx(
        sum(r["batch_noise"] for r in run["measurements"]) / 2
    )


def test_log_fit_of_an_exact_line():
    fit = grad_error.log_fit([16, 64, 256], [10.0, 8.0, 6.0])  # -2 per two doublings
    assert fit["slope_per_doubling"] == pytest.approx(-1.0)
    assert fit["intercept"] == pytest.approx(14.0)  # 10 = a - 4
    assert fit["r2"] == pytest.approx(1.0)


def test_summary_separates_the_first_cycle():
    run = {
        "budget": 100,
        "measurements": [
            {"step": s, "error": e, "fd_norm": 2.0, "loss": 1.0}
            for s, e in ((1, 9.0), (2, 7.0), (3, 3.0), (4, 1.0))
        ],
    }
    sm = grad_error.summarise(run, n=250)  # a cycle is 3 steps
    assert sm["steps_per_cycle"] == 3
    assert sm["mean_error"] == 5.0 and sm["mean_error_after_first_cycle"] == 1.0
    assert sm["mean_relative_error"] == 2.5
    assert grad_error.summarise(run, n=250, early=2)["mean_error_early"] == 8.0


@needs_sarcos
def test_command_on_sarcos_with_the_whole_net_in_one_block(tmp_path):
    out = tmp_path / "fig5.json"
    result = grad_error.main(
        ["--budgets", "4103", "--steps", "2", "--every", "1", "--out", str(out)]
    )
    saved = json.loads(out.read_text())
    assert saved["settings"]["parameters"] == 4103
    assert (saved["settings"]["lr"], saved["settings"]["eps"]) == (1e-3, 1.0)
    assert saved["settings"]["weight_decay"] == 1e-4 and saved["settings"]["momentum"] == 1.0
    (run,) = saved["runs"]
    assert [r["step"] for r in run["measurements"]] == [1, 2]
    for r in run["measurements"]:  # fp32 buffer: the error is the buffer's rounding only
        assert r["error"] <= 1e-6 * r["fd_norm"] and r["fd_norm"] > 1.0
    assert (tmp_path / "fig5.md").is_file() and result["runs"][0]["budget"] == 4103
    with pytest.raises(SystemExit, match="exists"):
        grad_error.main(["--budgets", "4103", "--steps", "1", "--out", str(out)])
    (tmp_path / "fig5.md").unlink()
    again = grad_error.main(["--out", str(out), "--replot"])
    assert (tmp_path / "fig5.md").is_file()
    assert again["runs"][0]["summary"] == result["runs"][0]["summary"]

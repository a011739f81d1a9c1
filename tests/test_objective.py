"""ModelObjective: every strategy evaluates exactly the sequential path's points."""

import pytest
import torch
from torch import nn

from cocd_cuda import CoCD, ModelObjective
from cocd_cuda.evaluation import Block
from cocd_cuda.layout import ParamLayout


def mlp():
    return nn.Sequential(
        nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 3)
    )


def cnn():
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(inplace=True),  # in place: the kept activations must not be overwritten
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, (2, 3), stride=2, padding=(1, 2), dilation=(1, 2)),
        nn.GELU(),
        nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()),
        nn.Linear(16, 3),
        nn.Sigmoid(),
    )


def randomise(model):
    """Non-trivial weights and running statistics, in float64, eval mode."""
    gen = torch.Generator().manual_seed(3)
    model = model.double().eval()
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            t.data = torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5
    for p in model.parameters():
        p.data -= 1.0  # weights and biases in [-0.5, 0.5)
    return model


DATA = {
    "mlp": (lambda: torch.randn(7, 5, dtype=torch.float64)),
    "cnn": (lambda: torch.randn(3, 2, 8, 9, dtype=torch.float64)),
}
MODELS = {"mlp": mlp, "cnn": cnn}
LOSSES = {
    "mse": (nn.MSELoss(), lambda x: torch.randn(x.shape[0], 3, dtype=torch.float64)),
    "cross-entropy": (nn.CrossEntropyLoss(), lambda x: torch.arange(x.shape[0]) % 3),
}


def objective(model_name, loss_name, strategy, **kwargs):
    torch.manual_seed(0)
    model = randomise(MODELS[model_name]())
    x = DATA[model_name]()
    loss_fn, make_y = LOSSES[loss_name]
    return model, ModelObjective(model, loss_fn, x, make_y(x), strategy=strategy, **kwargs)


def first_block(opt, eps: float) -> Block:
    """The points of ``opt``'s first step, with every group's eps set to ``eps``."""
    layout = ParamLayout(opt.param_groups)
    eps_all = [eps] * len(opt.param_groups)
    return Block.at(layout, 0, opt.compute_budget, eps_all, opt.central_difference)


def block_losses(model_name, loss_name, strategy, central, **kwargs):
    """All of a step's losses with every coordinate in the block (B = n)."""
    model, obj = objective(model_name, loss_name, strategy, **kwargs)
    params = list(model.parameters())
    opt = CoCD(params, compute_budget=10**6, central_difference=central, eps=0.01)
    return obj.evaluate_block(first_block(opt, 0.01))


@pytest.mark.parametrize("central", [True, False], ids=["central", "forward"])
@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("strategy", ["batched", "layered"])
def test_block_losses_equal_sequential(strategy, model_name, loss_name, central):
    expected = block_losses(model_name, loss_name, "sequential", central)
    got = block_losses(model_name, loss_name, strategy, central)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-13)
    # The points differ: a wrong coordinate mapping could not pass the comparison above.
    assert expected.unique().numel() > expected.numel() // 2


@pytest.mark.parametrize("mode", ["dense", "fifo"])
@pytest.mark.parametrize("strategy", ["batched", "layered"])
def test_training_trajectory_equals_sequential(strategy, mode, backend):
    """Whole steps through CoCD: parameters and buffer match the sequential strategy."""
    finals = {}
    for strat in ("sequential", strategy):
        model, obj = objective("cnn", "cross-entropy", strat)
        extra = dict(memory_budget=40) if mode == "fifo" else {}
        opt = CoCD(
            model.parameters(), lr=0.05, compute_budget=17, momentum=0.9, backend=backend, **extra
        )
        for _ in range(12):
            opt.step(obj)
        finals[strat] = (torch.cat([p.reshape(-1) for p in model.parameters()]), opt._state.v)
    torch.testing.assert_close(finals[strategy][0], finals["sequential"][0], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(finals[strategy][1], finals["sequential"][1], rtol=1e-9, atol=1e-11)


def test_fp32_model_agrees_within_rounding():
    """fp32: the rank-one update rounds differently; estimates agree to fp32 noise / eps."""
    torch.manual_seed(0)
    results = {}
    for strategy in ("sequential", "layered", "batched"):
        model, obj = objective("mlp", "mse", strategy)
        model.float()
        obj.set_batch(obj.inputs.float(), obj.targets.float())
        opt = CoCD(model.parameters(), compute_budget=10**6, eps=0.05)
        results[strategy] = obj.evaluate_block(first_block(opt, 0.05))
    for strategy in ("layered", "batched"):
        torch.testing.assert_close(results[strategy], results["sequential"], rtol=2e-6, atol=1e-6)


def test_memory_cap_chunks_without_changing_results():
    expected = block_losses("cnn", "mse", "layered", True)
    for strategy in ("layered", "batched"):
        got = block_losses("cnn", "mse", strategy, True, memory_cap=1)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-13)


def test_is_a_plain_closure_too():
    model, obj = objective("mlp", "mse", "auto")
    assert obj.strategy == "layered"
    assert obj().item() == nn.MSELoss()(model(obj.inputs), obj.targets).item()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert sgd.step(obj).item() == obj().item()  # any optimizer accepts it


class Scaled(nn.Module):
    """Not a Sequential, and reads a value on the host: vmap cannot batch it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x):
        return self.lin(x) * float(self.lin.weight.abs().sum())


def test_unsupported_model_falls_back_with_an_explanation():
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"not an nn\.Sequential"):
        obj = ModelObjective(Scaled(), nn.MSELoss(), x, y)
    assert obj.strategy == "batched"
    with pytest.raises(ValueError, match=r"not an nn\.Sequential"):
        ModelObjective(Scaled(), nn.MSELoss(), x, y, strategy="layered")
    model = obj.model
    opt = CoCD(model.parameters(), compute_budget=8)
    block = first_block(opt, 0.1)
    with pytest.warns(UserWarning, match="using the sequential strategy"):
        got = obj.evaluate_block(block)
    assert obj.strategy == "sequential"
    seq = ModelObjective(model, nn.MSELoss(), x, y, strategy="sequential")
    torch.testing.assert_close(got, seq.evaluate_block(block), rtol=0, atol=0)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_train_mode_batch_norm_is_layered_with_each_points_statistics(model_name):
    """Train mode: every point normalises with its own batch statistics, as a plain call."""
    losses = {}
    for strategy in ("sequential", "layered"):
        model, obj = objective(model_name, "cross-entropy", strategy)
        model.train()
        opt = CoCD(list(model.parameters()), compute_budget=10**6, eps=0.01)
        losses[strategy] = obj.evaluate_block(first_block(opt, 0.01))
    torch.testing.assert_close(losses["layered"], losses["sequential"], rtol=1e-12, atol=1e-13)
    # the points differ from the eval-mode ones: the batch statistics were used
    _, eval_obj = objective(model_name, "cross-entropy", "layered")
    opt = CoCD(list(eval_obj.model.parameters()), compute_budget=10**6, eps=0.01)
    assert (eval_obj.evaluate_block(first_block(opt, 0.01)) - losses["layered"]).abs().min() > 1e-6


def test_train_mode_running_statistics_move_once_per_step():
    """The layered strategy updates them with the step's unperturbed forward only."""
    model, obj = objective("cnn", "mse", "auto")
    model.train()
    assert obj.strategy == "layered"
    bn = model[1]
    expected_mean = bn.running_mean.clone()
    expected_var = bn.running_var.clone()
    with torch.no_grad():  # one plain train-mode forward's update, by hand
        h = model[0](obj.inputs)
        mean, var = h.mean(dim=(0, 2, 3)), h.var(dim=(0, 2, 3), unbiased=True)
    expected_mean = 0.9 * expected_mean + 0.1 * mean
    expected_var = 0.9 * expected_var + 0.1 * var
    opt = CoCD(model.parameters(), compute_budget=30)
    opt.step(obj)
    torch.testing.assert_close(bn.running_mean, expected_mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bn.running_var, expected_var, rtol=1e-12, atol=1e-14)
    assert bn.num_batches_tracked.item() == 1


def test_parameters_outside_the_model_are_evaluated_sequentially():
    """A CoCD parameter the model does not own (a temperature the loss reads)."""
    model, obj = objective("mlp", "mse", "layered")
    temperature = torch.tensor([1.5], dtype=torch.float64)
    base_loss = obj.loss_fn
    obj.loss_fn = lambda out, y: base_loss(out * temperature, y)
    opt = CoCD([*model.parameters(), temperature], compute_budget=10**6)
    block = first_block(opt, 0.1)
    got = obj.evaluate_block(block)
    obj.strategy = "sequential"
    torch.testing.assert_close(got, obj.evaluate_block(block), rtol=1e-12, atol=1e-13)
    assert temperature.item() == 1.5  # restored


def test_invalid_arguments():
    model, x = randomise(mlp()), torch.randn(2, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="Invalid strategy: 'fast'"):
        ModelObjective(model, nn.MSELoss(), x, x, strategy="fast")
    with pytest.raises(ValueError, match="Invalid memory_cap: -5"):
        ModelObjective(model, nn.MSELoss(), x, x, memory_cap=-5)

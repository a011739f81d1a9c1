"""ModelObjective on models as frameworks write them: keyword inputs, structured outputs,
torch.compile."""

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cocd_cuda import CoCD, ModelObjective


class KeywordModel(nn.Module):
    """As a Hugging Face model: keyword inputs with a mask, a dict output."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, features=None, attention_mask=None):
        h = torch.tanh(self.embed(features)) * attention_mask[..., None]
        logits = self.head(h.sum(1))
        return {"logits": logits, "hidden": h}


def keyword_batch():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(8, 5, 4, generator=gen, dtype=torch.float64)
    mask = (torch.rand(8, 5, generator=gen) > 0.3).double()
    y = torch.randint(0, 3, (8,), generator=gen)
    return {"features": x, "attention_mask": mask}, y


def keyword_model():
    torch.manual_seed(0)
    return KeywordModel().double()


def run(loss_fn, with_targets, strategy, steps=3, **kw):
    model = keyword_model()
    inputs, y = keyword_batch()
    targets = y if with_targets else None
    obj = ModelObjective(model, loss_fn, inputs, targets, strategy=strategy, **kw)
    opt = CoCD(model.parameters(), lr=0.1, compute_budget=7, backend="reference")
    losses = torch.stack([opt.step(obj) for _ in range(steps)])
    return losses, torch.cat([p.detach().reshape(-1) for p in model.parameters()]), obj


@pytest.mark.parametrize(
    "output",
    ["logits", lambda o: o["logits"]],
    ids=["name", "function"],
)
def test_keyword_inputs_and_output_selector(output):
    inputs, y = keyword_batch()
    model = keyword_model()
    obj = ModelObjective(model, F.cross_entropy, inputs, y, strategy="batched", output=output)
    expected = F.cross_entropy(model(**inputs)["logits"], y)
    assert torch.equal(obj(), expected.detach())
    # The batched strategy (vmap over functional_call with keyword inputs) computes the
    # points the sequential one does.
    seq = run(F.cross_entropy, True, "sequential", output=output)
    bat = run(F.cross_entropy, True, "batched", output=output)
    assert bat[2].strategy == "batched"
    torch.testing.assert_close(bat[0], seq[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bat[1], seq[1], rtol=1e-12, atol=1e-12)
    assert not torch.equal(seq[1], torch.cat([p.reshape(-1) for p in model.parameters()]))


def test_loss_of_the_output_alone():
    """targets=None: the loss reads what it needs from the output (an HF model's .loss)."""
    inputs, _ = keyword_batch()
    model = keyword_model()

    def loss(o):
        return (o["hidden"] ** 2).mean()

    obj = ModelObjective(model, loss, inputs, strategy="batched")
    assert torch.equal(obj(), (model(**inputs)["hidden"] ** 2).mean().detach())
    seq = run(loss, False, "sequential")
    bat = run(loss, False, "batched")
    torch.testing.assert_close(bat[1], seq[1], rtol=1e-12, atol=1e-12)


def test_positional_tuple_inputs():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, u, v):
            return self.a(u) + self.b(v)

    torch.manual_seed(0)
    model = TwoInputs().double()
    u, v = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    y = torch.randn(6, 2, dtype=torch.float64)
    obj = ModelObjective(model, F.mse_loss, (u, v), y, strategy="batched")
    assert torch.equal(obj(), F.mse_loss(model(u, v), y).detach())


def test_loss_that_cannot_take_the_output_fails_at_construction():
    inputs, y = keyword_batch()
    with pytest.raises(TypeError, match=r"fields \['logits', 'hidden'\].*output='logits'"):
        ModelObjective(keyword_model(), F.cross_entropy, inputs, y)
    with pytest.raises(TypeError, match="output='logits'"):
        ModelObjective(keyword_model(), F.cross_entropy, inputs, y, output="logit")


def test_non_scalar_loss_fails_at_construction():
    inputs, y = keyword_batch()
    with pytest.raises(ValueError, match=r"scalar tensor, got a tensor of shape \(8,\)"):
        ModelObjective(
            keyword_model(),
            lambda o, t: F.cross_entropy(o, t, reduction="none"),
            inputs,
            y,
            output="logits",
        )


def test_bad_inputs_and_output_rejected():
    model = keyword_model()
    with pytest.raises(TypeError, match="inputs must be a tensor, a dict"):
        ModelObjective(model, F.cross_entropy, {"features": [1.0]}, None)
    with pytest.raises(TypeError, match="output must be a name"):
        ModelObjective(model, F.cross_entropy, *keyword_batch(), output=3)


def test_keyword_inputs_on_a_sequential_name_the_reason():
    model = nn.Sequential(nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match="the inputs are not one tensor"):
        ModelObjective(
            model,
            lambda o, t: F.mse_loss(o, t),
            (torch.randn(3, 4, dtype=torch.float64),),
            torch.zeros(3, 2, dtype=torch.float64),
            strategy="layered",
        )


def test_compiled_model_keeps_the_layered_strategy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    twin = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    twin.load_state_dict(model.state_dict())
    start = model[0].weight.detach().clone()
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the batched strategy
        obj = ModelObjective(compiled, F.cross_entropy, x, y)
    assert obj.strategy == "layered"
    plain = ModelObjective(twin, F.cross_entropy, x, y, strategy="sequential")
    opts = [
        CoCD(m.parameters(), lr=0.1, compute_budget=5, backend="reference")
        for m in (compiled, twin)
    ]
    for _ in range(3):
        a, b = opts[0].step(obj), opts[1].step(plain)
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    assert not torch.equal(model[0].weight, start)  # the steps moved the compiled model


def test_construction_check_leaves_running_statistics_and_modes():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.5)).double()
    model[2].eval()  # mixed modes survive the check
    x = torch.randn(8, 4, dtype=torch.float64) + 3.0
    before = model[1].running_mean.clone()
    ModelObjective(model, F.mse_loss, x, torch.zeros(8, 3, dtype=torch.float64), "sequential")
    assert torch.equal(model[1].running_mean, before)  # a train-mode forward would move it
    assert [m.training for m in model] == [True, True, False]

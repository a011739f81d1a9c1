"""The graph strategy: every point and whole trajectories equal the sequential path's."""

import functools
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.models import ResNet20
from cocd_cuda import CoCD, ModelObjective
from cocd_cuda.evaluation import Block
from cocd_cuda.layout import ParamLayout

transformers = pytest.importorskip("transformers")


class UNet(nn.Module):
    """Down, up (transposed convolution), concatenation with the skip connection."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.mid = nn.Conv2d(3, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 3, 2, stride=2)
        self.out = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        skip = F.relu(self.bn(self.down(x)))
        h = F.relu(self.mid(F.max_pool2d(skip, 2)))
        h = torch.cat([self.up(h), skip], dim=1)
        return self.out(h).mean(dim=(2, 3))


class Mixed(nn.Module):
    """Modules and functional calls, a residual, in-place ops and a bare parameter."""

    def __init__(self):
        super().__init__()
        self.lin1 = nn.Linear(5, 8)
        self.lin2 = nn.Linear(8, 8)
        self.lin3 = nn.Linear(8, 8)
        self.act = nn.ReLU(inplace=True)
        self.norm = nn.LayerNorm(8)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 13))
        self.head = nn.Linear(13, 3)
        self.unused = nn.Parameter(torch.zeros(2))  # f does not depend on it

    def forward(self, x):
        r = F.relu(self.lin1(x))
        h = self.act(self.lin2(r))
        h += r  # in place on a value nothing else reads
        h = torch.add(h, self.lin3(r).tanh_())
        h = self.norm(h)
        h = torch.cat([h, x], dim=1).view(x.shape[0], 13)
        return self.head(F.gelu(h) * self.scale)


def block_at(opt, c: int, eps: float = 1e-3) -> Block:
    """The points of ``opt``'s step whose block starts at coordinate c."""
    eps_all = [eps] * len(opt.param_groups)
    layout = ParamLayout(opt.param_groups)
    return Block.at(layout, c, opt.compute_budget, eps_all, opt.central_difference)


def randomise(model, seed=3):
    """Non-trivial weights and running statistics, in float64, eval mode."""
    gen = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            t.data = torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5
    for p in model.parameters():
        p.data -= 1.0
    return model


def gpt2(layers=2, width=32, vocab=50):
    config = transformers.GPT2Config(
        n_layer=layers, n_embd=width, n_head=2, vocab_size=vocab, n_positions=16,
        bos_token_id=0, eos_token_id=0, use_cache=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return transformers.GPT2LMHeadModel(config).double().eval()


def problem(name):
    """(model, loss_fn, inputs, targets, output) of a named test problem, float64."""
    gen = torch.Generator().manual_seed(1)
    if name == "resnet20":  # its own (He) initialisation keeps 20 layers out of saturation
        torch.manual_seed(0)
        model = ResNet20().double().eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, lo, hi in (
                    (m.weight, 0.5, 1.5),
                    (m.bias, -0.2, 0.2),
                    (m.running_mean, -0.2, 0.2),
                    (m.running_var, 0.5, 1.5),
                ):
                    t.data.uniform_(lo, hi, generator=gen)
        x = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
        return model, nn.CrossEntropyLoss(), x, torch.tensor([3, 8]), None
    if name == "unet":
        x = torch.randn(1, 1, 4, 4, generator=gen, dtype=torch.float64)
        y = torch.randn(1, 3, generator=gen, dtype=torch.float64)
        return randomise(UNet()), nn.MSELoss(), x, y, None
    if name == "mixed":
        x = torch.randn(4, 5, generator=gen, dtype=torch.float64)
        return randomise(Mixed()), nn.CrossEntropyLoss(), x, torch.tensor([0, 1, 2, 1]), None
    layers, width, vocab = (2, 32, 50) if name == "gpt2" else (1, 8, 12)
    model = gpt2(layers, width, vocab)
    ids = torch.randint(0, vocab, (2, 5), generator=gen)
    targets = torch.randint(0, vocab, (10,), generator=gen)
    return (
        model,
        nn.CrossEntropyLoss(),
        {"input_ids": ids},
        targets,
        lambda o: o.logits.flatten(0, 1),
    )


@functools.cache
def objectives(name):
    """The model, its automatic objective and a sequential one (evaluations restore x)."""
    model, loss_fn, x, y, output = problem(name)
    graph = ModelObjective(model, loss_fn, x, y, output=output)
    seq = ModelObjective(model, loss_fn, x, y, strategy="sequential", output=output)
    return model, graph, seq


@pytest.mark.parametrize("central", [True, False], ids=["central", "forward"])
@pytest.mark.parametrize(
    "name, B, starts",
    [
        ("resnet20", 16, [0, 440, 69900, -680, -16]),  # conv, batch norm, linear
        ("gpt2", 24, [1590, 2100, 3700, 9000, -40]),  # wte, wpe, layer norm, attention, mlp
        ("unet", 10**6, [0]),
        ("mixed", 10**6, [0]),
    ],
)
def test_points_equal_sequential(name, B, starts, central):
    """Blocks over all tensor kinds (big models: blocks at a few places, half each mode)."""
    model, graph, seq = objectives(name)
    assert graph.strategy == "graph"  # picked automatically
    opt = CoCD(model.parameters(), compute_budget=B, central_difference=central, eps=1e-3)
    n = sum(p.numel() for p in model.parameters())
    tensors = set()
    for k, start in enumerate(starts):
        if len(starts) > 1 and k % 2 != central:
            continue
        block = block_at(opt, start % n)
        tensors |= {run.param for run in block.runs}
        expected = seq.evaluate_block(block)
        torch.testing.assert_close(graph.evaluate_block(block), expected, rtol=0, atol=1e-10)
        # The points differ: a wrong coordinate mapping could not pass the comparison.
        assert expected.unique().numel() > expected.numel() // 3
    assert len(tensors) >= 3


@pytest.mark.parametrize(
    "name, B, mode, central",
    [
        ("unet", 70, "dense", False),
        ("unet", 70, "fifo", True),
        ("mixed", 90, "dense", True),
        ("mixed", 90, "fifo", False),
        ("tiny-gpt2", 40, "fifo", False),
    ],
)
def test_trajectory_equals_sequential(name, B, mode, central):
    """Eight whole CoCD steps, blocks over several tensors and long runs: same parameters."""
    finals = {}
    for strategy in ("sequential", "graph"):
        model, loss_fn, x, y, output = problem(name)
        obj = ModelObjective(model, loss_fn, x, y, strategy=strategy, output=output)
        extra = dict(memory_budget=2 * B) if mode == "fifo" else {}
        opt = CoCD(
            model.parameters(), lr=0.05, compute_budget=B, momentum=0.9,
            central_difference=central, eps=1e-3, **extra,
        )  # fmt: skip
        for _ in range(8):
            opt.step(obj)
        finals[strategy] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        start = torch.cat([p.detach().reshape(-1) for p in problem(name)[0].parameters()])
    assert (finals["sequential"] - start).abs().max() > 1e-3  # the steps moved the model
    torch.testing.assert_close(finals["graph"], finals["sequential"], rtol=0, atol=1e-10)


def test_new_batch_shape_is_recaptured():
    model, graph, seq = objectives("mixed")
    x = torch.randn(3, 5, dtype=torch.float64)
    for obj in (graph, seq):
        obj.set_batch(x, torch.tensor([2, 0, 1]))
    opt = CoCD(model.parameters(), compute_budget=10**6, eps=1e-3, central_difference=False)
    block = block_at(opt, 0)
    expected = seq.evaluate_block(block)
    torch.testing.assert_close(graph.evaluate_block(block), expected, rtol=0, atol=1e-10)
    assert graph.strategy == "graph"


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x + torch.randn_like(x))


@pytest.mark.parametrize(
    "model, reason",
    [
        (nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train(), "random"),
        (UNet().train(), "changes its buffers"),
        (Noisy(), "is random"),
    ],
    ids=["dropout", "train-mode-batch-norm", "random-op"],
)
def test_unsupported_models_fall_back_with_the_reason(model, reason):
    model = model.double()
    x = torch.randn(2, *((3,) if not isinstance(model, UNet) else (1, 4, 4)), dtype=torch.float64)
    with pytest.raises(ValueError, match=f"strategy='graph' cannot run this model: .*{reason}"):
        ModelObjective(model, lambda out: out.square().mean(), x, strategy="graph")
    if not isinstance(model, nn.Sequential):
        with pytest.warns(UserWarning, match=f"using the batched strategy .*{reason}"):
            obj = ModelObjective(model, lambda out: out.square().mean(), x)
        assert obj.strategy == "batched"


class Shifted(nn.Module):
    """Reads a plain tensor attribute and a tensor made in forward."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2).double()
        self.shift = torch.ones(2, dtype=torch.float64)

    def forward(self, x):
        return self.lin(x) + self.shift * torch.tensor(2.0, dtype=torch.float64)


def test_tensor_attributes_are_read_as_they_are_now():
    model, x = Shifted(), torch.randn(4, 3, dtype=torch.float64)
    graph = ModelObjective(model, lambda out: out.square().mean(), x)
    seq = ModelObjective(model, lambda out: out.square().mean(), x, strategy="sequential")
    model.shift = torch.full((2,), 3.0, dtype=torch.float64)  # reassigned after the capture
    opt = CoCD(model.parameters(), compute_budget=10**6, eps=1e-3)
    block = block_at(opt, 0)
    expected = seq.evaluate_block(block)
    torch.testing.assert_close(graph.evaluate_block(block), expected, rtol=0, atol=1e-12)
    assert graph.strategy == "graph"

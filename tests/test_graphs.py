"""CoCD.graphed: the capturable step (device counters), and on a GPU the CUDA graph."""

import contextlib
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from cocd_cuda import CoCD, ModelObjective, backends, ops

pytestmark = pytest.mark.skipif(
    "native" not in backends.available(), reason="the native extension is not built"
)

SIZES = [(5, 7), (3,)]  # n = 38: B = 5 does not divide it, so blocks wrap and straddle
MODES = {
    "dense-central": dict(compute_budget=5),
    "dense-forward": dict(compute_budget=5, central_difference=False),
    "fifo-central": dict(compute_budget=5, memory_budget=12),
    "fifo-forward": dict(compute_budget=5, memory_budget=12, central_difference=False),
}


def make_params(device, dtype=torch.float32):
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(device, dtype) for s in SIZES]


def objective(params):
    """A smooth, non-separable loss made of device tensor ops only (capturable)."""
    weights = [
        torch.linspace(0.5, 1.5, p.numel(), dtype=torch.float64, device=p.device) for p in params
    ]

    def f():
        total = torch.zeros((), dtype=torch.float64, device=params[0].device)
        for k, (p, w) in enumerate(zip(params, weights, strict=True)):
            q = p.double().reshape(-1)
            total = total + (w * torch.sin(q + k)).sum() + 0.1 * q.sum() ** 2 / (1 + q.numel())
        return total

    return f


def groups(params, split):
    if not split:
        return params
    return [dict(params=params[:1]), dict(params=params[1:], lr=0.03, momentum=0.5)]


def pair(device, options, split=False, eager_backend="reference"):
    """(eager optimizer, its closure, graphed optimizer, graphed step) on equal copies."""
    options = dict(lr=0.05, momentum=0.9, eps=1e-2, nonfinite="zero", **options)
    pe, pg = make_params(device), make_params(device)
    eager = CoCD(groups(pe, split), backend=eager_backend, **options)
    opt = CoCD(groups(pg, split), backend="native", **options)
    return (pe, eager, objective(pe)), (pg, opt, opt.graphed(objective(pg)))


def assert_same(eager_params, eager, graphed_params, graphed):
    for a, b in zip(eager_params, graphed_params, strict=True):
        assert torch.equal(a, b)
    se, sg = eager.state_dict()["state"], graphed.state_dict()["state"]
    assert (se["c"], se["head"], se["t"]) == (sg["c"], sg["head"], sg["t"])
    assert torch.equal(se["buffer"], sg["buffer"])
    if se["coords"] is not None:
        assert torch.equal(se["coords"], sg["coords"])


# ----------------------------------------------------------------- any device
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("split", [False, True], ids=["one-group", "two-groups"])
def test_graphed_steps_equal_the_reference_bit_for_bit(mode, split):
    """On CPU, GraphedStep runs the capturable step eagerly: same values as the spec."""
    (pe, eager, f), (pg, opt, step) = pair("cpu", MODES[mode], split)
    for k in range(20):  # 100 coordinates: the block pointer wraps around n = 38 twice
        assert torch.equal(eager.step(f), step())
        assert_same(pe, eager, pg, opt)
        assert opt.step_count == k + 1


def test_graphed_steps_read_hyperparameters_at_every_call():
    (pe, eager, f), (pg, opt, step) = pair("cpu", MODES["fifo-central"], split=True)
    for k in range(9):
        if k == 4:  # a scheduler's change must reach the (graphed) step
            for o in (eager, opt):
                o.param_groups[0]["lr"] = 0.01
                o.param_groups[1]["eps"] = 0.05
        eager.step(f)
        step()
    assert_same(pe, eager, pg, opt)


def test_graphed_steps_follow_an_lr_scheduler_without_its_warning():
    (pe, eager, f), (pg, opt, step) = pair("cpu", MODES["dense-central"])
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (eager, opt)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for _ in range(6):
            eager.step(f)
            step()
            for sched in scheds:
                sched.step()
    assert opt.param_groups[0]["lr"] == 0.05 * 0.5**3
    assert_same(pe, eager, pg, opt)


def test_graphed_closure_runs_without_autograd():
    p = torch.nn.Parameter(torch.tensor([0.5, -1.0]))
    seen = []

    def f():
        seen.append(torch.is_grad_enabled())
        return (p**2).sum()

    CoCD([p], compute_budget=2, nonfinite="zero", backend="native").graphed(f)()
    assert seen == [False] * 4


def test_graphed_rechecks_nonfinite_after_load_state_dict():
    p = make_params("cpu")
    opt = CoCD(p, compute_budget=5, nonfinite="zero", backend="native")
    step = opt.graphed(objective(p))
    step()
    saved = opt.state_dict()
    saved["state"]["nonfinite"] = "raise"
    opt.load_state_dict(saved)
    with pytest.raises(ValueError, match="nonfinite='zero'"):
        step()
    assert opt.step_count == 1  # nothing ran


def test_graphed_state_dict_resume_and_reset():
    (pe, eager, f), (pg, opt, step) = pair("cpu", MODES["fifo-forward"])
    for _ in range(7):
        eager.step(f)
        step()
    saved = opt.state_dict()
    assert (saved["state"]["c"], saved["state"]["head"], saved["state"]["t"]) == (35, 11, 7)
    options = dict(lr=0.05, momentum=0.9, eps=1e-2, nonfinite="zero", **MODES["fifo-forward"])
    resumed = CoCD(pg, backend="native", **options)
    resumed.load_state_dict(saved)
    step2 = resumed.graphed(objective(pg))
    for _ in range(5):
        eager.step(f)
        step2()
    assert_same(pe, eager, pg, resumed)
    eager.reset()
    resumed.reset()
    assert resumed.step_count == 0
    for _ in range(3):
        eager.step(f)
        step2()
    assert_same(pe, eager, pg, resumed)


def tiny_model(seed=0):
    """n = 23 in tensors of 12, 3, 6 and 2: a block of 5 can span three of them."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("strategy", ["layered", "batched", "graph"])
def test_graphed_model_objective_evaluates_blocks_like_sequential(mode, strategy):
    """The device-driven block evaluation (what each graph replays) on CPU."""
    models = [tiny_model(), tiny_model()]
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    options = dict(lr=0.05, momentum=0.9, eps=1e-3, nonfinite="zero", **MODES[mode])
    options["memory_budget"] = min(options.get("memory_budget", 23), 23)
    eager = CoCD(models[0].parameters(), backend="reference", **options)
    f = ModelObjective(models[0], nn.functional.mse_loss, x, y, strategy="sequential")
    opt = CoCD(models[1].parameters(), backend="native", **options)
    g = ModelObjective(models[1], nn.functional.mse_loss, x, y, strategy=strategy)
    step = opt.graphed(g)
    touched = set()
    for _ in range(15):  # 75 coordinates: more than three cycles over n = 23
        touched.add(step._touched())
        torch.testing.assert_close(step(), eager.step(f), rtol=1e-12, atol=1e-14)
    assert {len(t) for t in touched} == {1, 2, 3}  # blocks in one, two and three tensors
    # Tensors of 12, 3, 6, 2 (boundaries 12, 15, 21, 23): windows of 5 lie in these sets,
    # and B = 5, n = 23 visit every c, so capture_all would capture exactly these.
    expected = {(0,), (0, 1), (0, 1, 2), (1, 2), (2,), (2, 3), (0, 2, 3), (0, 3)}
    assert touched < expected and set(step._tensor_sets()) == expected
    # Losses differ from sequential's by rounding (about 1e-16), estimates by that over
    # eps, so parameters end about 1e-13 apart; a wrong point would be 1e-3 off.
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    assert opt.state_dict()["state"]["c"] == eager.state_dict()["state"]["c"] == 75 % 23


def test_graphed_model_objective_with_a_foreign_parameter_goes_point_by_point():
    models = [tiny_model(), tiny_model()]
    extras = [torch.tensor([0.3, -0.2], dtype=torch.float64) for _ in range(2)]
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    options = dict(compute_budget=4, nonfinite="zero", lr=0.05)
    eager = CoCD([*models[0].parameters(), extras[0]], backend="reference", **options)
    f = ModelObjective(models[0], nn.functional.mse_loss, x, y, strategy="sequential")
    opt = CoCD([*models[1].parameters(), extras[1]], backend="native", **options)
    g = ModelObjective(models[1], nn.functional.mse_loss, x, y, strategy="layered")
    with pytest.warns(UserWarning, match="point by point"):
        step = opt.graphed(g)  # the model does not own `extra`: one point-by-point graph
    for _ in range(8):
        assert torch.equal(eager.step(f), step())
    for a, b in zip(eager.param_groups[0]["params"], opt.param_groups[0]["params"], strict=True):
        assert torch.equal(a, b)


def test_graphed_rejects_what_a_graph_cannot_replay():
    p = [torch.zeros(3)]
    f = objective(p)
    with pytest.raises(ValueError, match="backend='native'"):
        CoCD(p, nonfinite="zero", backend="reference").graphed(f)
    with pytest.raises(ValueError, match="nonfinite='zero'"):
        CoCD(p, backend="native").graphed(f)
    with pytest.raises(TypeError, match="closure"):
        CoCD(p, nonfinite="zero", backend="native").graphed(None)


def test_ops_reject_counters_out_of_range():
    opt = CoCD(make_params("cpu"), compute_budget=5, backend="native")
    eng = opt._engine
    table, hyper = eng.param_table(), ops.hyper_table(opt._hyperparameters())
    for bad, match in (([38, 0, 0], "block pointer c = 38"), ([-1, 0, 0], "c = -1")):
        with pytest.raises(ValueError, match=match):
            torch.ops.cocd_cuda.plan_(eng._slots, table, hyper, torch.tensor(bad), 38, True)
    with pytest.raises(ValueError, match="counters must have 3 elements"):
        torch.ops.cocd_cuda.plan_(eng._slots, table, hyper, torch.tensor([0, 0]), 38, True)


# ----------------------------------------------------------------------- CUDA
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# Tests of graph behaviour that also run on CPU (no graph there), so that their logic is
# checked everywhere; what only a graph can show is asserted on CUDA alone.
CPU_AND_GPU = pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, needs_gpu])]
)


@contextlib.contextmanager
def host_syncs_raise():
    """Inside, any CUDA operation that synchronises with the host raises RuntimeError."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("split", [False, True], ids=["one-group", "two-groups"])
@pytest.mark.cuda
@needs_gpu
def test_cuda_graph_replays_equal_eager_steps(mode, split):
    """The graphed step on a GPU equals the eager native step, bit for bit."""
    (pe, eager, f), (pg, opt, step) = pair("cuda", MODES[mode], split, eager_backend="native")
    for _ in range(20):
        assert torch.equal(eager.step(f), step())
    assert step.captures == len(step._graphs) == 1  # replayed from one graph
    assert_same(pe, eager, pg, opt)


@pytest.mark.cuda
@needs_gpu
def test_cuda_graph_replay_never_synchronises():
    (_, _, _), (_, opt, step) = pair("cuda", MODES["fifo-central"])
    step()  # captures
    with host_syncs_raise():
        for _ in range(5):
            step()
    assert opt.step_count == 6


@CPU_AND_GPU
def test_graph_follows_batches_hyperparameters_and_moved_storage(device):
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
              for _ in range(2)]  # fmt: skip
    models[1].load_state_dict(models[0].state_dict())
    batches = [(torch.randn(16, 5, device=device), torch.randn(16, 1, device=device))
               for _ in range(4)]  # fmt: skip
    x, y = batches[0][0].clone(), batches[0][1].clone()
    options = dict(compute_budget=8, lr=0.05, momentum=0.9, nonfinite="zero", backend="native")
    eager = CoCD(models[0].parameters(), **options)
    f = ModelObjective(models[0], nn.functional.mse_loss, x, y, strategy="sequential")
    opt = CoCD(models[1].parameters(), **options)
    g = ModelObjective(models[1], nn.functional.mse_loss, x.clone(), y.clone(),
                       strategy="sequential")  # fmt: skip
    step = opt.graphed(g)
    captures = []
    for k in range(10):
        bx, by = batches[k % 4]
        if k < 7:  # refill in place: the same graph reads the new batch
            for objective_ in (f, g):
                objective_.inputs.copy_(bx)
                objective_.targets.copy_(by)
        else:  # new tensors: the step is recaptured
            f.set_batch(bx, by)
            g.set_batch(bx.clone(), by.clone())
        if k == 3:  # read from the device by the graph: no recapture
            for o in (eager, opt):
                o.param_groups[0]["lr"] = 0.02
        if k == 5:  # the parameters move to new storage: the table and graph follow
            for m in models:
                for p in m.parameters():
                    p.data = p.data.clone()
        # cuBLAS may pick other kernels under capture, so this compares to rounding;
        # a stale batch, learning rate or parameter address would be far off.
        torch.testing.assert_close(step(), eager.step(f), rtol=1e-5, atol=1e-7)
        captures.append(step.captures)
    if device == "cuda":
        assert captures == [1, 1, 1, 1, 1, 2, 2, 3, 4, 5]
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@CPU_AND_GPU
@pytest.mark.parametrize("strategy", ["layered", "batched"])
def test_graphs_by_block_follow_eager_steps(strategy, device):
    """One graph per set of tensors a block lies in; interleaved eager steps and a
    resume move the device counters, and the graphs follow them."""
    models = [tiny_model().to(device), tiny_model().to(device)]
    x = torch.randn(6, 4, dtype=torch.float64, device=device)
    y = torch.randn(6, 2, dtype=torch.float64, device=device)
    options = dict(compute_budget=5, lr=0.05, momentum=0.9, eps=1e-3, nonfinite="zero")
    eager = CoCD(models[0].parameters(), backend="native", **options)
    f = ModelObjective(models[0], nn.functional.mse_loss, x, y, strategy=strategy)
    opt = CoCD(models[1].parameters(), backend="native", **options)
    g = ModelObjective(models[1], nn.functional.mse_loss, x, y, strategy=strategy)
    step = opt.graphed(g)
    step.capture_all()  # the 8 sets of test_graphed_model_objective_evaluates_blocks_...
    assert step.captures == (8 if device == "cuda" else 0)
    touched = set()
    for k in range(40):
        if k == 12:  # an eager step in between
            eager.step(f)
            opt.step(g)
        if k == 25:  # a resume: the counters are written from a state_dict
            saved = eager.state_dict()
            opt.load_state_dict(saved)
        touched.add(step._touched())
        torch.testing.assert_close(step(), eager.step(f), rtol=1e-9, atol=1e-12)
    assert len(touched) == 8
    assert opt.step_count == eager.step_count == 41
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    if device != "cuda":
        return
    assert step.captures == 8  # all captured up front
    with host_syncs_raise():  # from now on a step is one replay, with no host sync
        for _ in range(23):
            step()
    assert step.captures == 8


@CPU_AND_GPU
@pytest.mark.parametrize("strategy", ["point", "layered"])
def test_schedulers_change_hyperparameters_without_a_recapture(strategy, device):
    """An LR scheduler changing lr at every step, and eps, weight_decay and momentum
    changed as well: the graphs read them from the device, so each is captured once
    and every step still follows the reference."""
    models = [tiny_model().to(device), tiny_model().to(device)]
    x = torch.randn(6, 4, dtype=torch.float64, device=device)
    y = torch.randn(6, 2, dtype=torch.float64, device=device)
    options = dict(compute_budget=5, lr=0.05, momentum=0.9, eps=1e-3, nonfinite="zero")
    eager = CoCD(models[0].parameters(), backend="reference", **options)
    opt = CoCD(models[1].parameters(), backend="native", **options)
    if strategy == "point":  # a plain closure: one graph, point by point
        f = ModelObjective(models[0], nn.functional.mse_loss, x, y, strategy="sequential")
        step = opt.graphed(lambda: nn.functional.mse_loss(models[1](x), y))
    else:  # by block: the masked evaluation reads eps on the device
        f = ModelObjective(models[0], nn.functional.mse_loss, x, y, strategy=strategy)
        step = opt.graphed(ModelObjective(models[1], nn.functional.mse_loss, x, y,
                                          strategy=strategy))  # fmt: skip
    step.capture_all()
    captured = step.captures
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda k: 0.9**k) for o in (eager, opt)]
    for k in range(12):
        if k == 6:
            for o in (eager, opt):
                o.param_groups[0].update(eps=2e-3, weight_decay=0.01, momentum=0.8)
        torch.testing.assert_close(step(), eager.step(f), rtol=1e-9, atol=1e-12)
        for s in schedulers:
            s.step()
    assert opt.param_groups[0]["lr"] == eager.param_groups[0]["lr"] < 0.05 * 0.9**11
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    assert step.captures == captured  # nothing was recaptured
    if device == "cuda":
        assert captured == len(step._graphs) >= 1


@CPU_AND_GPU
def test_two_graphed_steps_on_one_optimizer_take_turns(device):
    """Two batches in two sets of captured tensors: each GraphedStep sees where the
    other's replays left the block pointer."""
    models = [tiny_model().to(device), tiny_model().to(device)]
    data = [(torch.randn(6, 4, dtype=torch.float64, device=device),
             torch.randn(6, 2, dtype=torch.float64, device=device)) for _ in range(2)]  # fmt: skip
    options = dict(compute_budget=5, lr=0.05, eps=1e-3, nonfinite="zero", backend="native")
    eager = CoCD(models[0].parameters(), **options)
    fs = [ModelObjective(models[0], nn.functional.mse_loss, x, y, strategy="layered")
          for x, y in data]  # fmt: skip
    opt = CoCD(models[1].parameters(), **options)
    steps = [opt.graphed(ModelObjective(models[1], nn.functional.mse_loss, x.clone(), y.clone(),
                                        strategy="layered")) for x, y in data]  # fmt: skip
    for k in range(30):
        torch.testing.assert_close(steps[k % 2](), eager.step(fs[k % 2]), rtol=1e-9, atol=1e-12)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


FRESH_PROCESS = """
import torch
from cocd_cuda import CoCD
torch.manual_seed(0)
start = torch.randn(40, 3, device="cuda")
ps = [start.clone(), start.clone()]
opts = [CoCD([p], compute_budget=7, memory_budget=50, momentum=0.9, nonfinite="zero")
        for p in ps]
f = [lambda p=p: (torch.sin(p) * p).sum() for p in ps]
step = opts[0].graphed(f[0])  # the step kernels first run inside a capture
graphed = [step() for _ in range(5)]
eager = [opts[1].step(f[1]) for _ in range(5)]
assert all(torch.equal(a, b) for a, b in zip(graphed, eager)), (graphed, eager)
assert torch.equal(ps[0], ps[1])
print("same")
"""


@pytest.mark.cuda
@needs_gpu
def test_cuda_graph_captured_before_any_eager_step():
    """No kernel of the step has run before the capture (lazy module loading)."""
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "same"

"""The native CoCD against the reference, step for step (the ops alone: test_ops.py)."""

import io

import pytest
import torch

from cocd_cuda import CoCD, backends, ops

pytestmark = pytest.mark.skipif(
    "native" not in backends.available(), reason="the native extension is not built"
)

# Native and reference run the same arithmetic in the same order, so these bounds are
# loose; they are the per-dtype tolerances the issue asks for (about one ulp).
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-14),
    torch.float32: dict(rtol=1e-6, atol=1e-7),
    torch.float16: dict(rtol=1e-3, atol=1e-4),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-3),
}
DTYPES = list(TOL)
DTYPE_IDS = [str(d).removeprefix("torch.") for d in DTYPES]


def make_params(sizes, dtype, device, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(device, dtype) for s in sizes]


def objective(params):
    """A smooth, non-separable, deterministic loss evaluated in float64."""

    def f():
        total = torch.zeros((), dtype=torch.float64, device=params[0].device)
        for k, p in enumerate(params):
            q = p.double().reshape(-1)
            w = torch.linspace(0.5, 1.5, q.numel(), dtype=torch.float64, device=q.device)
            total = total + (w * torch.sin(q + k)).sum() + 0.1 * (q.sum() ** 2) / (1 + q.numel())
        return total

    return f


def twin_runs(sizes, dtype, device, steps, groups=None, **options):
    """Run reference and native side by side; yield both after every step."""
    runs = []
    for backend in ("reference", "native"):
        params = make_params(sizes, dtype, device)
        spec = params if groups is None else [dict(g, params=params[sl]) for sl, g in groups]
        opt = CoCD(spec, backend=backend, **options)
        assert opt.backend == backend
        runs.append((params, opt, objective(params)))
    for _ in range(steps):
        losses = [opt.step(f) for _, opt, f in runs]
        yield runs, losses


def assert_runs_agree(runs, dtype):
    (p_ref, o_ref, _), (p_nat, o_nat, _) = runs
    for a, b in zip(p_ref, p_nat, strict=True):
        torch.testing.assert_close(b, a, **TOL[dtype])
    s_ref, s_nat = o_ref.state_dict()["state"], o_nat.state_dict()["state"]
    buf_tol = TOL[torch.float64 if dtype == torch.float64 else torch.float32]
    torch.testing.assert_close(s_nat["buffer"], s_ref["buffer"], **buf_tol)
    if s_ref["coords"] is not None:
        assert torch.equal(s_nat["coords"], s_ref["coords"])
    assert (s_nat["c"], s_nat["t"], s_nat["head"]) == (s_ref["c"], s_ref["t"], s_ref["head"])


CONFIGS = {
    "dense-central": dict(compute_budget=5),
    "dense-forward": dict(compute_budget=5, central_difference=False),
    "fifo-central": dict(compute_budget=4, memory_budget=9),
    "fifo-forward": dict(compute_budget=3, memory_budget=7, central_difference=False),
    "dense-momentum-wd": dict(compute_budget=6, momentum=0.9, weight_decay=0.05),
    "fifo-momentum-wd": dict(compute_budget=6, memory_budget=11, momentum=0.8, weight_decay=0.1),
    "B=n": dict(compute_budget=10_000, momentum=0.5),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_native_matches_reference_every_step(config, dtype, device):
    options = dict(lr=0.05, eps=0.01, **CONFIGS[config])
    sizes = [(3, 4), (5,), (2, 1, 3), ()]
    for runs, (l_ref, l_nat) in twin_runs(sizes, dtype, device, steps=7, **options):
        assert_runs_agree(runs, dtype)
        assert l_nat.dtype == l_ref.dtype and l_nat.shape == ()
        torch.testing.assert_close(l_nat, l_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("B", [3, 4, 300, 700])
def test_central_loss_estimate_is_the_same_bits_on_both_engines(B):
    # More than 256 values wrap around the kernels' summation lanes; a plain mean
    # differs from the lane order in the last bits for these losses.
    torch.manual_seed(0)
    w = torch.randn(1000, dtype=torch.float64) * 10
    target = torch.randn(1000, dtype=torch.float64)
    losses = []
    for backend in ("reference", "native"):
        p = w.clone().requires_grad_()
        opt = CoCD([p], lr=0.01, eps=0.1, compute_budget=B, backend=backend)
        losses.append([opt.step(lambda p=p: ((p - target) ** 3).sum()) for _ in range(3)])
    for ref, nat in zip(*losses, strict=True):
        assert torch.equal(ref, nat), (ref.item(), nat.item())


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("config", ["dense-central", "fifo-forward", "fifo-momentum-wd"])
def test_cpu_host_evaluation_equals_the_advance_op(config, dtype):
    """On CPU the step writes plan_'s bits from Python; advance_ (what CUDA runs) must
    give the same parameters, buffer and losses, bit for bit."""
    runs = []
    for host in (True, False):
        params = make_params([(3, 4), (5,), (2, 1, 3), ()], dtype, "cpu")
        opt = CoCD(params, backend="native", lr=0.05, eps=0.01, **CONFIGS[config])
        opt._engine.host_evaluation = host
        runs.append((params, opt, objective(params)))
    (p_host, o_host, f_host), (p_op, o_op, f_op) = runs
    for _ in range(7):
        assert torch.equal(o_host.step(f_host), o_op.step(f_op))
        assert all(torch.equal(a, b) for a, b in zip(p_host, p_op, strict=True))
        assert torch.equal(o_host._state.v, o_op._state.v)


@pytest.mark.parametrize("host", [True, False], ids=["host", "advance_"])
@pytest.mark.parametrize("central", [True, False], ids=["central", "forward"])
def test_cpu_evaluation_restores_the_bits_when_the_closure_raises(host, central):
    params = make_params([(3, 4), (5,)], torch.bfloat16, "cpu")
    before = [p.view(torch.int16).clone() for p in params]
    opt = CoCD(params, compute_budget=5, central_difference=central, backend="native")
    opt._engine.host_evaluation = host
    f, calls = objective(params), []

    def failing():
        calls.append(1)
        if len(calls) == 6:  # with a coordinate perturbed
            raise KeyError("closure failed")
        return f()

    with pytest.raises(KeyError, match="closure failed"):
        opt.step(failing)
    assert all(torch.equal(p.view(torch.int16), b) for p, b in zip(params, before, strict=True))
    assert opt.step_count == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", ["dense", "fifo"])
def test_native_matches_reference_with_param_groups(mode, dtype, device):
    groups = [
        (slice(0, 2), dict(lr=0.02, eps=0.05, momentum=0.7, weight_decay=0.0)),
        (slice(2, 4), dict(lr=0.1, eps=0.003, momentum=1.0, weight_decay=0.2)),
    ]
    extra = dict(memory_budget=8) if mode == "fifo" else {}
    sizes = [(4,), (3, 3), (7,), (2, 2)]
    for runs, _ in twin_runs(sizes, dtype, device, 9, groups=groups, compute_budget=5, **extra):
        assert_runs_agree(runs, dtype)


@pytest.mark.parametrize(
    "sizes",
    [[(1,)], [(4097,)], [(s % 7 + 1,) for s in range(100)]],
    ids=["one-element", "4097", "100-tensors"],
)
@pytest.mark.parametrize("mode", ["dense", "fifo"])
def test_native_matches_reference_at_awkward_sizes(sizes, mode, device):
    n = sum(torch.Size(s).numel() for s in sizes)
    B = max(1, min(n, 37))
    extra = dict(memory_budget=max(B, n // 2)) if mode == "fifo" and n > 1 else {}
    steps = 4 if n > 1000 else 25  # enough to wrap around n for the small cases
    for runs, _ in twin_runs(sizes, torch.float32, device, steps, compute_budget=B, **extra):
        assert_runs_agree(runs, torch.float32)


@pytest.mark.parametrize("mode", ["dense", "fifo"])
def test_native_matches_reference_with_init_grad(mode, device):
    n, m = 12, (12 if mode == "dense" else 6)
    init = torch.linspace(-1, 1, m, dtype=torch.float64)
    options = dict(compute_budget=2, memory_budget=m, momentum=0.9, init_grad=init)
    for runs, _ in twin_runs([(n,)], torch.float64, device, 5, **options):
        assert_runs_agree(runs, torch.float64)
    assert init.equal(torch.linspace(-1, 1, m, dtype=torch.float64))  # never aliased


@pytest.mark.parametrize("mode", ["dense", "fifo"])
def test_state_dict_crosses_backends(mode, device):
    """A native run resumes in the reference (and back), continuing the same trajectory."""
    extra = dict(memory_budget=5) if mode == "fifo" else {}
    options = dict(compute_budget=3, momentum=0.9, **extra)
    sizes = [(4,), (3,)]
    gen = twin_runs(sizes, torch.float64, device, 6, **options)
    for _ in range(3):
        runs, _ = next(gen)
    (p_ref, o_ref, _), (p_nat, o_nat, _) = runs
    # Swap: reference state into a native optimizer over copies of the reference params.
    swapped = []
    for params, opt, backend in ((p_ref, o_ref, "native"), (p_nat, o_nat, "reference")):
        copies = [p.detach().clone() for p in params]
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)
        buf.seek(0)
        fresh = CoCD(copies, backend=backend, **options)
        fresh.load_state_dict(torch.load(buf))
        swapped.append((copies, fresh, objective(copies)))
    for _ in range(3):
        runs, _ = next(gen)
        for _, fresh, f in swapped:
            fresh.step(f)
    for (copies, _, _), (params, _, _) in zip(swapped, runs[::-1], strict=True):
        for a, b in zip(copies, params, strict=True):
            torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_native_follows_reassigned_storage():
    """Assigning p.data moves the parameter; the pointer table must follow it."""
    p = torch.zeros(3, dtype=torch.float64)
    opt = CoCD([p], lr=0.1, compute_budget=3, backend="native")
    opt.step(lambda: (p * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum())
    old = p.data
    p.data = torch.ones(3, dtype=torch.float64)
    opt.step(lambda: (p * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum())
    # Linear loss: the exact gradient is (1, 2, 3); momentum 1 keeps it.
    torch.testing.assert_close(p, torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64))
    torch.testing.assert_close(old, torch.tensor([-0.1, -0.2, -0.3], dtype=torch.float64))


def test_native_is_the_default_where_built():
    assert CoCD([torch.zeros(3)]).backend == "native"
    assert ops.unsupported(CoCD([torch.zeros(3)])._engine.layout) is None


def test_non_contiguous_parameters_fall_back_with_a_warning():
    p = torch.zeros(4, 3).t()
    with pytest.warns(UserWarning, match="not contiguous"):
        opt = CoCD([p])
    assert opt.backend == "reference"
    with pytest.raises(RuntimeError, match="not contiguous"):
        CoCD([p], backend="native")


# ---------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["dense", "fifo"])
def test_cuda_step_never_synchronises(mode):
    """With a device-tensor closure and nonfinite='zero', a step makes no host sync."""
    params = make_params([(64, 33), (17,)], torch.float32, "cuda")
    extra = dict(memory_budget=100) if mode == "fifo" else {}
    opt = CoCD(params, compute_budget=16, nonfinite="zero", backend="native", **extra)
    f = objective(params)
    opt.step(f)  # first step builds the parameter table (one upload)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            opt.step(f)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert opt.step_count == 4


def test_missing_extension_falls_back_or_says_how_to_build(monkeypatch):
    monkeypatch.setattr(ops, "LOAD_ERROR", "the extension cocd_cuda._C is not built (test)")
    with pytest.warns(UserWarning, match="not built"):
        opt = CoCD([torch.zeros(3)])
    assert opt.backend == "reference"
    with pytest.raises(RuntimeError, match=r"cannot run here: the extension cocd_cuda._C is not"):
        CoCD([torch.zeros(3)], backend="native")
    assert backends.available() == ["reference"]

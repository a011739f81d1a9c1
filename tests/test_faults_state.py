"""Faults leave everything bit for bit as before the step; state_dict resumes and reset restarts."""

import io

import pytest
import torch
from conftest import assert_same_state, snapshot

from cocd_cuda import CoCD

B = 3  # blocks per step; n = 7, so the third block (6, 0, 1) wraps and spans both groups


# ----------------------------------------------------------------------------- helpers
def make(
    backend, central=True, memory=None, dtype=torch.float32, nonfinite="raise", seed=0, lr=0.05
):
    """A two-group optimizer over fresh parameters (4 + 3 elements); returns (opt, params)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(4, generator=gen).to(dtype)
    b = torch.randn(3, generator=gen).to(dtype)
    groups = [
        {"params": [a], "momentum": 0.9, "eps": 0.1},
        {"params": [b], "lr": lr / 2, "weight_decay": 0.1, "eps": 0.05},
    ]
    opt = CoCD(
        groups,
        lr=lr,
        compute_budget=B,
        memory_budget=memory,
        central_difference=central,
        nonfinite=nonfinite,
        backend=backend,
    )
    return opt, [a, b]


W = torch.tensor([0.3, -1.2, 0.7, 2.0, -0.4, 1.1, -0.9], dtype=torch.float64)


def objective(ps):
    """A smooth non-quadratic objective of the parameters (float64 value)."""
    z = torch.cat([p.reshape(-1).double() for p in ps])
    return (torch.cos(z) * W).sum() + 0.25 * (z**4).sum()


def failing(closure, at, error=None, value=None):
    """``closure`` except at call number ``at``: raise ``error`` or return ``value`` there."""
    count = [0]

    def wrapped():
        k = count[0]
        count[0] += 1
        if k == at:
            if error is not None:
                raise error
            return torch.tensor(value, dtype=torch.float64)
        return closure()

    return wrapped


def mode_id(central, memory):
    return f"{'central' if central else 'forward'}-{'dense' if memory is None else 'fifo'}"


MODES = [(c, m) for c in (True, False) for m in (None, 4)]
MODE_PARAMS = [pytest.param(c, m, id=mode_id(c, m)) for c, m in MODES]


# ------------------------------------------------------------------- raising closures
class Boom(Exception):
    """The closure's own error."""


POSITIONS = [
    pytest.param(c, m, pos, id=f"{mode_id(c, m)}-eval{pos}")
    for c, m in MODES
    for pos in range(2 * B if c else B + 1)
]


@pytest.mark.parametrize(("central", "memory", "pos"), POSITIONS)
def test_closure_raising_changes_nothing(backend, central, memory, pos):
    """An exception at any evaluation propagates and leaves params and state bit-identical."""
    opt, ps = make(backend, central, memory)
    twin, twin_ps = make(backend, central, memory)
    for _ in range(2):  # move c to 6 so the failing block wraps around
        opt.step(lambda: objective(ps))
        twin.step(lambda: objective(twin_ps))
    snap = snapshot(opt, ps)
    err = Boom(pos)
    with pytest.raises(Boom) as caught:
        opt.step(failing(lambda: objective(ps), pos, error=err))
    assert caught.value is err
    assert_same_state(opt, ps, snap)
    # The failed step left no trace: the next step is the one the twin takes.
    loss = opt.step(lambda: objective(ps))
    twin_loss = twin.step(lambda: objective(twin_ps))
    assert_same_state(opt, ps, snapshot(twin, twin_ps))
    assert torch.equal(loss, twin_loss)


def test_keyboard_interrupt_restores_parameters(backend):
    """A BaseException (Ctrl-C inside the closure) also restores the perturbed coordinate."""
    opt, ps = make(backend, memory=4)
    snap = snapshot(opt, ps)
    with pytest.raises(KeyboardInterrupt):
        opt.step(failing(lambda: objective(ps), 3, error=KeyboardInterrupt()))
    assert_same_state(opt, ps, snap)


# ------------------------------------------------------------------- non-finite losses
NONFINITE = [
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(float("-inf"), id="-inf"),
]


@pytest.mark.parametrize("bad", NONFINITE)
@pytest.mark.parametrize("where", ["first", "last"])
@pytest.mark.parametrize(("central", "memory"), MODE_PARAMS)
def test_nonfinite_loss_raises_and_changes_nothing(backend, central, memory, where, bad):
    """A NaN or infinite loss raises FloatingPointError; params and state stay bit-identical."""
    opt, ps = make(backend, central, memory)
    twin, twin_ps = make(backend, central, memory)
    opt.step(lambda: objective(ps))
    twin.step(lambda: objective(twin_ps))
    snap = snapshot(opt, ps)
    at = 0 if where == "first" else (2 * B if central else B + 1) - 1
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step(failing(lambda: objective(ps), at, value=bad))
    assert_same_state(opt, ps, snap)
    opt.step(lambda: objective(ps))
    twin.step(lambda: objective(twin_ps))
    assert_same_state(opt, ps, snapshot(twin, twin_ps))


@pytest.mark.parametrize("memory", [None, 4], ids=["dense", "fifo"])
def test_estimate_overflow_raises(backend, memory):
    """Finite losses whose difference overflows give a non-finite estimate: FloatingPointError."""
    x = torch.zeros(5, dtype=torch.float64)
    opt = CoCD([x], compute_budget=2, memory_budget=memory, backend=backend)
    snap = snapshot(opt, [x])
    with pytest.raises(FloatingPointError):
        opt.step(lambda: torch.tensor(1e308 if x.sum() > 0 else -1e308, dtype=torch.float64))
    assert_same_state(opt, [x], snap)


def test_estimate_overflowing_float32_buffer_raises(backend):
    """An estimate beyond float32's range (fp32 buffer) is non-finite too."""
    x = torch.zeros(5)
    opt = CoCD([x], eps=0.1, central_difference=False, backend=backend)
    snap = snapshot(opt, [x])
    # (1e38 - 0) / 0.1 = 1e39 is finite in float64 but not in the float32 buffer.
    with pytest.raises(FloatingPointError):
        opt.step(lambda: torch.tensor(1e38 if x.sum() > 0 else 0.0, dtype=torch.float64))
    assert_same_state(opt, [x], snap)


@pytest.mark.parametrize("bad", NONFINITE)
@pytest.mark.parametrize("memory", [None, 4], ids=["dense", "fifo"])
def test_nonfinite_zero_stores_zero(backend, memory, bad):
    """nonfinite='zero': the coordinate whose f+ is non-finite gets estimate 0; no NaN in x or v."""
    opt, ps = make(backend, True, memory, dtype=torch.float64, nonfinite="zero")
    twin, twin_ps = make(backend, True, memory, dtype=torch.float64)
    opt.step(lambda: objective(ps))  # block 0, 1, 2
    twin.step(lambda: objective(twin_ps))
    base = torch.cat([p.reshape(-1) for p in ps])
    k = 4  # in the block 3, 4, 5; group 1 (lr 0.025, weight decay 0.1)

    def closure():
        d = torch.cat([p.reshape(-1) for p in ps]) - base
        return torch.tensor(bad, dtype=torch.float64) if d[k] > 0 else objective(ps)

    opt.step(closure)
    twin.step(lambda: objective(twin_ps))
    v, tv = opt._state.v, twin._state.v
    slot = k if memory is None else int((opt._state.coords == k).nonzero())
    assert v[slot] == 0.0
    assert tv[slot] != 0.0
    others = [j for j in range(v.numel()) if j != slot]
    assert torch.equal(v[others], tv[others])
    x, tx = torch.cat([p.reshape(-1) for p in ps]), torch.cat([p.reshape(-1) for p in twin_ps])
    assert x[k] == base[k] * (1 - 0.025 * 0.1)  # decayed only: its estimate is 0
    assert torch.equal(x[[i for i in range(7) if i != k]], tx[[i for i in range(7) if i != k]])
    assert bool(torch.isfinite(x).all() and torch.isfinite(v).all())


def test_nonfinite_zero_forward_base_loss(backend):
    """nonfinite='zero', forward: a non-finite f(x) zeroes every fresh estimate of the step."""
    opt, ps = make(backend, False, None, dtype=torch.float64, nonfinite="zero")
    opt.step(lambda: objective(ps))  # coordinates 0, 1, 2 get estimates
    before = opt._state.v.clone()
    assert torch.count_nonzero(before[:3]) == 3
    opt.step(failing(lambda: objective(ps), 0, value=float("nan")))
    v = opt._state.v
    assert torch.equal(v[3:6], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(v[:3], before[:3] * torch.tensor([0.9, 0.9, 0.9], dtype=torch.float64))
    assert bool(torch.isfinite(v).all())
    assert all(bool(torch.isfinite(p).all()) for p in ps)


# ------------------------------------------------------------------------ state_dict
def round_trip(state, via):
    """The state dict as is, or through torch.save / torch.load into a BytesIO."""
    if via == "direct":
        return state
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("via", ["direct", "bytesio"])
@pytest.mark.parametrize(("central", "memory"), MODE_PARAMS)
def test_resume_is_bit_exact(backend, central, memory, via, dtype):
    """6 steps equal 3 steps, save, load into a fresh optimizer over copied params, 3 steps."""
    opt_a, ps_a = make(backend, central, memory, dtype)
    losses_a = [opt_a.step(lambda: objective(ps_a)) for _ in range(6)]

    opt_b, ps_b = make(backend, central, memory, dtype)
    for _ in range(3):
        opt_b.step(lambda: objective(ps_b))
    saved = round_trip(opt_b.state_dict(), via)
    ps_c = [p.clone() for p in ps_b]
    # Built with other per-group hyperparameters: load_state_dict must bring back the saved ones.
    opt_c = CoCD(
        [{"params": [ps_c[0]]}, {"params": [ps_c[1]]}],
        lr=0.5,
        momentum=0.1,
        compute_budget=B,
        memory_budget=memory,
        central_difference=central,
        backend=backend,
    )
    opt_c.load_state_dict(saved)
    assert opt_c.step_count == 3
    losses_c = [opt_c.step(lambda: objective(ps_c)) for _ in range(3)]

    assert_same_state(opt_c, ps_c, snapshot(opt_a, ps_a))
    assert [float(x) for x in losses_c] == [float(x) for x in losses_a[3:]]
    assert opt_c.param_groups[1]["lr"] == 0.025


def test_state_dict_contents(backend):
    """state_dict holds the buffer, ring, head, c, t and the options, as a snapshot."""
    opt, ps = make(backend, memory=4)
    for _ in range(2):
        opt.step(lambda: objective(ps))
    sd = opt.state_dict()
    st = sd["state"]
    assert torch.equal(st["buffer"], opt._state.v)
    assert st["coords"].tolist() == [4, 5, 2, 3]  # blocks 0-2 then 3-5 pushed into a ring of 4
    assert (st["head"], st["c"], st["t"]) == (2, 6, 2)
    assert (st["n"], st["compute_budget"], st["memory_budget"]) == (7, 3, 4)
    assert st["central_difference"] is True
    assert st["nonfinite"] == "raise"
    assert [g["lr"] for g in sd["param_groups"]] == [0.05, 0.025]
    saved = st["buffer"].clone()
    opt.step(lambda: objective(ps))
    assert torch.equal(st["buffer"], saved)  # a copy, not the live buffer
    assert not torch.equal(opt._state.v, saved)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("compute_budget", 2),
        ("memory_budget", 5),
        ("central_difference", False),
    ],
    ids=lambda v: str(v),
)
def test_load_state_dict_rejects_other_options(backend, option, value):
    """Loading into an optimizer built with other budgets or mode is a ValueError naming them."""
    opt, ps = make(backend, memory=4)
    opt.step(lambda: objective(ps))
    options = dict(compute_budget=B, memory_budget=4, central_difference=True)
    options[option] = value
    other = CoCD([{"params": [p.clone()]} for p in ps], **options, backend=backend)
    snap = snapshot(other, [p for g in other.param_groups for p in g["params"]])
    with pytest.raises(ValueError, match=f"{option}="):
        other.load_state_dict(opt.state_dict())
    assert_same_state(other, [p for g in other.param_groups for p in g["params"]], snap)


def test_load_state_dict_rejects_other_size(backend):
    """A state dict of an optimizer over a different number of coordinates is rejected."""
    opt = CoCD([torch.zeros(5)], backend=backend)
    other = CoCD([torch.zeros(6)], backend=backend)
    with pytest.raises(ValueError, match="n=5"):
        other.load_state_dict(opt.state_dict())


def test_load_state_dict_rejects_foreign_state(backend):
    """A state dict of another optimizer is not a CoCD state dict."""
    p = torch.zeros(3, requires_grad=True)
    sgd = torch.optim.SGD([p], lr=0.1)
    opt = CoCD([torch.zeros(3)], backend=backend)
    with pytest.raises(ValueError, match="not a CoCD state_dict"):
        opt.load_state_dict(sgd.state_dict())


# ---------------------------------------------------------------------------- reset
@pytest.mark.parametrize(("central", "memory"), MODE_PARAMS)
def test_reset_restarts(backend, central, memory):
    """reset(): buffer 0, ring 0..m-1, head = c = t = 0, options kept; then a fresh first step."""
    opt, ps = make(backend, central, memory)
    for _ in range(3):
        opt.step(lambda: objective(ps))
    opt.param_groups[0]["lr"] = 0.03  # a changed option survives the reset
    opt.reset()
    st = opt.state_dict()["state"]
    assert torch.count_nonzero(st["buffer"]) == 0
    assert (st["head"], st["c"], st["t"], opt.step_count) == (0, 0, 0, 0)
    m = 7 if memory is None else memory
    if memory is not None:
        assert st["coords"].tolist() == list(range(m))
    assert (opt.compute_budget, opt.memory_budget, opt.central_difference) == (B, m, central)
    assert opt.nonfinite == "raise"
    assert opt.param_groups[0]["lr"] == 0.03

    fresh_ps = [p.clone() for p in ps]
    fresh = CoCD(
        [{**g, "params": [q]} for g, q in zip(opt.param_groups, fresh_ps, strict=True)],
        compute_budget=B,
        memory_budget=memory,
        central_difference=central,
        backend=backend,
    )
    for _ in range(2):
        loss = opt.step(lambda: objective(ps))
        fresh_loss = fresh.step(lambda: objective(fresh_ps))
        assert torch.equal(loss, fresh_loss)
        assert_same_state(opt, ps, snapshot(fresh, fresh_ps))


def test_reset_zeroes_init_grad(backend):
    """reset() zeroes the buffer even when it started from init_grad."""
    x = torch.randn(4)
    opt = CoCD([x], lr=0.0, init_grad=torch.ones(4), backend=backend)
    opt.reset()
    assert torch.equal(opt._state.v, torch.zeros(4))


def test_fifo_ring_is_8_bytes_an_entry_and_int64_checkpoints_still_load(backend):
    """int32 ring coordinates (n < 2^31): 4 + 4 bytes per float32 entry, as in the C
    library; a checkpoint saved with int64 coordinates resumes the same run bit for bit."""
    opt, ps = make(backend, memory=5)
    st = opt.state_dict()["state"]
    assert st["coords"].dtype == torch.int32
    assert st["coords"].element_size() + st["buffer"].element_size() == 8
    for _ in range(3):
        opt.step(lambda: objective(ps))
    saved = opt.state_dict()
    saved["state"]["coords"] = saved["state"]["coords"].to(torch.int64)  # an older format
    twin, twin_ps = make(backend, memory=5)
    for p, q in zip(twin_ps, ps, strict=True):
        p.copy_(q)
    twin.load_state_dict(saved)
    assert twin.state_dict()["state"]["coords"].dtype == torch.int32
    for _ in range(4):
        opt.step(lambda: objective(ps))
        twin.step(lambda: objective(twin_ps))
    assert_same_state(twin, twin_ps, snapshot(opt, ps))

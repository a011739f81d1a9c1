"""Untrusted input: every bad option, parameter or state dict is a clear error, and an
error changes nothing (``state_dict()`` and the parameters stay bit for bit the same)."""

import copy
import io
import re

import numpy as np
import pytest
import torch
from conftest import same

from cocd_cuda import CoCD
from cocd_cuda.baselines import SPSA, ZOSGD, MeZO

BASELINES = [SPSA, ZOSGD, MeZO]
W = torch.tensor([0.3, -1.2, 0.7, 2.0, -0.4, 1.1, -0.9], dtype=torch.float64)


def objective(ps):
    z = torch.cat([p.reshape(-1).double() for p in ps])
    return (torch.cos(z) * W[: z.numel()]).sum() + 0.25 * (z**4).sum()


def make(backend, memory=4, dtype=torch.float32, seed=0, steps=0):
    """Two groups over 4 + 3 fresh elements, B = 3; ``steps`` steps taken."""
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(4, generator=gen).to(dtype), torch.randn(3, generator=gen).to(dtype)
    groups = [{"params": [a], "momentum": 0.9}, {"params": [b], "lr": 0.02, "weight_decay": 0.1}]
    opt = CoCD(groups, lr=0.05, compute_budget=3, memory_budget=memory, backend=backend)
    for _ in range(steps):
        opt.step(lambda: objective([a, b]))
    return opt, [a, b]


def frozen(opt, ps):
    return copy.deepcopy(opt.state_dict()), [p.clone() for p in ps]


def assert_unchanged(opt, ps, before):
    sd, xs = before
    assert same(opt.state_dict(), sd)
    for p, x in zip(ps, xs, strict=True):
        assert same(p, x)


def rejects(opt, ps, state_dict, error, message):
    """load_state_dict(state_dict) raises error matching message and changes nothing."""
    before = frozen(opt, ps)
    with pytest.raises(error, match=message):
        opt.load_state_dict(state_dict)
    assert_unchanged(opt, ps, before)


def source_and_target(backend, memory=4):
    """A saved state after 2 steps (so a partial load would show) and a fresh optimizer."""
    src, _ = make(backend, memory, steps=2)
    dst, ps = make(backend, memory, seed=1)
    return copy.deepcopy(src.state_dict()), dst, ps


# ----------------------------------------------------- 1. ring coordinates on load
@pytest.mark.parametrize("bad", [10**9, -5, 7 + 5, 7])
def test_ring_coordinate_out_of_range_is_rejected(backend, bad):
    sd, opt, ps = source_and_target(backend)
    sd["state"]["coords"][0] = bad
    rejects(opt, ps, sd, ValueError, re.escape(f"ring coordinate {bad} is outside [0, n=7)"))


def test_duplicate_ring_coordinates_are_rejected(backend):
    sd, opt, ps = source_and_target(backend)
    coords = sd["state"]["coords"]
    coords[1] = coords[0]
    rejects(opt, ps, sd, ValueError, "ring coordinates are not distinct")


def test_ring_out_of_push_order_is_rejected(backend):
    """Distinct, in-range coordinates in another order are no state CoCD reaches: its
    next pushes would leave a coordinate twice in the ring, descended twice."""
    sd, opt, ps = source_and_target(backend)
    # n = 7, m = 4, B = 3: block 0-2 went to slots 0-2, then block 3-5 to slots 3, 0, 1.
    assert sd["state"]["coords"].tolist() == [4, 5, 2, 3]
    for ring in ([6, 0, 3, 1], [5, 4, 2, 3], [0, 1, 2, 3]):
        sd["state"]["coords"] = torch.tensor(ring)
        rejects(opt, ps, sd, ValueError, "do not follow from its block pointer c=6")


# ------------------------------------------------------------ 2. non-finite buffer
@pytest.mark.parametrize("memory", [None, 4], ids=["dense", "fifo"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_buffer_is_rejected(backend, memory, bad):
    sd, opt, ps = source_and_target(backend, memory)
    sd["state"]["buffer"][1] = bad
    rejects(opt, ps, sd, ValueError, "buffer contains NaN or infinity")


# ----------------------------------------------------------------- 3. all or nothing
def test_bad_loaded_group_changes_nothing(backend):
    """lr = -1 in a loaded group raises before the param groups are replaced."""
    sd, opt, ps = source_and_target(backend)
    sd["param_groups"][1]["lr"] = -1.0
    rejects(
        opt, ps, sd, ValueError, re.escape("Invalid lr: -1.0 (param group 1 of the state_dict)")
    )
    assert opt.param_groups[1]["lr"] == 0.02


@pytest.mark.parametrize(
    ("tamper", "error", "message"),
    [
        (lambda s: s.pop("coords"), ValueError, re.escape("'state' lacks ['coords']")),
        (lambda s: s.update(t="abc"), ValueError, re.escape("Invalid t: 'abc' (state_dict)")),
        (
            lambda s: s.update(coords=s["coords"][:3]),
            ValueError,
            re.escape("coords has shape (3,), expected (4,)"),
        ),
        (
            lambda s: s.update(buffer=s["buffer"][:3]),
            ValueError,
            re.escape("buffer has shape (3,), expected (4,)"),
        ),
        (lambda s: s.update(buffer=[0.0] * 4), TypeError, "buffer must be a tensor, got list"),
        (lambda s: s.update(head=4), ValueError, "out-of-range pointer c=6, head=4"),
        (lambda s: s.update(c=7), ValueError, "out-of-range pointer c=7"),
        (lambda s: s.update(nonfinite="skip"), ValueError, "invalid nonfinite='skip'"),
        (lambda s: s.update(fill=3), ValueError, "fill=3 but this optimizer has fill=4"),
    ],
    ids=[
        "no-coords",
        "t-str",
        "short-ring",
        "short-buffer",
        "list-buffer",
        "head",
        "c",
        "nf",
        "fill",
    ],
)
def test_bad_loaded_state_changes_nothing(backend, tamper, error, message):
    sd, opt, ps = source_and_target(backend)
    tamper(sd["state"])
    rejects(opt, ps, sd, error, message)


def test_group_count_mismatch_changes_nothing(backend):
    sd, opt, ps = source_and_target(backend)
    sd["param_groups"] = sd["param_groups"][:1]
    rejects(opt, ps, sd, ValueError, "has 1 param groups but this optimizer has 2")


def test_loaded_state_is_exactly_the_saved_one(backend):
    """After all the checks a valid state still loads bit for bit (and resumes)."""
    sd, opt, _ = source_and_target(backend)
    opt.load_state_dict(sd)
    assert same(opt.state_dict()["state"], sd["state"])


# --------------------------------------------------- 4. no silent truncation or rounding
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("c", 2.7, "Invalid c: 2.7"),
        ("t", -5, "Invalid t: -5"),
        ("head", True, "Invalid head: True"),
        ("compute_budget", 3.0, "Invalid compute_budget: 3.0"),
    ],
)
def test_non_integer_or_negative_counter_is_rejected(backend, key, value, message):
    sd, opt, ps = source_and_target(backend)
    sd["state"][key] = value
    rejects(opt, ps, sd, ValueError, re.escape(message))


def test_buffer_of_another_dtype_is_rejected(backend):
    """A float64 buffer for float32 state would be rounded: rejected, not converted."""
    sd, opt, ps = source_and_target(backend)
    sd["state"]["buffer"] = sd["state"]["buffer"].double()
    rejects(
        opt, ps, sd, ValueError, "buffer has dtype torch.float64; this optimizer's is torch.float32"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool], ids=str)
def test_non_integer_ring_coordinates_are_rejected(backend, dtype):
    sd, opt, ps = source_and_target(backend)
    sd["state"]["coords"] = sd["state"]["coords"].to(dtype)
    rejects(opt, ps, sd, ValueError, re.escape(f"coords has dtype {dtype}"))


def test_central_difference_must_be_a_bool(backend):
    sd, opt, ps = source_and_target(backend)
    sd["state"]["central_difference"] = 1
    rejects(opt, ps, sd, TypeError, "central_difference must be a bool, got 1")


# ------------------------------------------------------------------- 5. aliasing
def test_parameter_and_its_view_are_rejected():
    a = torch.zeros(10)
    with pytest.raises(
        ValueError, match="param group 0, parameter 1 overlaps param group 0, parameter 0"
    ):
        CoCD([a, a.view(10)])


def test_overlapping_slices_are_rejected():
    b = torch.zeros(10)
    with pytest.raises(ValueError, match=r"overlaps .*in memory"):
        CoCD([{"params": [b[:6]]}, {"params": [b[4:]]}])


def test_adjacent_slices_are_accepted(backend):
    """Views that do not overlap are distinct coordinates: n counts each element once."""
    b = torch.zeros(10)
    opt = CoCD([b[:4], b[4:]], backend=backend)
    assert opt._state.n == 10


# --------------------------------------------------------- 6. storage replaced later
@pytest.mark.parametrize("memory", [None, 4], ids=["dense", "fifo"])
@pytest.mark.parametrize("how", ["new-storage", "same-storage"])
def test_replaced_storage_is_detected_at_the_next_step(backend, memory, how):
    opt, ps = make(backend, memory, steps=1)
    before = frozen(opt, ps)
    big = torch.zeros(64)
    ps[0].data = big[:2] if how == "new-storage" else ps[0].data[:2]
    calls = []
    with pytest.raises(RuntimeError, match=r"param group 0, parameter 0 changed .* had 4 elements"):
        opt.step(lambda: calls.append(1) or objective(ps))
    assert calls == []
    assert same(opt.state_dict(), before[0])
    assert big.eq(0).all()  # nothing written into (or past) the new storage


def test_changed_dtype_is_detected(backend):
    opt, ps = make(backend, steps=1)
    ps[1].data = ps[1].data.double()
    with pytest.raises(RuntimeError, match=re.escape("had 3 elements of torch.float32")):
        opt.step(lambda: objective(ps))


# ------------------------------------------- 7. meta, inference, stride 0, meta losses
def test_meta_parameter_is_rejected():
    with pytest.raises(ValueError, match="param group 0, parameter 0 is on the meta device"):
        CoCD([torch.zeros(3, device="meta")])


def test_inference_parameter_is_rejected():
    with torch.inference_mode():
        p = torch.zeros(3)
    with pytest.raises(ValueError, match="is an inference tensor"):
        CoCD([p])


def test_expanded_parameter_is_rejected():
    with pytest.raises(ValueError, match=re.escape("has stride 0 (shape (4, 3), strides (0, 1))")):
        CoCD([torch.zeros(3).expand(4, 3)])


def test_misaligned_parameter_is_rejected():
    """A float32 view at an odd byte offset would make the kernels load misaligned."""
    p = torch.frombuffer(bytearray(40), dtype=torch.float32, offset=2, count=4)
    with pytest.raises(ValueError, match="not a multiple of its 4-byte elements"):
        CoCD([p])


def test_meta_loss_raises_the_same_error_in_every_engine(backend):
    opt, ps = make(backend, steps=1)
    before = frozen(opt, ps)
    with pytest.raises(ValueError, match="closure returned a loss on the meta device"):
        opt.step(lambda: torch.zeros((), device="meta"))
    assert_unchanged(opt, ps, before)


# ------------------------------------------------------------- 8. lr * weight_decay
def test_overflowing_decay_is_rejected(backend):
    with pytest.raises(
        ValueError, match=re.escape("lr * weight_decay: 1e+200 * 1e+200 is not finite")
    ):
        CoCD([torch.zeros(3)], lr=1e200, weight_decay=1e200, backend=backend)
    opt, ps = make(backend, steps=1)
    before = frozen(opt, ps)
    opt.param_groups[0].update(lr=1e200, weight_decay=1e200)
    with pytest.raises(ValueError, match="not finite"):
        opt.step(lambda: objective(ps))
    opt.param_groups[0].update(lr=0.05, weight_decay=0.0)
    assert_unchanged(opt, ps, before)


# ----------------------------------------------------------------- 9. numpy scalars
def test_numpy_hyperparameters_are_stored_as_floats(backend):
    opt = CoCD([torch.zeros(3)], lr=np.float32(0.1), eps=np.float64(0.05), backend=backend)
    group = opt.param_groups[0]
    assert type(group["lr"]) is float and group["lr"] == float(np.float32(0.1))
    assert type(group["eps"]) is float
    group["momentum"] = np.float32(0.5)  # e.g. written by a scheduler
    opt.step(lambda: torch.tensor(1.0))
    assert type(group["momentum"]) is float
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert loaded["param_groups"][0]["momentum"] == 0.5


def test_numpy_values_in_a_loaded_state_become_floats(backend):
    sd, opt, _ = source_and_target(backend)
    sd["param_groups"][0]["lr"] = np.float64(0.25)
    opt.load_state_dict(sd)
    assert type(opt.param_groups[0]["lr"]) is float and opt.param_groups[0]["lr"] == 0.25


# --------------------------------------------------------------- 10. clear messages
def test_init_grad_on_meta_says_what_is_expected():
    with pytest.raises(ValueError, match=r"init_grad is on the meta device.*3 initial estimates"):
        CoCD([torch.zeros(3)], init_grad=torch.zeros(3, device="meta"))


def test_load_state_dict_of_none_says_what_is_expected(backend):
    opt, ps = make(backend)
    rejects(
        opt,
        ps,
        None,
        TypeError,
        "expects the dict that CoCD.state_dict\\(\\) returned, got NoneType",
    )


def test_state_dict_without_compute_budget_says_what_is_missing(backend):
    sd, opt, ps = source_and_target(backend)
    del sd["state"]["compute_budget"]
    rejects(opt, ps, sd, ValueError, re.escape("'state' lacks ['compute_budget']"))


# -------------------------------------------------------------------- 12. baselines
@pytest.mark.parametrize("cls", BASELINES)
def test_baselines_share_the_parameter_checks(cls):
    name = cls.__name__
    with pytest.raises(ValueError, match=f"{name}.*layout torch.sparse_coo"):
        cls([torch.zeros(3).to_sparse()])
    a = torch.zeros(6)
    with pytest.raises(ValueError, match="parameter 1 overlaps param group 0, parameter 0"):
        cls([a[:4], a[2:]])
    with pytest.raises(ValueError, match="meta device"):
        cls([torch.zeros(3, device="meta")])
    with pytest.raises(ValueError, match="stride 0"):
        cls([torch.zeros(1).expand(3)])
    with pytest.raises(ValueError, match="lr \\* weight_decay"):
        cls([torch.zeros(3)], lr=1e200, weight_decay=1e200)


def baseline_pair(cls):
    src_p, dst_p = torch.ones(5), torch.zeros(5)
    src = cls([src_p], lr=0.01, seed=3)
    src.step(lambda: (src_p**2).sum())
    return copy.deepcopy(src.state_dict()), cls([dst_p], lr=0.02, seed=4), [dst_p]


@pytest.mark.parametrize("cls", BASELINES)
@pytest.mark.parametrize(
    ("tamper", "error", "message"),
    [
        (lambda sd: sd["param_groups"][0].update(lr=-1.0), ValueError, "Invalid lr: -1.0"),
        (lambda sd: sd["state"].update(step=-1), ValueError, "Invalid step: -1"),
        (lambda sd: sd["state"].update(step=1.5), ValueError, "Invalid step: 1.5"),
        (lambda sd: sd["state"].update(eps=float("nan")), ValueError, "Invalid eps: nan"),
        (
            lambda sd: sd["state"].update(seed_generator=torch.zeros(3, dtype=torch.uint8)),
            ValueError,
            "seed_generator is not a torch.Generator state",
        ),
        (lambda sd: sd["state"].pop("step"), ValueError, re.escape("lacks ['step']")),
    ],
    ids=["lr", "step-negative", "step-float", "eps", "generator", "no-step"],
)
def test_baseline_load_is_all_or_nothing(cls, tamper, error, message):
    sd, opt, ps = baseline_pair(cls)
    tamper(sd)
    before = (copy.deepcopy(opt.state_dict()), [p.clone() for p in ps])
    with pytest.raises(error, match=message):
        opt.load_state_dict(sd)
    assert same(opt.state_dict(), before[0])
    assert opt.param_groups[0]["lr"] == 0.02


@pytest.mark.parametrize("cls", BASELINES)
def test_baseline_valid_load_still_resumes(cls):
    sd, opt, _ = baseline_pair(cls)
    opt.load_state_dict(sd)
    assert same(opt.state_dict()["state"], sd["state"])
    assert opt.param_groups[0]["lr"] == 0.01

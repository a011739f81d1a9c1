"""Randomized properties (hypothesis): the native engine is the reference bit for bit on
random configurations, and a randomly tampered state dict either raises with the
optimizer unchanged or loads a valid state, the same way in both engines.

By default a few dozen examples each (well under 30 s); ``pytest -m slow`` runs the
``slow`` variants with ten times as many.
"""

import copy

import pytest
import torch
from conftest import same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocd_cuda import CoCD, backends

pytestmark = pytest.mark.skipif(
    "native" not in backends.available(), reason="needs the built extension (native engine)"
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def configs(draw):
    """Parameters (1-3 tensors, 1-5 elements, 1-2 groups) and optimizer options."""
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    n = sum(sizes)
    B = draw(st.integers(1, n + 1))
    memory = draw(st.one_of(st.none(), st.integers(min(B, n), n + 1)))
    groups = draw(st.integers(1, min(2, len(sizes))))
    hyper = [
        dict(
            lr=draw(st.sampled_from([0.0, 0.01, 0.2])),
            weight_decay=draw(st.sampled_from([0.0, 0.1])),
            eps=draw(st.sampled_from([0.05, 0.1, 0.5])),
            momentum=draw(st.sampled_from([0.0, 0.5, 1.0])),
        )
        for _ in range(groups)
    ]
    return dict(
        dtype=dtype,
        sizes=sizes,
        seed=draw(st.integers(0, 2**16)),
        hyper=hyper,
        options=dict(
            compute_budget=B,
            memory_budget=memory,
            central_difference=draw(st.booleans()),
            nonfinite=draw(st.sampled_from(["raise", "zero"])),
        ),
        steps=draw(st.integers(1, 4)),
    )


def build(cfg, backend):
    gen = torch.Generator().manual_seed(cfg["seed"])
    ps = [torch.randn(k, generator=gen).to(cfg["dtype"]) for k in cfg["sizes"]]
    split = len(ps) if len(cfg["hyper"]) == 1 else 1
    chunks = [ps[:split], ps[split:]][: len(cfg["hyper"])]
    groups = [{"params": c, **h} for c, h in zip(chunks, cfg["hyper"], strict=True)]
    return CoCD(groups, **cfg["options"], backend=backend), ps


def loss(ps):
    z = torch.cat([p.reshape(-1).double() for p in ps])
    w = torch.arange(1, z.numel() + 1, dtype=torch.float64)
    return (torch.sin(w * z) + 0.1 * w * z**2).sum()


def run(cfg):
    """Both engines, ``steps`` steps each: the optimizers and parameters."""
    out = []
    for backend in ("native", "reference"):
        opt, ps = build(cfg, backend)
        for _ in range(cfg["steps"]):
            opt.step(lambda ps=ps: loss(ps))
        out.append((opt, ps))
    return out


def check_engines_agree(cfg):
    (nat, xn), (ref, xr) = run(cfg)
    assert all(same(a, b) for a, b in zip(xn, xr, strict=True))
    assert same(nat.state_dict(), ref.state_dict())


@FAST
@given(configs())
def test_native_matches_reference_on_random_configurations(cfg):
    check_engines_agree(cfg)


@pytest.mark.slow
@SLOW
@given(configs())
def test_native_matches_reference_on_random_configurations_slow(cfg):
    check_engines_agree(cfg)


# ---------------------------------------------------------------------- tampering
FIELDS = ["buffer", "coords", "c", "t", "head", "n", "compute_budget", "memory_budget",
          "central_difference", "nonfinite", "fill", "lr", "momentum"]  # fmt: skip
KINDS = ["wrong type", "out of range", "nan", "duplicated", "truncated", "missing", "shifted"]


def tamper(sd: dict, field: str, kind: str, data) -> None:
    """Change one field of a state dict in place, as a corrupted checkpoint would."""
    group_field = field in ("lr", "momentum")
    box = sd["param_groups"][0] if group_field else sd["state"]
    if field not in box:
        return
    value = box[field]
    if kind == "missing":
        del box[field]
    elif kind == "wrong type":
        box[field] = data.draw(st.sampled_from(["abc", None, [1], 2.5, True]))
    elif kind == "out of range":
        box[field] = data.draw(st.sampled_from([-1, -5, 10**9, 2**62, float("inf")]))
    elif kind == "nan":
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            value[data.draw(st.integers(0, value.numel() - 1))] = float("nan")
        else:
            box[field] = float("nan")
    elif kind == "duplicated":
        if isinstance(value, torch.Tensor) and value.numel() > 1:
            i, j = data.draw(st.lists(st.integers(0, value.numel() - 1), min_size=2, max_size=2))
            value[i] = value[j]
    elif kind == "truncated":
        if isinstance(value, torch.Tensor):
            box[field] = value[: data.draw(st.integers(0, max(0, value.numel() - 1)))]
    elif kind == "shifted" and not isinstance(value, (bool, str, type(None))):
        box[field] = value + 1  # a plausible but different value


def valid_state(opt) -> None:
    """The invariants a loaded state must satisfy."""
    s = opt.state_dict()["state"]
    n, m = s["n"], s["memory_budget"]
    assert bool(torch.isfinite(s["buffer"]).all()) and s["buffer"].shape == (m,)
    assert 0 <= s["c"] < n and 0 <= s["head"] < m and s["t"] >= 0
    if m < n:
        coords = s["coords"]
        assert bool(((coords >= 0) & (coords < n)).all())
        assert torch.unique(coords).numel() == m


def check_tampering(cfg, field, kind, data):
    src, xs = build(cfg, "native")
    for _ in range(cfg["steps"]):
        src.step(lambda: loss(xs))
    sd = copy.deepcopy(src.state_dict())
    tamper(sd, field, kind, data)
    # Load into fresh optimizers over fresh parameters (a partial load would show).
    targets = [build(cfg, backend) for backend in ("native", "reference")]
    outcomes = []
    for opt, ps in targets:
        before = (copy.deepcopy(opt.state_dict()), [p.clone() for p in ps])
        try:
            opt.load_state_dict(copy.deepcopy(sd))
        except (ValueError, TypeError) as exc:
            assert same(opt.state_dict(), before[0])
            assert all(same(p, x) for p, x in zip(ps, before[1], strict=True))
            outcomes.append((type(exc), str(exc)))
            continue
        valid_state(opt)
        try:  # a loaded lr of 1e9 may well make the next loss non-finite
            opt.step(lambda ps=ps: loss(ps))
            outcomes.append(None)
        except FloatingPointError as exc:
            outcomes.append((FloatingPointError, str(exc)))
    assert outcomes[0] == outcomes[1]  # the same error, or both loaded
    if outcomes[0] is None or outcomes[0][0] is FloatingPointError:
        (a, pa), (b, pb) = targets
        assert same(a.state_dict(), b.state_dict())
        assert all(same(x, y) for x, y in zip(pa, pb, strict=True))


@FAST
@given(configs(), st.sampled_from(FIELDS), st.sampled_from(KINDS), st.data())
def test_tampered_state_dict_raises_unchanged_or_loads_a_valid_state(cfg, field, kind, data):
    check_tampering(cfg, field, kind, data)


@pytest.mark.slow
@SLOW
@given(configs(), st.sampled_from(FIELDS), st.sampled_from(KINDS), st.data())
def test_tampered_state_dict_raises_unchanged_or_loads_a_valid_state_slow(cfg, field, kind, data):
    check_tampering(cfg, field, kind, data)

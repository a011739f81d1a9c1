"""Every check of user input, in one place: options, parameters and loaded state.

CoCD, the baselines (``cocd_cuda.baselines``) and both ``load_state_dict`` methods call
these. A failed check raises ValueError or TypeError naming the value, what was
expected and how to fix it, before anything has changed. A state dict is untrusted
input (it may come from disk or another person): ``cocd_state`` checks every field of
it, so that no loaded value can make a step write outside a parameter's memory or put
NaN into the parameters.
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .state import MAX_STEPS, ring_coordinates

GROUP_OPTIONS = ("lr", "weight_decay", "eps", "momentum")
BASELINE_OPTIONS = ("lr", "weight_decay")  # per param group in SPSA, ZO-SGD and MeZO
OPTIMIZER_OPTIONS = (
    "compute_budget",
    "memory_budget",
    "central_difference",
    "init_grad",
    "nonfinite",
    "backend",
    "process_group",
    "parallel",
)


@dataclass(frozen=True)
class GroupHyper:
    """The per-group hyperparameters read from ``param_groups`` at each step."""

    lr: float
    weight_decay: float
    eps: float
    momentum: float


# ------------------------------------------------------------------------ numbers
def finite_number(name: str, value, where: str) -> float:
    """``value`` as a plain float (never a numpy scalar), or an error naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({where})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Invalid {name}: {value!r} ({where}); it must be finite")
    return value


def integer(name: str, value, minimum: int = 1, where: str = "") -> int:
    """``value`` as a plain int >= minimum; bools, floats and strings are rejected."""
    at = f" ({where})" if where else ""
    error = ValueError(f"Invalid {name}: {value!r}{at}; it must be an int >= {minimum}")
    if isinstance(value, bool):  # an int subclass, but never a count
        raise error
    try:
        value_int = operator.index(value)
    except TypeError:
        raise error from None
    if value_int < minimum:
        raise error
    return value_int


def _decay(lr: float, wd: float, where: str) -> None:
    """x * (1 - lr*wd) must stay finite: 1e200 * 1e200 would fill x with inf/NaN."""
    if not math.isfinite(lr * wd):
        raise ValueError(
            f"Invalid lr * weight_decay: {lr!r} * {wd!r} is not finite ({where}); the "
            "decay factor 1 - lr*weight_decay must be finite: lower lr or weight_decay"
        )


def _lr_wd(group: Mapping, where: str) -> tuple[float, float]:
    for key in ("lr", "weight_decay"):
        if key not in group:
            raise ValueError(f"{where} lacks {key!r}; every param group needs lr and weight_decay")
    lr = finite_number("lr", group["lr"], where)
    wd = finite_number("weight_decay", group["weight_decay"], where)
    if lr < 0:
        raise ValueError(f"Invalid lr: {lr!r} ({where}); it must be >= 0")
    if wd < 0:
        raise ValueError(f"Invalid weight_decay: {wd!r} ({where}); it must be >= 0")
    _decay(lr, wd, where)
    return lr, wd


def cocd_group(group: Mapping, where: str) -> GroupHyper:
    """One CoCD param group's hyperparameters, checked; the error names the bad value."""
    for key in OPTIMIZER_OPTIONS:
        if key in group:
            raise ValueError(
                f"{key} is an optimizer-wide option of CoCD; pass it to CoCD(...), "
                f"not in a param group ({where})"
            )
    for key in GROUP_OPTIONS:
        if key not in group:
            raise ValueError(f"{where} lacks {key!r}; a CoCD param group needs {GROUP_OPTIONS}")
    lr, wd = _lr_wd(group, where)
    eps = finite_number("eps", group["eps"], where)
    gamma = finite_number("momentum", group["momentum"], where)
    if eps <= 0:
        raise ValueError(f"Invalid eps: {eps!r} ({where}); it must be > 0")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"Invalid momentum: {gamma!r} ({where}); it must lie in [0, 1]")
    return GroupHyper(lr, wd, eps, gamma)


def baseline_group(group: Mapping, where: str) -> tuple[float, float]:
    """A baseline's param group: (lr, weight_decay), checked as CoCD's."""
    return _lr_wd(group, where)


def store_floats(group: dict, keys: tuple[str, ...], values) -> None:
    """Write checked values back as plain floats, so that a numpy scalar never reaches
    a state dict (which ``torch.load(weights_only=True)`` must be able to read)."""
    for key, value in zip(keys, values, strict=True):
        if type(group[key]) is not float:
            group[key] = value


# ---------------------------------------------------------------------- parameters
def _where(gi: int, pi: int) -> str:
    return f"param group {gi}, parameter {pi}"


def _span(p: torch.Tensor) -> tuple[int, int]:
    """The byte range [lo, hi) that p's elements occupy (strides are never negative)."""
    extent = 1 + sum((size - 1) * stride for size, stride in zip(p.shape, p.stride(), strict=True))
    lo = p.data_ptr()
    return lo, lo + extent * p.element_size()


def check_params(param_groups: list[dict], owner: str = "CoCD") -> None:
    """Reject parameter sets that ``owner`` cannot optimize, naming the offender."""
    try:
        _check_params(param_groups, owner)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{owner}: {exc}") from None


def _check_params(param_groups: list[dict], owner: str) -> None:
    seen: set[int] = set()
    spans: list[tuple[int, int, str]] = []
    device = None
    total = 0
    for gi, group in enumerate(param_groups):
        for pi, p in enumerate(group["params"]):
            where = _where(gi, pi)
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{where} is a {type(p).__name__}, expected a torch.Tensor")
            if not p.is_floating_point():
                raise ValueError(
                    f"{where} has dtype {p.dtype}; {owner} optimizes floating-point "
                    "tensors (float16, bfloat16, float32, float64) only"
                )
            if p.layout != torch.strided:
                raise ValueError(
                    f"{where} has layout {p.layout}; only dense tensors are supported "
                    "(convert it with .to_dense())"
                )
            if p.is_meta:
                raise ValueError(
                    f"{where} is on the meta device, which holds no values; materialize "
                    "it (e.g. model.to_empty(device='cpu') and initialize) before "
                    f"creating {owner}"
                )
            if p.is_inference():
                raise ValueError(
                    f"{where} is an inference tensor (created under torch.inference_mode()), "
                    f"which {owner} cannot update in place; create it outside inference "
                    "mode, or pass p.clone() made outside it"
                )
            if any(st == 0 and size > 1 for size, st in zip(p.shape, p.stride(), strict=True)):
                raise ValueError(
                    f"{where} has stride 0 (shape {tuple(p.shape)}, strides {p.stride()}): "
                    "several of its elements share one memory location (an expanded "
                    "tensor); pass p.clone() or the tensor it was expanded from"
                )
            if p.data_ptr() % p.element_size():
                raise ValueError(
                    f"{where} starts at an address that is not a multiple of its "
                    f"{p.element_size()}-byte elements (e.g. torch.frombuffer with an odd "
                    "offset); pass p.clone()"
                )
            if id(p) in seen:
                raise ValueError(
                    f"{where} appears twice in the parameter list; pass each tensor once"
                )
            seen.add(id(p))
            if device is None:
                device = p.device
            elif p.device != device:
                raise ValueError(
                    f"{where} is on {p.device} but earlier parameters are on {device}; "
                    f"{owner} needs all parameters on one device"
                )
            if p.numel() > 0:
                spans.append((*_span(p), where))
            total += p.numel()
    if not seen:
        raise ValueError("got an empty parameter list; pass the tensors to optimize")
    if total == 0:
        raise ValueError("got parameters with no elements; there is nothing to optimize")
    # Two parameters over the same memory would be perturbed and descended twice (and
    # a coordinate count larger than the memory they cover).
    spans.sort()
    for (_, hi_a, a), (lo_b, _, b) in itertools.pairwise(spans):
        if lo_b < hi_a:
            raise ValueError(
                f"{b} overlaps {a} in memory (views of one storage, e.g. a and "
                f"a.view(...), or overlapping slices); pass each tensor once, or views "
                "that do not overlap"
            )


def check_unchanged(layout, contiguous: bool = False) -> None:
    """Raise if a parameter's storage was replaced since construction (``p.data = ...``).

    The layout fixed each parameter's element count, dtype and device; an engine that
    kept them would write past a smaller new storage. ``contiguous``: the native engine
    also needs each parameter still contiguous.
    """
    for i, p in enumerate(layout.params):
        if (
            p.numel() != layout.numels[i]
            or p.dtype != layout.dtypes[i]
            or p.device != layout.device
            or (contiguous and not p.is_contiguous())
            or p.data_ptr() % p.element_size()
        ):
            now = f"{p.numel()} elements of {p.dtype} on {p.device}"
            if contiguous and not p.is_contiguous():
                now += ", not contiguous"
            raise RuntimeError(
                f"{layout.names[i]} changed since the optimizer was created: it had "
                f"{layout.numels[i]} elements of {layout.dtypes[i]} on {layout.device}, now "
                f"{now} (was its .data replaced?); the coordinates are laid out at "
                "construction, so create a new optimizer over the changed parameters"
            )


def check_init_grad(init_grad, m: int, device, dtype) -> torch.Tensor:
    """``init_grad`` as a flat copy on the parameters' device in the buffer dtype."""
    if not isinstance(init_grad, torch.Tensor) or not init_grad.is_floating_point():
        what = init_grad.dtype if isinstance(init_grad, torch.Tensor) else type(init_grad)
        raise ValueError(
            f"init_grad must be a floating-point tensor with {m} elements (one per "
            f"buffer entry), got {what}"
        )
    if init_grad.is_meta:
        raise ValueError(
            f"init_grad is on the meta device, which holds no values; pass a tensor with "
            f"the {m} initial estimates"
        )
    if init_grad.layout != torch.strided:
        raise ValueError(f"init_grad has layout {init_grad.layout}; pass a dense tensor")
    if init_grad.numel() != m:
        raise ValueError(
            f"init_grad has {init_grad.numel()} elements; expected exactly {m} (one "
            "per buffer entry: entry k is the initial estimate of coordinate k)"
        )
    # A copy, never an alias: the caller's tensor must not change under us.
    init = init_grad.detach().reshape(-1).to(device, dtype, copy=True)
    if not bool(torch.isfinite(init).all()):
        raise ValueError("init_grad contains NaN or infinity; pass finite estimates")
    return init


# -------------------------------------------------------------------- state dicts
def _outer(state_dict, owner: str) -> tuple[Mapping, list]:
    """The 'state' and 'param_groups' of a state dict, both checked for their type."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"load_state_dict expects the dict that {owner}.state_dict() returned, got "
            f"{type(state_dict).__name__}"
        )
    state, groups = state_dict.get("state"), state_dict.get("param_groups")
    if not isinstance(state, Mapping) or not isinstance(groups, (list, tuple)):
        raise ValueError(
            f"not a {owner} state_dict: it needs a dict 'state' and a list 'param_groups' "
            f"(got {type(state).__name__} and {type(groups).__name__}); pass the dict "
            f"that {owner}.state_dict() returned"
        )
    return state, list(groups)


def _groups(saved: list, current: list[dict], check) -> list:
    """Check the saved param groups against the optimizer's; returns check's results."""
    if len(saved) != len(current):
        raise ValueError(
            f"the state_dict has {len(saved)} param groups but this optimizer has "
            f"{len(current)}; load it into an optimizer built over the same groups"
        )
    out = []
    for i, (group, mine) in enumerate(zip(saved, current, strict=True)):
        where = f"param group {i} of the state_dict"
        if not isinstance(group, Mapping) or not isinstance(group.get("params"), (list, tuple)):
            raise ValueError(f"{where} is not a dict with a list 'params'")
        if len(group["params"]) != len(mine["params"]):
            raise ValueError(
                f"{where} has {len(group['params'])} parameters but this optimizer's has "
                f"{len(mine['params'])}; load it into an optimizer over the same parameters"
            )
        out.append(check(group, where))
    return out


def _missing(state: Mapping, keys, owner: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(
            f"not a {owner} state_dict: 'state' lacks {missing}; pass the dict that "
            f"{owner}.state_dict() returned"
        )


def _same(key: str, saved, mine, owner: str) -> None:
    if saved != mine:
        raise ValueError(
            f"state_dict has {key}={saved!r} but this optimizer has {key}={mine!r}; "
            f"construct {owner} with the saved options to resume"
        )


def _tensor(name: str, value, shape: tuple[int, ...]) -> torch.Tensor:
    """A dense tensor with values and the given shape, detached."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"state_dict {name} must be a tensor, got {type(value).__name__}")
    if value.is_meta or value.layout != torch.strided:
        raise ValueError(
            f"state_dict {name} is a {value.layout} tensor on {value.device}; expected a "
            "dense tensor with values"
        )
    if tuple(value.shape) != shape:
        raise ValueError(
            f"state_dict {name} has shape {tuple(value.shape)}, expected {shape} "
            "(memory_budget entries)"
        )
    return value.detach()


def cocd_state(state_dict, opt) -> tuple[list[GroupHyper], dict]:
    """Check a CoCD state dict in full against the optimizer ``opt``; change nothing.

    Returns the loaded groups' hyperparameters and the engine state (plain ints and
    detached tensors) that ``opt`` then commits.
    """
    st = opt._state
    n, m, dense = st.n, st.m, st.dense
    state, groups = _outer(state_dict, "CoCD")
    keys = ["buffer", "c", "t", "head", "n", "compute_budget", "memory_budget"]
    _missing(state, [*keys, "central_difference", *([] if dense else ["coords"])], "CoCD")
    for key, mine in (("n", n), ("compute_budget", opt.compute_budget), ("memory_budget", m)):
        _same(key, integer(key, state[key], 1, "state_dict"), mine, "CoCD")
    central = state["central_difference"]
    if not isinstance(central, bool):
        raise TypeError(f"state_dict central_difference must be a bool, got {central!r}")
    _same("central_difference", central, opt.central_difference, "CoCD")
    if "fill" in state:
        _same("fill", integer("fill", state["fill"], 1, "state_dict"), m, "CoCD")
    nonfinite = state.get("nonfinite", opt.nonfinite)
    if not isinstance(nonfinite, str) or nonfinite not in ("raise", "zero"):
        raise ValueError(
            f"state_dict has an invalid nonfinite={nonfinite!r}; use 'raise' or 'zero'"
        )

    c = integer("c", state["c"], 0, "state_dict")
    head = integer("head", state["head"], 0, "state_dict")
    t = integer("t", state["t"], 0, "state_dict")
    if c >= n or head >= m or (dense and head != 0) or t >= MAX_STEPS:
        raise ValueError(
            f"state_dict has an out-of-range pointer c={c}, head={head} or step count t={t}; "
            f"expected 0 <= c < n={n}, 0 <= head < memory_budget={m} (0 in dense mode) "
            f"and 0 <= t < 2**62"
        )
    buffer = _tensor("buffer", state["buffer"], (m,))
    if buffer.dtype != st.v.dtype:
        raise ValueError(
            f"state_dict buffer has dtype {buffer.dtype}; this optimizer's is "
            f"{st.v.dtype} (float64 exactly when a parameter is float64); a buffer "
            "is never converted, since that would round it"
        )
    if not bool(torch.isfinite(buffer).all()):
        raise ValueError("state_dict buffer contains NaN or infinity; it is not a CoCD state")
    coords = state.get("coords")
    if dense:
        if coords is not None:
            raise ValueError(
                "state_dict has ring coordinates but this optimizer keeps every coordinate "
                f"(memory_budget = n = {n}); construct CoCD with the saved memory_budget"
            )
    else:
        coords = _tensor("coords", coords, (m,))
        if coords.is_floating_point() or coords.is_complex() or coords.dtype == torch.bool:
            raise ValueError(
                f"state_dict coords has dtype {coords.dtype}; ring coordinates are integers"
            )
        coords = coords.to(torch.int64)
        if m and not bool(((coords >= 0) & (coords < n)).all()):
            bad = int(coords[(coords < 0) | (coords >= n)][0])
            raise ValueError(f"state_dict ring coordinate {bad} is outside [0, n={n})")
        if torch.unique(coords).numel() != m:
            raise ValueError(
                "state_dict ring coordinates are not distinct; a ring holds each "
                "coordinate at most once"
            )
        implied = ring_coordinates(c, head, t, n, m, opt.compute_budget)
        if not torch.equal(coords.cpu(), implied):
            raise ValueError(
                f"state_dict ring coordinates do not follow from its block pointer c={c}, "
                f"ring head={head} and step count t={t} (slot head+k holds the k-th "
                "oldest pushed coordinate); a ring in another order is not a CoCD state, "
                "and its next steps would descend some coordinates twice"
            )
    hyper = _groups(groups, opt.param_groups, cocd_group)
    loaded = {"buffer": buffer, "coords": coords, "c": c, "head": head, "t": t}
    return hyper, {**loaded, "nonfinite": nonfinite}


def baseline_state(state_dict, opt) -> tuple[list[tuple[float, float]], dict]:
    """Check a baseline's (SPSA, ZOSGD, MeZO) state dict in full; change nothing."""
    owner = type(opt).__name__
    state, groups = _outer(state_dict, owner)
    _missing(state, ("step", "seed_generator", "num_directions"), owner)
    for key in ("num_directions", "chunk_size"):
        mine = getattr(opt, key)
        _same(key, integer(key, state.get(key, mine), 1, "state_dict"), mine, owner)
    out = {
        "step": integer("step", state["step"], 0, "state_dict"),
        "evaluations": integer("evaluations", state.get("evaluations", 0), 0, "state_dict"),
        "seed": integer("seed", state.get("seed", opt.seed), 0, "state_dict"),
        "eps": finite_number("eps", state.get("eps", opt.eps), "state_dict"),
    }
    if out["eps"] <= 0:
        raise ValueError(f"Invalid eps: {out['eps']!r} (state_dict); it must be > 0")
    generator = state["seed_generator"]
    try:  # on a scratch generator: the optimizer's own changes only at commit
        torch.Generator().set_state(generator)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(
            f"state_dict seed_generator is not a torch.Generator state ({exc}); pass "
            "the dict that state_dict() returned"
        ) from None
    out["seed_generator"] = generator
    return _groups(groups, opt.param_groups, baseline_group), out

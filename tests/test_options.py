"""CoCD's options: validation with errors that name the bad value, clamping and param groups."""

import re

import numpy as np
import pytest
import torch
from conftest import assert_same_state, snapshot

from cocd_cuda import CoCD

F64 = torch.float64


# ----------------------------------------------------------------------------- helpers
def params(n=5, dtype=F64):
    """One fresh parameter vector of n elements."""
    return [torch.randn(n, dtype=dtype)]


def quad_closure(ps):
    """A closure for sum of squares over ``ps``."""
    return lambda: sum((p.double() ** 2).sum() for p in ps)


def shape_pattern(shape):
    """A regex for ``shape`` written as a tuple, (2, 3), or as a list, [2, 3]."""
    return r"shape [\(\[]" + ", ".join(map(str, shape)) + r",?[\)\]]"


# ----------------------------------------------------------------- group hyperparameters
BAD_GROUP_OPTIONS = [
    pytest.param("lr", -1e-3, "lr: -0.001", id="lr-negative"),
    pytest.param("lr", float("nan"), "lr: nan", id="lr-nan"),
    pytest.param("lr", float("inf"), "lr: inf", id="lr-inf"),
    pytest.param("weight_decay", -0.5, "weight_decay: -0.5", id="wd-negative"),
    pytest.param("weight_decay", float("inf"), "weight_decay: inf", id="wd-inf"),
    pytest.param("eps", 0.0, "eps: 0.0", id="eps-zero"),
    pytest.param("eps", -0.1, "eps: -0.1", id="eps-negative"),
    pytest.param("eps", float("nan"), "eps: nan", id="eps-nan"),
    pytest.param("eps", float("inf"), "eps: inf", id="eps-inf"),
    pytest.param("momentum", -0.25, "momentum: -0.25", id="momentum-negative"),
    pytest.param("momentum", 1.5, "momentum: 1.5", id="momentum-above-1"),
    pytest.param("momentum", float("nan"), "momentum: nan", id="momentum-nan"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_GROUP_OPTIONS)
def test_invalid_hyperparameter_rejected_at_construction(backend, name, value, message):
    """A bad lr/weight_decay/eps/momentum raises ValueError naming it and its value."""
    with pytest.raises(ValueError, match=re.escape(message)):
        CoCD(params(), **{name: value}, backend=backend)


@pytest.mark.parametrize(("name", "value", "message"), BAD_GROUP_OPTIONS)
def test_invalid_hyperparameter_in_group_dict_rejected(backend, name, value, message):
    """The same check applies to a value given in a param-group dict."""
    groups = [{"params": params()}, {"params": params(), name: value}]
    with pytest.raises(ValueError, match=re.escape(message)):
        CoCD(groups, backend=backend)


@pytest.mark.parametrize(("name", "value", "message"), BAD_GROUP_OPTIONS)
def test_invalid_hyperparameter_set_between_steps_rejected_at_step(backend, name, value, message):
    """A bad value written into param_groups raises at the next step and changes nothing."""
    ps = params()
    opt = CoCD(ps, compute_budget=2, memory_budget=3, backend=backend)
    opt.step(quad_closure(ps))
    snap = snapshot(opt, ps)
    opt.param_groups[0][name] = value
    calls = []
    with pytest.raises(ValueError, match=re.escape(message)):
        opt.step(lambda: calls.append(1) or quad_closure(ps)())
    assert calls == []
    assert_same_state(opt, ps, snap)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("lr", 0.0, id="lr-zero"),
        pytest.param("weight_decay", 0.0, id="wd-zero"),
        pytest.param("momentum", 0.0, id="momentum-zero"),
        pytest.param("momentum", 1.0, id="momentum-one"),
        pytest.param("eps", 1e-30, id="eps-tiny"),
    ],
)
def test_boundary_hyperparameters_accepted(backend, name, value):
    """The ends of the valid ranges are accepted and stored in the param group."""
    opt = CoCD(params(), **{name: value}, backend=backend)
    assert opt.param_groups[0][name] == value


# ---------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("name", ["compute_budget", "memory_budget"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(0, id="zero"),
        pytest.param(-2, id="negative"),
        pytest.param(2.0, id="float"),
        pytest.param(True, id="bool"),
        pytest.param("3", id="string"),
    ],
)
def test_invalid_budget(backend, name, value):
    """Budgets must be ints >= 1 (bool is not an int here): ValueError naming the value."""
    with pytest.raises(ValueError, match=re.escape(f"{name}: {value!r}")):
        CoCD(params(), **{name: value}, backend=backend)


def test_memory_budget_smaller_than_compute_budget(backend):
    """m < B raises ValueError naming both."""
    with pytest.raises(ValueError, match=r"memory_budget: 2 .*compute_budget 3"):
        CoCD(params(), compute_budget=3, memory_budget=2, backend=backend)


def test_memory_budget_compared_with_clamped_compute_budget(backend):
    """B > n is clamped to n before the m >= B check."""
    with pytest.raises(ValueError, match=r"memory_budget: 3 .*compute_budget 5"):
        CoCD(params(5), compute_budget=50, memory_budget=3, backend=backend)
    opt = CoCD(params(5), compute_budget=50, memory_budget=5, backend=backend)
    assert (opt.compute_budget, opt.memory_budget) == (5, 5)


@pytest.mark.parametrize(
    ("budget", "memory", "expected"),
    [
        pytest.param(2, None, (2, 5), id="default-memory-is-n"),
        pytest.param(9, None, (5, 5), id="compute-clamped"),
        pytest.param(2, 40, (2, 5), id="memory-clamped"),
        pytest.param(2, 3, (2, 3), id="fifo"),
        pytest.param(3, 3, (3, 3), id="fifo-m-equals-B"),
    ],
)
def test_budgets_clamped_to_n_and_dense_iff_m_is_n(backend, budget, memory, expected):
    """B and m are clamped to n; the buffer is dense (one entry per coordinate) iff m == n."""
    opt = CoCD(params(5), compute_budget=budget, memory_budget=memory, backend=backend)
    assert (opt.compute_budget, opt.memory_budget) == expected
    m = expected[1]
    assert opt._state.v.shape == (m,)
    if m == 5:
        assert opt._state.coords is None
    else:
        assert opt._state.coords.tolist() == list(range(m))


def test_budgets_accept_integer_like_values(backend):
    """Any object with __index__ (numpy and torch integers) is an int budget."""
    opt = CoCD(
        params(6), compute_budget=np.int64(2), memory_budget=torch.tensor(4), backend=backend
    )
    assert (opt.compute_budget, opt.memory_budget) == (2, 4)


# ----------------------------------------------------------------- central_difference
@pytest.mark.parametrize("value", [1, 0, "yes", None], ids=["int1", "int0", "string", "none"])
def test_central_difference_must_be_bool(backend, value):
    """A non-bool central_difference is a TypeError naming the value."""
    with pytest.raises(
        TypeError, match=re.escape(f"central_difference must be a bool, got {value!r}")
    ):
        CoCD(params(), central_difference=value, backend=backend)


def test_nonfinite_and_backend_options_validated():
    """Unknown nonfinite or backend values raise ValueError naming them."""
    with pytest.raises(ValueError, match="nonfinite: 'ignore'"):
        CoCD(params(), nonfinite="ignore")
    with pytest.raises(ValueError, match="backend: 'cuda'"):
        CoCD(params(), backend="cuda")


def test_backend_attribute_names_the_engine(backend):
    """opt.backend is the engine that runs."""
    opt = CoCD(params(), backend=backend)
    assert opt.backend == backend
    assert opt._engine.name == backend


# -------------------------------------------------------------------------- init_grad
@pytest.mark.parametrize(
    ("memory", "count"),
    [
        pytest.param(None, 4, id="dense-too-few"),
        pytest.param(None, 6, id="dense-too-many"),
        pytest.param(3, 5, id="fifo-given-n-not-m"),
        pytest.param(3, 2, id="fifo-too-few"),
    ],
)
def test_init_grad_wrong_count(backend, memory, count):
    """init_grad must have exactly m elements; the error names the expected count."""
    m = 5 if memory is None else memory
    with pytest.raises(ValueError, match=f"init_grad has {count} elements; expected exactly {m}"):
        CoCD(params(5), memory_budget=memory, init_grad=torch.zeros(count), backend=backend)


@pytest.mark.parametrize(
    "init",
    [
        pytest.param(torch.zeros(5, dtype=torch.int64), id="int64"),
        pytest.param(torch.zeros(5, dtype=torch.bool), id="bool"),
        pytest.param([0.0] * 5, id="list"),
    ],
)
def test_init_grad_must_be_floating_tensor(backend, init):
    """A non-floating init_grad is a ValueError that names the expected count."""
    with pytest.raises(ValueError, match="floating-point tensor with 5 elements"):
        CoCD(params(5), init_grad=init, backend=backend)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_init_grad_must_be_finite(backend, bad):
    """NaN or infinity in init_grad is rejected."""
    init = torch.zeros(5)
    init[2] = bad
    with pytest.raises(ValueError, match="init_grad contains NaN or infinity"):
        CoCD(params(5), init_grad=init, backend=backend)


def test_init_grad_is_copied_and_read_flat(backend, device):
    """init_grad of any shape is read flat, cast to the buffer dtype and never aliased."""
    x = torch.randn(6, dtype=torch.float32, device=device)
    init = torch.arange(6, dtype=F64).reshape(2, 3) + 0.5
    opt = CoCD([x], lr=0.0, init_grad=init, backend=backend)
    init.fill_(-7.0)  # the caller's tensor changes: the buffer must not
    v = opt._state.v
    assert v.dtype == torch.float32
    assert v.device == x.device
    assert v.tolist() == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    opt.step(quad_closure([x]))
    assert init.eq(-7.0).all()


# ------------------------------------------------------------------------- parameters
def test_empty_parameter_list():
    """No parameters: ValueError."""
    with pytest.raises(ValueError, match="empty parameter list"):
        CoCD([])


def test_parameters_without_elements():
    """Parameters with no elements at all leave nothing to optimize: ValueError."""
    with pytest.raises(ValueError, match="no elements"):
        CoCD([torch.zeros(0), torch.zeros(3, 0)])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64], ids=str)
def test_non_floating_parameter(dtype):
    """Integer, bool and complex tensors are rejected, naming the offender's dtype."""
    bad = torch.zeros(3, dtype=dtype)
    with pytest.raises(
        ValueError, match=re.escape(f"param group 0, parameter 1 has dtype {dtype}")
    ):
        CoCD([torch.zeros(2), bad])


@pytest.mark.filterwarnings("ignore:optimizer contains a parameter group with duplicate parameters")
def test_duplicate_parameter_in_one_group():
    """The same tensor twice in a group: ValueError."""
    p = torch.zeros(3)
    with pytest.raises(ValueError, match="parameter 1 appears twice"):
        CoCD([p, p])


def test_duplicate_parameter_across_groups():
    """The same tensor in two groups: ValueError."""
    p = torch.zeros(3)
    with pytest.raises(ValueError, match="more than one parameter group"):
        CoCD([{"params": [p]}, {"params": [p]}])


def test_add_param_group_after_construction(backend):
    """Adding a group later is a RuntimeError and leaves the optimizer as it was."""
    opt = CoCD(params(), backend=backend)
    with pytest.raises(RuntimeError, match="add_param_group"):
        opt.add_param_group({"params": params()})
    assert len(opt.param_groups) == 1
    assert opt._state.n == 5


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("compute_budget", 2),
        ("memory_budget", 3),
        ("central_difference", False),
        ("init_grad", None),
        ("nonfinite", "zero"),
        ("backend", "reference"),
    ],
    ids=lambda v: str(v),
)
def test_optimizer_wide_option_in_param_group(key, value):
    """Optimizer-wide options inside a param-group dict raise ValueError naming the option."""
    with pytest.raises(ValueError, match=f"{key} is an optimizer-wide option"):
        CoCD([{"params": params()}, {"params": params(), key: value}])


def test_group_defaults_are_stored_per_group(backend):
    """Constructor hyperparameters become each group's defaults; a group may override them."""
    opt = CoCD(
        [{"params": params()}, {"params": params(), "lr": 0.5, "momentum": 0.0}],
        lr=0.2,
        weight_decay=0.01,
        eps=0.05,
        momentum=0.9,
        backend=backend,
    )
    keys = ("lr", "weight_decay", "eps", "momentum")
    assert [tuple(g[k] for k in keys) for g in opt.param_groups] == [
        (0.2, 0.01, 0.05, 0.9),
        (0.5, 0.01, 0.05, 0.0),
    ]


# ---------------------------------------------------------------------------- closure
def test_closure_required(backend):
    """step() without a closure is a TypeError."""
    opt = CoCD(params(), backend=backend)
    with pytest.raises(TypeError, match="closure"):
        opt.step()
    with pytest.raises(TypeError, match="closure"):
        opt.step(None)
    assert opt.step_count == 0


@pytest.mark.parametrize("shape", [(2,), (2, 3), (0,)], ids=["vector", "matrix", "empty"])
@pytest.mark.parametrize("central", [True, False], ids=["central", "forward"])
def test_closure_returning_non_scalar(backend, shape, central):
    """A non-scalar loss tensor is a ValueError naming its shape; nothing changes."""
    ps = params()
    opt = CoCD(ps, compute_budget=2, central_difference=central, backend=backend)
    opt.step(quad_closure(ps))
    snap = snapshot(opt, ps)
    with pytest.raises(ValueError, match=shape_pattern(shape)):
        opt.step(lambda: torch.ones(shape))
    assert_same_state(opt, ps, snap)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("1.0", id="string"),
        pytest.param(None, id="none"),
        pytest.param([1.0], id="list"),
    ],
)
def test_closure_returning_non_number(backend, value):
    """A loss that is neither a tensor nor a Python number is a TypeError naming its type."""
    ps = params()
    opt = CoCD(ps, backend=backend)
    snap = snapshot(opt, ps)
    with pytest.raises(TypeError, match=type(value).__name__):
        opt.step(lambda: value)
    assert_same_state(opt, ps, snap)

"""The cocd_cuda ops on their own: schemas and fakes (opcheck), torch.compile, the ABI
the extension exports, and param groups beyond the old cap of 64."""

import dataclasses

import pytest
import torch

from cocd_cuda import CoCD, backends, ops, reference
from cocd_cuda.reference import perturbed
from cocd_cuda.validation import GroupHyper

pytestmark = pytest.mark.skipif(
    "native" not in backends.available(), reason="the native extension is not built"
)

NAMES = ["plan_", "advance_", "finite_difference_", "dense_update_", "fifo_update_"]
# What each op writes: the positions of its mutable arguments (a list: every tensor).
WRITES = {
    "plan_": [0],
    "advance_": [0, 1],
    "finite_difference_": [0, 1, 2],
    "dense_update_": [0, 1],
    "fifo_update_": [0, 1, 2],
}


def make_params(sizes, dtype, device, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(device, dtype) for s in sizes]


def hyper(lr=0.1, weight_decay=0.01, eps=0.1, momentum=0.9):
    return GroupHyper(lr=lr, weight_decay=weight_decay, eps=eps, momentum=momentum)


class Problem:
    """The inputs of every op for a small problem: n = 17 in two float32 tensors, B = 4,
    the block pointer c = 2 and the FIFO ring head 1, a ring of m = 6."""

    def __init__(self, device, central=True):
        self.params = make_params([(3, 4), (5,)], torch.float32, device)
        opt = CoCD(self.params, compute_budget=4, backend="native")
        self.n, B, m = opt._engine.layout.n, 4, 6
        self.table = ops.param_table(opt._engine.layout)
        self.hyper = ops.hyper_table([hyper()], device)
        self.counters = torch.tensor([2, 1, 0], device=device)
        self.slots = torch.empty((B, 6), dtype=torch.int64, device=device)
        ops_ = torch.ops.cocd_cuda
        ops_.plan_(self.slots, self.table, self.hyper, self.counters, self.n, central)
        E = 2 * B if central else B + 1
        self.losses = torch.linspace(1.0, 2.0, E, dtype=torch.float64, device=device)
        self.g = torch.linspace(-1, 1, B, device=device)
        self.buffer = torch.linspace(0.5, -0.5, self.n, device=device)
        self.coords = torch.tensor([9, 3, 10, 11, 12, 1], device=device)  # distinct
        self.vals = torch.linspace(2.0, 3.0, m, device=device)
        self.central = central

    def samples(self):
        device = self.losses.device
        return {
            "plan_": (self.slots.clone(), self.table, self.hyper, self.counters, self.n, True),
            # Stores evaluation 0's loss and moves slot 0's coordinate from x+eps to x-eps.
            "advance_": (
                self.losses.clone(),
                self.params,
                self.slots,
                self.table,
                torch.tensor(3.0, device=device),
                0,
                1,
                True,
            ),
            "finite_difference_": (
                torch.zeros(4, device=device),
                torch.zeros((), device=device),
                torch.zeros(1, dtype=torch.int32, device=device),
                self.losses.index_fill(0, torch.tensor([0], device=device), float("inf")),
                self.slots,
                True,
                False,
            ),
            "dense_update_": (
                self.params,
                self.buffer.clone(),
                self.g,
                self.table,
                self.hyper,
                self.counters,
                self.n,
            ),
            "fifo_update_": (
                self.params,
                self.coords.clone(),
                self.vals.clone(),
                self.g,
                self.table,
                self.hyper,
                self.counters,
                self.n,
            ),
        }


def _tensors(arg):
    return arg if isinstance(arg, list) else [arg] if isinstance(arg, torch.Tensor) else []


@pytest.mark.parametrize("op", NAMES)
def test_each_op_writes_exactly_what_its_schema_declares(op, device):
    """Every declared-mutable tensor changes (and its version counter moves); nothing
    else does. Parameters included: advance_ perturbs one through the table."""
    problem = Problem(device)
    if op == "plan_":
        problem.slots.zero_()
    args = problem.samples()[op]
    before = [[t.clone() for t in _tensors(a)] for a in args]
    versions = [[t._version for t in _tensors(a)] for a in args]
    getattr(torch.ops.cocd_cuda, op)(*args)
    schema = getattr(torch.ops.cocd_cuda, op).default._schema
    declared = [i for i, a in enumerate(schema.arguments) if a.is_write]
    assert declared == WRITES[op]
    for i, arg in enumerate(args):
        changed = [not torch.equal(t, b) for t, b in zip(_tensors(arg), before[i], strict=True)]
        bumped = [t._version != v for t, v in zip(_tensors(arg), versions[i], strict=True)]
        if i in declared:
            assert any(changed), (op, i)
            assert all(b for b, c in zip(bumped, changed, strict=True) if c), (op, i)
        else:
            assert not any(changed), (op, i)
    if op == "advance_":  # slot 0 is coordinate c = 2: element 2 of the first tensor
        (p0, p1), (b0, b1) = problem.params, before[1]
        assert p0.reshape(-1)[2] == perturbed(b0.reshape(-1)[2], -0.1)
        assert torch.equal(p1, b1)
        if device == "cpu":  # on CUDA the written parameter is known only on the device
            assert p1._version == versions[1][1]


@pytest.mark.parametrize("op", NAMES)
def test_opcheck(op, device):
    """Schema, fake tensor and AOT-dispatch checks of each op, on inputs it mutates."""
    problem = Problem(device)
    torch.library.opcheck(getattr(torch.ops.cocd_cuda, op).default, problem.samples()[op])


def test_every_op_has_a_fake_and_a_cpu_kernel():
    for name in NAMES:
        qualname = f"cocd_cuda::{name}"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "CPU"), name
        assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "Meta"), name


def test_fakes_reject_what_the_kernels_reject():
    """The fakes (meta kernels) check shapes and dtypes as the kernels do."""
    args = Problem("cpu").samples()["dense_update_"]
    on_meta = torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.to("meta"), args)
    torch.ops.cocd_cuda.dense_update_(*on_meta)  # the valid inputs pass
    for index, bad in ((4, torch.zeros((1, 3), dtype=torch.float64)), (2, torch.zeros(4).double())):
        wrong = list(args)
        wrong[index] = bad
        with pytest.raises(ValueError):
            torch.ops.cocd_cuda.dense_update_(*wrong)
        wrong[index] = bad.to("meta")
        with pytest.raises(RuntimeError):
            torch.ops.cocd_cuda.dense_update_(
                *torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.to("meta"), wrong)
            )


def _one_step(params, slots, table, hyper_t, counters, losses, g, loss, bad, buffer, n):
    """A whole central-difference CoCD step through the ops (a plain closure)."""
    lib = torch.ops.cocd_cuda
    lib.plan_(slots, table, hyper_t, counters, n, True)
    E = losses.numel()
    lib.advance_(losses, params, slots, table, None, -1, 0, True)
    for k in range(E):
        value = sum((torch.sin(p.double()) * (i + 1)).sum() for i, p in enumerate(params))
        lib.advance_(losses, params, slots, table, value, k, k + 1, True)
    lib.finite_difference_(g, loss, bad, losses, slots, True, False)
    lib.dense_update_(params, buffer, g, table, hyper_t, counters, n)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_a_compiled_step_equals_the_eager_one_bit_for_bit(backend):
    """torch.compile of plan_, advance_, finite_difference_ and dense_update_ (aot_eager
    functionalizes the mutations; inductor is too slow to compile here)."""
    results = []
    for compiled in (False, True):
        torch._dynamo.reset()
        params = make_params([(3, 4), (5,)], torch.float32, "cpu")
        opt = CoCD(params, compute_budget=4, backend="native")
        n = opt._engine.layout.n
        table = ops.param_table(opt._engine.layout)
        state = dict(
            slots=torch.empty((4, 6), dtype=torch.int64),
            hyper_t=ops.hyper_table([hyper()]),
            counters=torch.tensor([15, 0, 0]),  # the block wraps around n = 17
            losses=torch.empty(8, dtype=torch.float64),
            g=torch.empty(4),
            loss=torch.empty(()),
            bad=torch.zeros(1, dtype=torch.int32),
            buffer=torch.linspace(0.5, -0.5, n),
        )
        fn = torch.compile(_one_step, backend=backend, fullgraph=True) if compiled else _one_step
        fn(params, table=table, n=n, **state)
        results.append([*params, *state.values()])
    for eager, compiled in zip(*results, strict=True):
        assert torch.equal(eager, compiled)
    assert not torch.equal(results[0][-1], torch.linspace(0.5, -0.5, 17))  # it did update


def test_python_reads_the_abi_the_extension_exports():
    names, values = torch.ops.cocd_cuda.abi()
    abi = dict(zip(names, values, strict=True))
    assert abi == ops.ABI
    assert abi["sum_lanes"] == reference.SUM_LANES  # the spec's summation order
    assert tuple(f.name for f in dataclasses.fields(GroupHyper)) == ops.HYPER_FIELDS
    assert abi["param_row"] == len(ops.PARAM_FIELDS) and abi["hyper_row"] == len(ops.HYPER_FIELDS)
    assert abi["slot_row"] == ops.SLOT_ROW
    # The rows Python writes are the rows the kernels read: plan_ perturbs each group's
    # coordinates by that group's eps, and the slots hold each parameter's dtype bits.
    params = [
        torch.tensor([1.0, 2.0], dtype=torch.float16),
        torch.tensor([3.0], dtype=torch.bfloat16),
        torch.tensor([4.0, 5.0], dtype=torch.float64),
    ]
    opt = CoCD([dict(params=params[:2]), dict(params=params[2:], eps=0.25)], eps=0.5)
    table = ops.param_table(opt._engine.layout)
    hyper_t = ops.hyper_table(opt._hyperparameters())
    slots = torch.empty((5, ops.SLOT_ROW), dtype=torch.int64)
    torch.ops.cocd_cuda.plan_(slots, table, hyper_t, torch.tensor([0, 0, 0]), 5, True)
    h = slots[:, 5].clone().view(torch.float64)
    assert h.tolist() == [1.0, 1.0, 1.0, 0.5, 0.5]  # 2 eps, exact in every dtype here
    assert slots[:, 0].tolist() == [0, 0, 1, 2, 2] and slots[:, 1].tolist() == [0, 1, 0, 0, 1]
    saved = [params[0].view(torch.int16).tolist(), params[1].view(torch.int16).tolist()]
    assert slots[:3, 2].tolist() == [b & 0xFFFF for b in saved[0] + saved[1]]


def test_hyper_table_rows_follow_the_groups():
    rows = ops.hyper_table([hyper(0.1, 0.2, 0.3, 0.4), hyper(1.0, 2.0, 3.0, 4.0)])
    assert rows.dtype == torch.float64 and rows.shape == (2, 4)
    column = {f: ops.ABI[f"hyper_row.{f}"] for f in ops.HYPER_FIELDS}
    assert rows[:, column["lr"]].tolist() == [0.1, 1.0]
    assert rows[:, column["eps"]].tolist() == [0.3, 3.0]
    out = torch.full((2, 4), -1.0, dtype=torch.float64)
    assert ops.hyper_table([hyper(), hyper()], out=out) is out
    assert out[1, column["momentum"]] == 0.9
    with pytest.raises(RuntimeError, match="shape"):
        ops.hyper_table([hyper()], out=out)


@pytest.mark.parametrize("mode", ["dense", "fifo"])
def test_more_than_64_param_groups_run_natively_and_match_the_reference(mode, device):
    """70 groups of mixed dtypes, each its own lr, eps, momentum and weight decay,
    changed between steps: the native engine equals the reference bit for bit."""
    G = 70
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    runs = []
    for backend in ("reference", "native"):
        params = [make_params([(k % 3 + 1,)], dtypes[k % 4], device, seed=k)[0] for k in range(G)]
        groups = [
            dict(params=[p], lr=0.01 * (k % 5 + 1), eps=0.01 + 0.002 * k,
                 momentum=[1.0, 0.9, 0.5][k % 3], weight_decay=[0.0, 0.01][k % 2])
            for k, p in enumerate(params)
        ]  # fmt: skip
        extra = dict(memory_budget=60) if mode == "fifo" else {}
        opt = CoCD(groups, compute_budget=25, backend=backend, **extra)
        assert opt.backend == backend
        runs.append((params, opt))

    def f(params):
        return lambda: sum((torch.cos(p.double()) * (k + 1)).sum() for k, p in enumerate(params))

    for step in range(8):
        if step == 4:  # a schedule: every group's lr halves
            for _, opt in runs:
                for group in opt.param_groups:
                    group["lr"] /= 2
        losses = [opt.step(f(params)) for params, opt in runs]
        assert torch.equal(losses[0], losses[1])
        (p_ref, o_ref), (p_nat, o_nat) = runs
        assert all(torch.equal(a, b) for a, b in zip(p_ref, p_nat, strict=True))
        assert torch.equal(o_ref._state.v, o_nat._state.v)

"""CoCD over torch.distributed (gloo, CPU): coordinate- and data-parallel runs."""

import os
import tempfile
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from cocd_cuda import CoCD, ModelObjective, backends

# (name, options) run by every rank and by the single process; 7 steps each.
CONFIGS = [
    ("dense-central", dict(compute_budget=5)),
    ("dense-forward", dict(compute_budget=5, central_difference=False)),
    ("fifo-central", dict(compute_budget=4, memory_budget=9, momentum=0.9)),
    ("fifo-forward", dict(compute_budget=3, memory_budget=7, central_difference=False)),
]
STEPS = 7


def make_params():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in [(3, 4), (5,), ()]]


def objective(params, rows=slice(None)):
    """A smooth, non-separable loss; ``rows`` selects a shard of its 8 data rows."""
    data = torch.linspace(-1, 1, 8, dtype=torch.float64)[rows]

    def f():
        flat = torch.cat([p.reshape(-1) for p in params])
        w = torch.linspace(0.5, 1.5, flat.numel(), dtype=torch.float64)
        per_row = (w * torch.sin(flat[None, :] + data[:, None])).sum(1) + 0.1 * flat.sum() ** 2
        return per_row.mean()

    return f


def mlp_task():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randn(6, 2, dtype=torch.float64)
    return model, ModelObjective(model, nn.MSELoss(), x, y, strategy="layered")


def run_single(options, steps, backend):
    params = make_params()
    opt = CoCD(params, lr=0.05, eps=0.01, backend=backend, **options)
    f = objective(params)
    for _ in range(steps):
        opt.step(f)
    return params, opt


def snapshot(params, opt):
    st = opt.state_dict()["state"]
    return [p.clone() for p in params], st["buffer"], st["coords"], (st["c"], st["t"], st["head"])


def _worker(rank, world, store, out, backend, mode, task):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    group = dist.group.WORLD
    results = {}
    try:
        if task == "trajectories":
            for name, options in CONFIGS:
                params = make_params()
                if rank > 0:  # the first step must broadcast rank 0's parameters
                    for p in params:
                        p.add_(1.0)
                opt = CoCD(params, lr=0.05, eps=0.01, backend=backend, process_group=group,
                           parallel=mode, **options)  # fmt: skip
                rows = slice(rank * 8 // world, (rank + 1) * 8 // world)
                g = objective(params, rows if mode == "data" else slice(None))
                calls = [0]

                def f(g=g, calls=calls):
                    calls[0] += 1
                    return g()

                for _ in range(STEPS):
                    opt.step(f)
                results[name] = snapshot(params, opt)
                results[name + "-calls"] = calls[0] / STEPS
            model, obj = mlp_task()
            opt = CoCD(model.parameters(), lr=0.1, compute_budget=7, backend=backend,
                       process_group=group, parallel="coordinate")  # fmt: skip
            for _ in range(STEPS):
                opt.step(obj)
            results["objective"] = [p.clone() for p in model.parameters()]
        elif task == "fault":
            params = make_params()
            opt = CoCD(params, lr=0.05, compute_budget=4, backend=backend, process_group=group)
            f = objective(params)
            opt.step(f)
            before = snapshot(params, opt)
            calls = [0]

            def flaky():
                calls[0] += 1
                if rank == 1 and calls[0] == 2:
                    raise KeyError("rank 1 closure failure")
                return f()

            try:
                opt.step(flaky)
                results["error"] = None
            except Exception as exc:  # the test inspects it
                results["error"] = f"{type(exc).__name__}: {exc}"
            results["unchanged"] = before
            results["after"] = snapshot(params, opt)
            opt.step(f)  # every rank carries on together
            results["next"] = snapshot(params, opt)
        elif task == "resume":
            state = torch.load(os.path.join(os.path.dirname(store), "single.pt"))
            params = state["params"]
            opt = CoCD(params, lr=0.05, eps=0.01, backend=backend, process_group=group,
                       **CONFIGS[2][1])  # fmt: skip
            opt.load_state_dict(state["opt"])
            f = objective(params)
            for _ in range(3):
                opt.step(f)
            results["resumed"] = snapshot(params, opt)
            if rank == 0:
                params2 = [p.clone() for p in params]
                results["state"] = opt.state_dict()
                results["params"] = params2
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    except BaseException:
        traceback.print_exc()
        os._exit(1)  # mp.spawn reports it and stops the other ranks
    # Leave together, and skip interpreter teardown: gloo's background threads sometimes
    # abort ("terminate called without an active exception") when their C++ destructors
    # run at exit, after all the work is done and saved.
    dist.barrier()
    os._exit(0)


def spawn(world, backend, mode, task, prepare=None):
    with tempfile.TemporaryDirectory() as tmp:
        if prepare is not None:
            prepare(tmp)
        mp.spawn(_worker, args=(world, os.path.join(tmp, "store"), tmp, backend, mode, task),
                 nprocs=world, join=True)  # fmt: skip
        return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world)]


def assert_identical(a, b):
    (pa, va, ca, ia), (pb, vb, cb, ib) = a, b
    assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert torch.equal(va, vb)
    assert (ca is None and cb is None) or torch.equal(ca, cb)
    assert ia == ib


@pytest.fixture(params=backends.available())
def dist_backend(request):
    torch.set_num_threads(1)
    return request.param


@pytest.mark.parametrize("world", [2, 3])
def test_coordinate_parallel_equals_single_process_bit_for_bit(world, dist_backend):
    ranks = spawn(world, dist_backend, "coordinate", "trajectories")
    # Each rank evaluates only its contiguous share of the block (rank 0 also f(x)).
    for r, res in enumerate(ranks):
        share = (r + 1) * 5 // world - r * 5 // world
        assert res["dense-central-calls"] == 2 * share
        assert res["dense-forward-calls"] == share + (r == 0)
    for name, options in CONFIGS:
        expected = snapshot(*run_single(options, STEPS, dist_backend))
        for r in ranks:
            assert_identical(r[name], expected)
    model, obj = mlp_task()
    opt = CoCD(model.parameters(), lr=0.1, compute_budget=7, backend=dist_backend)
    for _ in range(STEPS):
        opt.step(obj)
    for r in ranks:
        assert all(
            torch.equal(a, b) for a, b in zip(r["objective"], model.parameters(), strict=True)
        )


def test_data_parallel_equals_single_process_within_rounding(dist_backend):
    ranks = spawn(2, dist_backend, "data", "trajectories")
    assert [r["dense-central-calls"] for r in ranks] == [10, 10]  # all 2B points, own shard
    for name, options in CONFIGS:
        expected = snapshot(*run_single(options, STEPS, dist_backend))
        assert_identical(ranks[0][name], ranks[1][name])  # ranks agree bit for bit
        for got, want in zip(ranks[0][name][0], expected[0], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_rank_that_raises_makes_every_rank_raise_and_change_nothing(dist_backend):
    ranks = spawn(2, dist_backend, "coordinate", "fault")
    assert ranks[1]["error"] == "KeyError: 'rank 1 closure failure'"
    assert ranks[0]["error"].startswith("RuntimeError: CoCD: the closure raised on 1 other")
    for r in ranks:
        assert_identical(r["after"], r["unchanged"])
    assert_identical(ranks[0]["next"], ranks[1]["next"])


def test_state_dict_moves_between_single_process_and_ranks(dist_backend):
    options = CONFIGS[2][1]

    def prepare(tmp):
        params, opt = run_single(options, 3, dist_backend)
        torch.save({"params": params, "opt": opt.state_dict()}, os.path.join(tmp, "single.pt"))

    ranks = spawn(2, dist_backend, "coordinate", "resume", prepare)
    expected = snapshot(*run_single(options, 6, dist_backend))
    for r in ranks:
        assert_identical(r["resumed"], expected)
    # ...and rank 0's state resumes a single-process run.
    params = ranks[0]["params"]
    opt = CoCD(params, lr=0.05, eps=0.01, backend=dist_backend, **options)
    opt.load_state_dict(ranks[0]["state"])
    f = objective(params)
    for _ in range(2):
        opt.step(f)
    assert_identical(snapshot(params, opt), snapshot(*run_single(options, 8, dist_backend)))


def test_process_group_requires_initialised_distributed():
    with pytest.raises(RuntimeError, match="init_process_group"):
        CoCD([torch.zeros(3)], process_group=object())


def _teardown_worker(rank, world, folder, rounds):
    """The README's ending, repeated: steps, barrier, destroy_process_group, normal exit."""
    torch.set_num_threads(1)
    finals = []
    for k in range(rounds):
        store = os.path.join(folder, f"store{k}")
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
        params = make_params()
        opt = CoCD(params, lr=0.05, compute_budget=4, process_group=dist.group.WORLD)
        f = objective(params)
        for _ in range(k):  # round 0 ends right after construction's broadcast
            opt.step(f)
        dist.barrier()  # every rank is past CoCD's last collective before any tears down
        dist.destroy_process_group()
        assert not dist.is_initialized()
        finals.append(torch.cat([p.reshape(-1) for p in params]))
    torch.save(finals, os.path.join(folder, f"teardown{rank}.pt"))
    # no os._exit: the process ends through the interpreter's own teardown


def test_the_documented_teardown_ends_every_rank_cleanly():
    rounds = 3
    with tempfile.TemporaryDirectory() as tmp:
        # mp.spawn raises if a rank exits with a non-zero code or a signal (SIGABRT)
        mp.spawn(_teardown_worker, args=(2, tmp, rounds), nprocs=2, join=True)
        finals = [torch.load(os.path.join(tmp, f"teardown{r}.pt")) for r in range(2)]
    for k in range(rounds):
        params = make_params()
        opt = CoCD(params, lr=0.05, compute_budget=4)
        for _ in range(k):
            opt.step(objective(params))
        expected = torch.cat([p.reshape(-1) for p in params])
        assert torch.equal(finals[0][k], expected) and torch.equal(finals[1][k], expected)

"""Benchmark every native op and a whole CoCD step against the reference and the floor.

    python -m benchmarks.kernels [--device cpu|cuda] [--sizes 1e4,1e5,1e6,8e6] [--out FILE]

The floor of a dense step (ALGORITHM.md, "Cost floor") is reading and writing x and v
once: 16 bytes per fp32 parameter, timed here as two tensor copies of n floats. All
candidates of one size are timed in interleaved rounds within one run, so their ratios
are comparable even on a noisy machine; the table reports medians. Writes JSON to
benchmarks/results/kernels-<device>.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from torch import nn

import cocd_cuda
from cocd_cuda.reference import GroupHyper

from .common import compare, machine, show_defaults, write_result


def reps_for(n: int, device: str) -> int:
    return max(3, min(2000, int((2e7 if device == "cuda" else 3e6) / max(n, 1))))


def dense_pass(n: int, device: str, rounds: int) -> dict:
    """Decay + descend over n fp32 parameters: floor, native, reference, torch SGD."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=gen).to(device)
    v = torch.randn(n, generator=gen).to(device)
    x2, v2 = torch.empty_like(x), torch.empty_like(v)
    g = torch.randn(64, generator=gen).to(device)
    ops = torch.ops.cocd_cuda
    counters = torch.tensor([7, 0, 0], device=device)  # block pointer c = 7
    hyper = [GroupHyper(lr=1e-6, weight_decay=0.0, eps=0.1, momentum=0.9)]
    hyper_t = cocd_cuda.ops.hyper_table(hyper, device)
    table = cocd_cuda.CoCD([x], compute_budget=64, backend="native")._engine.param_table()
    ref = cocd_cuda.CoCD([x.clone()], compute_budget=64, momentum=0.9, backend="reference")
    ref_g = g.clone()
    sgd_p = x.clone().requires_grad_()
    sgd_p.grad = v.clone()
    sgd = torch.optim.SGD([sgd_p], lr=1e-6, momentum=0.9)
    sgd.step()  # allocate its momentum buffer before timing

    def floor():
        x2.copy_(x)
        v2.copy_(v)

    cands = {
        "floor (2 copies)": floor,
        "native dense_update_": lambda: ops.dense_update_([x], v, g, table, hyper_t, counters, n),
        "reference decay+descend": lambda: ref._engine._commit(ref._state, ref_g, hyper),
        "torch SGD momentum": sgd.step,
    }
    t = compare(cands, device, reps_for(n, device), rounds)
    floor_t = t["floor (2 copies)"]
    return {
        "n": n,
        "seconds": t,
        "x_floor": {k: s / floor_t for k, s in t.items()},
        "floor_GBps": 16 * n / floor_t / 1e9,
        "native_GBps": 16 * n / t["native dense_update_"] / 1e9,
    }


def whole_step(n: int, device: str, rounds: int, B: int = 64) -> dict:
    """A full step with a trivial closure: the optimizer's own cost."""
    out = {}
    cands = {}
    zero = torch.zeros((), device=device)
    for backend in ("native", "reference"):
        p = torch.randn(n, device=device)
        opt = cocd_cuda.CoCD([p], compute_budget=B, momentum=0.9, backend=backend)
        opt.step(lambda: zero)  # builds tables
        cands[f"{backend} step (B={B})"] = lambda o=opt: o.step(lambda: zero)
    x, v = torch.randn(n, device=device), torch.randn(n, device=device)
    x2, v2 = torch.empty_like(x), torch.empty_like(v)
    cands["floor (2 copies)"] = lambda: (x2.copy_(x), v2.copy_(v))
    t = compare(cands, device, max(2, reps_for(n, device) // 4), rounds)
    out["seconds"] = t
    out["x_floor"] = {k: s / t["floor (2 copies)"] for k, s in t.items()}
    return out


def per_op(device: str, rounds: int, n: int = 1_000_000, B: int = 64, m: int = 4096) -> dict:
    """Each native op on its own, at n parameters, block B, FIFO ring m."""
    ops = torch.ops.cocd_cuda
    p = torch.randn(n, device=device)
    dense_opt = cocd_cuda.CoCD([p], compute_budget=B, backend="native")
    q = torch.randn(n, device=device)
    fifo_opt = cocd_cuda.CoCD([q], compute_budget=B, memory_budget=m, backend="native")
    dense, fifo = dense_opt._engine, fifo_opt._engine
    table, ftable = dense.param_table(), fifo.param_table()
    counters = torch.tensor([5, 0, 0], device=device)  # c = 5, head = 0
    hyper = cocd_cuda.ops.hyper_table(
        [GroupHyper(lr=1e-9, weight_decay=0.0, eps=0.1, momentum=0.9)], device
    )
    ops.plan_(dense._slots, table, hyper, counters, n, True)
    loss = torch.ones((), device=device)
    out_loss = torch.empty((), device=device)
    cands = {
        "plan_": lambda: ops.plan_(dense._slots, table, hyper, counters, n, True),
        "advance_ (one evaluation)": lambda: ops.advance_(
            dense._losses, [p], dense._slots, table, loss, 0, 1, True
        ),
        "finite_difference_": lambda: ops.finite_difference_(
            dense._g, out_loss, dense._bad, dense._losses, dense._slots, True, True
        ),
        "dense_update_": lambda: ops.dense_update_(
            [p], dense_opt._state.v, dense._g, table, hyper, counters, n
        ),
        f"fifo_update_ (m={m})": lambda: ops.fifo_update_(
            [q], fifo_opt._state.coords, fifo_opt._state.v, fifo._g, ftable, hyper, counters, n
        ),
    }
    restore = (dense._losses, [p], dense._slots, table, None, 0, 2 * B, True)
    ops.advance_(*restore)  # leave x restored
    t = compare(cands, device, 200, rounds)
    ops.advance_(*restore)
    return {"n": n, "B": B, "m": m, "seconds": t}


def mlp_overhead(device: str, rounds: int, B: int = 64) -> dict:
    """SARCOS-size MLP (21-64-64-64-64-7, batch 64): step time over its closures' time."""
    torch.manual_seed(0)

    def model():
        layers, width = [], [21, 64, 64, 64, 64, 7]
        for a, b in itertools.pairwise(width):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers[:-1]).to(device)

    x, y = torch.randn(64, 21, device=device), torch.randn(64, 7, device=device)
    loss_fn = nn.MSELoss()
    cands = {}
    # "native step" on CPU does the per-evaluation work in Python (numpy views); the
    # advance_ row is the op-per-evaluation path that CUDA runs, for comparison.
    for name, backend, host in (
        ("native step", "native", True),
        ("native step, advance_ per evaluation", "native", False),
        ("reference step", "reference", True),
    ):
        net = model()
        opt = cocd_cuda.CoCD(net.parameters(), lr=1e-4, compute_budget=B, backend=backend)
        if backend == "native":
            opt._engine.host_evaluation = host

        def closure(net=net):
            return loss_fn(net(x), y)

        opt.step(closure)
        cands[name] = lambda o=opt, c=closure: o.step(c)
    net = model()

    @torch.no_grad()
    def closures_only():
        for _ in range(2 * B):
            loss_fn(net(x), y)

    cands["closures alone (2B calls)"] = closures_only
    t = compare(cands, device, 10, rounds)
    base = t["closures alone (2B calls)"]
    return {
        "B": B,
        "n": sum(p.numel() for p in net.parameters()),
        "seconds": t,
        "overhead_vs_closures": {k: s / base - 1 for k, s in t.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="1e4,1e5,1e6,8e6")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--out", default=None, help="JSON file (default: a new ./cocd-results/ folder)"
    )
    show_defaults(parser)
    args = parser.parse_args()
    dev = args.device
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    result = {"machine": machine(dev), "dense_pass": [], "whole_step": []}

    print(
        f"# CoCD kernels on {dev} ({result['machine'].get('gpu', result['machine']['processor'])}"
        f", {result['machine']['threads']} threads), torch {torch.__version__}"
    )
    print("\n## Dense decay + descend, fp32 (time / floor; floor = two copies of n floats)")
    print(
        f"{'n':>10} {'floor us':>10} {'native':>8} {'reference':>10} {'SGD mom.':>9} "
        f"{'native GB/s':>12}"
    )
    for n in sizes:
        r = dense_pass(n, dev, args.rounds)
        result["dense_pass"].append(r)
        x = r["x_floor"]
        print(
            f"{n:>10} {r['seconds']['floor (2 copies)'] * 1e6:>10.1f} "
            f"{x['native dense_update_']:>8.2f} {x['reference decay+descend']:>10.2f} "
            f"{x['torch SGD momentum']:>9.2f} {r['native_GBps']:>12.1f}"
        )

    print("\n## Whole step, trivial closure, B=64 (time / floor)")
    print(f"{'n':>10} {'native':>8} {'reference':>10} {'native us':>10}")
    for n in sizes:
        r = whole_step(n, dev, args.rounds)
        r["n"] = n
        result["whole_step"].append(r)
        x = r["x_floor"]
        print(
            f"{n:>10} {x['native step (B=64)']:>8.2f} {x['reference step (B=64)']:>10.2f} "
            f"{r['seconds']['native step (B=64)'] * 1e6:>10.1f}"
        )

    r = per_op(dev, args.rounds)
    result["per_op"] = r
    print(f"\n## Each op (n={r['n']}, B={r['B']})")
    for k, s in r["seconds"].items():
        print(f"{k:>40} {s * 1e6:>10.2f} us")

    r = mlp_overhead(dev, args.rounds)
    result["mlp_overhead"] = r
    print(f"\n## SARCOS-size MLP 21-64-64-64-64-7 ({r['n']} parameters), batch 64, B={r['B']}")
    for k, s in r["seconds"].items():
        extra = r["overhead_vs_closures"][k] * 100
        print(f"{k:>30} {s * 1e3:>8.3f} ms  ({extra:+.1f}% vs closures)")

    write_result(result, args.out, f"kernels-{dev}.json")


if __name__ == "__main__":
    main()

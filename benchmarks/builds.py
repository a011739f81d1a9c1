"""Compare the CPU speed of two checkouts of cocd_cuda, side by side in one run.

    python -m benchmarks.builds --before PATH --after PATH [--rounds 5] [--out FILE]

Each checkout must have its extension built in place. A round runs one fresh process
per checkout (in alternating order, so drift on a shared machine hits both alike) that
imports cocd_cuda from that checkout and times: the dense update of 8M float32
parameters (the op alone), a CoCD step on a plain closure, a CoCD step on the
SARCOS-size MLP (21-64-64-64-64-7, batch 64) through ModelObjective, and one call of
advance_ (the op a CUDA step calls once per evaluation) on that MLP's 10 tensors. Each
process keeps the fastest of its --reps timings per case (the least disturbed on a
shared machine); the table reports each checkout's median of those over the rounds,
and after / before. One thread by default (--threads), so that other load on the
machine does not stall a parallel region.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = (
    "dense_update_ n=8M fp32",
    "plain-closure step",
    "SARCOS MLP ModelObjective step",
    "advance_ (10 tensors)",
)


def _child(reps: int, threads: int) -> dict[str, float]:
    """Seconds per call of each case, the fastest of `reps` timings, in this process."""
    import itertools

    import torch
    from torch import nn

    torch.set_num_threads(threads)

    import cocd_cuda
    from cocd_cuda.objective import ModelObjective

    torch.manual_seed(0)

    def median_time(fn, calls):
        fn()  # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - t0) / calls)
        return min(times)  # on a shared machine the fastest timing is the least disturbed

    out = {}
    # The dense update alone: the op as each build defines it.
    n, B = 8_000_000, 64
    x = torch.randn(n)

    def internals(opt):
        """(engine, buffer, parameter table) under either build's private names."""
        engine = opt._engine
        v = opt._state.v if hasattr(opt, "_state") else engine.v
        table = getattr(engine, "param_table", None) or engine._param_table
        return engine, v, table()

    engine, v, table = internals(cocd_cuda.CoCD([x], compute_budget=B, lr=1e-7, momentum=0.9))
    g, counters = torch.randn(B), torch.tensor([7, 0, 0])
    ops = torch.ops.cocd_cuda
    if "hyper" in str(ops.dense_update_.default._schema):
        from cocd_cuda.ops import hyper_table
        from cocd_cuda.validation import GroupHyper

        hyper = hyper_table([GroupHyper(lr=1e-7, weight_decay=0.0, eps=0.1, momentum=0.9)])

        def dense():
            ops.dense_update_([x], v, g, table, hyper, counters, n)
    else:

        def dense():
            ops.dense_update_([x], v, g, 0, counters, n, 1e-7, 0.0, 0.9)

    out[CASES[0]] = median_time(dense, 3)

    # A plain closure: a weighted quadratic of 10k parameters, B = 64.
    p = torch.randn(10_000)
    w, t = torch.rand(10_000), torch.randn(10_000)
    opt = cocd_cuda.CoCD([p], compute_budget=64, lr=1e-3, momentum=0.9)
    out[CASES[1]] = median_time(lambda: opt.step(lambda: (w * (p - t) ** 2).sum()), 3)

    # The SARCOS-size MLP through ModelObjective (its default strategy), B = 64.
    layers, width = [], [21, 64, 64, 64, 64, 7]
    for a, b in itertools.pairwise(width):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers[:-1])
    inputs, targets = torch.randn(64, 21), torch.randn(64, 7)
    objective = ModelObjective(net, nn.functional.mse_loss, inputs, targets)
    opt = cocd_cuda.CoCD(net.parameters(), compute_budget=64, lr=1e-4)
    out[CASES[2]] = median_time(lambda: opt.step(objective), 5)
    assert opt._engine.name == "native"

    # One advance_ call (the op CUDA runs once per evaluation) on the MLP's 10 tensors.
    engine, _, table = internals(opt)
    params, slots, losses = engine.layout.params, engine._slots, engine._losses
    if "params" in str(ops.advance_.default._schema):
        args = (losses, params, slots, table, None, 0, 1, True)
    else:
        args = (losses, slots, table, None, 0, 1, True)
    advance = ops.advance_.default
    with torch.no_grad():  # as the engine calls it, inside CoCD.step
        out[CASES[3]] = median_time(lambda: advance(*args), 2000)
        advance(*args[:-3], 0, engine._n_eval, True)  # restore the coordinate
    return out


def _run(checkout: str, reps: int, threads: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=checkout, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--reps", str(reps)]
    cmd += ["--threads", str(threads)]
    text = subprocess.run(cmd, env=env, cwd=checkout, check=True, capture_output=True, text=True)
    return json.loads(text.stdout.strip().splitlines()[-1])


def _commit(checkout: str) -> str:
    return subprocess.check_output(
        ["git", "-C", checkout, "rev-parse", "--short", "HEAD"], text=True
    ).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="checkout with its extension built (required)")
    parser.add_argument("--after", help="checkout with its extension built (required)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5, help="timings per case per process")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMP threads")
    parser.add_argument("--out", default=None, help="JSON file (default: print only)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.reps, args.threads)))
        return
    if not (args.before and args.after):
        parser.error("give both --before and --after (paths of checkouts)")
    import platform

    import torch

    builds = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    samples: dict[str, dict[str, list[float]]] = {b: {c: [] for c in CASES} for b in builds}
    for r in range(args.rounds):
        order = list(builds) if r % 2 == 0 else list(builds)[::-1]
        for name in order:
            for case, seconds in _run(builds[name], args.reps, args.threads).items():
                samples[name][case].append(seconds)
    medians = {b: {c: statistics.median(s) for c, s in cs.items()} for b, cs in samples.items()}
    print(f"# CPU, {args.threads} thread(s), torch {torch.__version__}; per case the median "
          f"over {args.rounds} alternating rounds of each process's fastest timing")  # fmt: skip
    print(f"{'case':>32} {'before ms':>10} {'after ms':>10} {'after/before':>13}")
    for case in CASES:
        a, b = medians["before"][case], medians["after"][case]
        print(f"{case:>32} {a * 1e3:>10.3f} {b * 1e3:>10.3f} {b / a:>13.3f}")
    if args.out:
        result = {
            "command": "python -m benchmarks.builds " + " ".join(sys.argv[1:]),
            "machine": {
                "processor": platform.processor() or platform.machine(),
                "threads": args.threads,
                "torch": torch.__version__,
            },
            "commits": {b: _commit(path) for b, path in builds.items()},
            "seconds_median": medians,
            "after_over_before": {c: medians["after"][c] / medians["before"][c] for c in CASES},
            "samples": samples,
        }
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

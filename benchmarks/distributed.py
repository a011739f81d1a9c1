"""Coordinate-parallel CoCD: step time with 1 and 2 processes, and bytes per step.

    python -m benchmarks.distributed [--worlds 1,2] [--out FILE]

Each process runs with one thread (gloo, CPU), so 2 processes use the 2 cores that 1
process with 1 thread leaves half idle. Per step, CoCD all-reduces 2B + 1 float64 values
(the losses and a status flag); a data-parallel SGD step all-reduces the n-float
gradient. Writes benchmarks/results/distributed-cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import cocd_cuda

from .common import machine, show_defaults, write_result
from .evaluation import task_inputs

CASES = [("sarcos", "sequential", 60), ("sarcos", "layered", 450), ("mnist", "layered", 81)]


def _worker(rank, world, store, out, task, strategy, steps):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    factory, loss_fn, x, y, B = task_inputs(task, "cpu")
    torch.manual_seed(0)
    model = factory().eval()
    obj = cocd_cuda.ModelObjective(model, loss_fn, x, y, strategy=strategy)
    group = dist.group.WORLD if world > 1 else None
    opt = cocd_cuda.CoCD(model.parameters(), lr=1e-4, compute_budget=B, momentum=0.99,
                         process_group=group)  # fmt: skip
    for _ in range(3):
        opt.step(obj)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step(obj)
    dist.barrier()
    seconds = (time.perf_counter() - t0) / steps
    if rank == 0:
        n = sum(p.numel() for p in model.parameters())
        with open(out, "w") as fh:
            json.dump({"seconds_per_step": seconds, "n": n, "B": B}, fh)
    dist.barrier()  # leave together, skipping gloo's teardown (see tests/test_distributed.py)
    os._exit(0)


def measure(world, task, strategy, steps) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        mp.spawn(_worker, args=(world, os.path.join(tmp, "store"), out, task, strategy, steps),
                 nprocs=world, join=True)  # fmt: skip
        with open(out) as fh:
            return json.load(fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="1,2")
    parser.add_argument(
        "--out", default=None, help="JSON file (default: a new ./cocd-results/ folder)"
    )
    show_defaults(parser)
    args = parser.parse_args()
    worlds = [int(w) for w in args.worlds.split(",")]
    result = {"machine": machine("cpu"), "threads_per_process": 1, "cases": []}
    print(f"{'task':>7} {'strategy':>10} {'world':>5} {'ms/step':>9} {'speed-up':>8} "
          f"{'CoCD bytes/step':>15} {'SGD all-reduce bytes':>20}")  # fmt: skip
    for task, strategy, steps in CASES:
        base = None
        for world in worlds:
            r = measure(world, task, strategy, steps)
            base = base or r["seconds_per_step"]
            cocd_bytes = (2 * r["B"] + 1) * 8
            sgd_bytes = r["n"] * 4
            row = dict(task=task, strategy=strategy, world=world, **r,
                       speedup=base / r["seconds_per_step"], cocd_allreduce_bytes=cocd_bytes,
                       sgd_allreduce_bytes=sgd_bytes)  # fmt: skip
            result["cases"].append(row)
            print(f"{task:>7} {strategy:>10} {world:>5} {r['seconds_per_step'] * 1e3:>9.2f} "
                  f"{row['speedup']:>7.2f}x {cocd_bytes:>15,} {sgd_bytes:>20,}")  # fmt: skip
    write_result(result, args.out, "distributed-cpu.json")


if __name__ == "__main__":
    main()

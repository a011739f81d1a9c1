"""Step time of each ModelObjective strategy, beside the evaluation floor.

    python -m benchmarks.evaluation [--device cpu|cuda] [--tasks sarcos,mnist] [--out FILE]

Strategies: sequential, batched, layered, and graphed-<strategy>: the same replayed
from CUDA graphs (``CoCD.graphed``; on CPU it runs without a graph).
Tasks: the SARCOS-size MLP (21-64-64-64-64-7, batch 64, B = 64) and the paper's MNIST
CNN (batch 128, B = 256). The floor is one forward pass of the unperturbed model over
2B x batch rows: what evaluating all of a step's points as one batch costs
(ALGORITHM.md, "Cost floor"). Strategies are timed in interleaved rounds in one run.
Writes JSON to benchmarks/results/evaluation-<device>.json.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import cocd_cuda

from .common import compare, machine, show_defaults, write_result
from .models import mnist_cnn, sarcos_mlp

TASKS = {
    # name: (model factory, input shape, classes or outputs, loss, batch, B)
    "sarcos": (sarcos_mlp, (21,), 7, nn.MSELoss(), 64, 64),
    "mnist": (mnist_cnn, (1, 28, 28), 10, nn.CrossEntropyLoss(), 128, 256),
}


def task_inputs(name: str, device: str):
    factory, shape, width, loss_fn, batch, B = TASKS[name]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=gen).to(device)
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        y = torch.randint(0, width, (batch,), generator=gen).to(device)
    else:
        y = torch.randn(batch, width, generator=gen).to(device)
    return factory, loss_fn, x, y, B


def bench_task(name: str, device: str, rounds: int, strategies: list[str]) -> dict:
    factory, loss_fn, x, y, B = task_inputs(name, device)
    cands, graphs, n = {}, {}, 0
    # nonfinite="zero" everywhere: graphed steps need it, and it makes every row free
    # of the one host read that "raise" costs per step.
    options = dict(lr=1e-4, compute_budget=B, momentum=0.99, nonfinite="zero")
    for strategy in strategies:
        torch.manual_seed(0)
        model = factory().to(device).eval()
        n = sum(p.numel() for p in model.parameters())
        graphed = strategy.startswith("graphed-")  # e.g. graphed-layered: CoCD.graphed
        obj = cocd_cuda.ModelObjective(
            model, loss_fn, x, y, strategy=strategy.removeprefix("graphed-")
        )
        if graphed:
            opt = cocd_cuda.CoCD(model.parameters(), **options)
            step = cands[strategy] = opt.graphed(obj)
            step.capture_all()  # so that the timed steps only replay
            graphs[strategy] = step
            continue
        opt = cocd_cuda.CoCD(model.parameters(), **options)
        opt.step(obj)
        cands[strategy] = lambda o=opt, f=obj: o.step(f)
    torch.manual_seed(0)
    model = factory().to(device).eval()
    rows = x.repeat(2 * B, *([1] * (x.dim() - 1)))
    targets = y.repeat(2 * B, *([1] * (y.dim() - 1)))

    @torch.no_grad()
    def floor():
        loss_fn(model(rows), targets)

    cands["floor: one forward over 2B x batch rows"] = floor
    # The layered cost depends on the layer the block is in: time whole cycles of the
    # block over all n coordinates. The other strategies cost the same at every step.
    cycle = -(-n // B)
    few = 3 if device == "cpu" and name == "mnist" else cycle
    reps = {k: cycle if k.endswith("layered") or k.startswith("graphed-") else few for k in cands}
    captured = {k: step.captures for k, step in graphs.items()}
    t = compare(cands, device, reps, rounds)
    assert all(step.captures == captured[k] for k, step in graphs.items()), "captured while timed"
    seq = t.get("sequential")
    floor_t = t["floor: one forward over 2B x batch rows"]
    return {
        "task": name,
        "n": n,
        "B": B,
        "batch": x.shape[0],
        "steps_timed_per_round": reps,
        "graphs_captured": captured,
        "seconds_per_step": t,
        "speedup_vs_sequential": {k: seq / s for k, s in t.items()} if seq else None,
        "x_floor": {k: s / floor_t for k, s in t.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tasks", default="sarcos,mnist")
    parser.add_argument(
        "--strategies",
        default=None,
        help="default: sequential,batched,layered (and their graphed- forms on cuda)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--out", default=None, help="JSON file (default: a new ./cocd-results/ folder)"
    )
    show_defaults(parser)
    args = parser.parse_args()
    strategies = args.strategies or "sequential,batched,layered" + (
        ",graphed-sequential,graphed-batched,graphed-layered"
        if args.device.startswith("cuda")
        else ""
    )
    result = {"machine": machine(args.device), "tasks": []}
    print(f"# ModelObjective strategies on {args.device}, torch {torch.__version__}")
    for name in args.tasks.split(","):
        r = bench_task(name, args.device, args.rounds, strategies.split(","))
        result["tasks"].append(r)
        print(f"\n## {name}: n={r['n']}, B={r['B']}, batch {r['batch']}")
        print(f"{'strategy':>42} {'ms/step':>9} {'vs seq.':>8} {'x floor':>8}")
        for k, s in r["seconds_per_step"].items():
            speed = r["speedup_vs_sequential"][k] if r["speedup_vs_sequential"] else float("nan")
            print(f"{k:>42} {s * 1e3:>9.2f} {speed:>7.1f}x {r['x_floor'][k]:>8.2f}")
    write_result(result, args.out, f"evaluation-{args.device}.json")


if __name__ == "__main__":
    main()

"""Step time of each ModelObjective strategy, beside the evaluation floor.

    python -m benchmarks.evaluation [--device cpu|cuda] [--tasks sarcos,mnist] [--out FILE]

Strategies: sequential, batched, layered, graph, and graphed-<strategy>: the same
replayed from CUDA graphs (``CoCD.graphed``; on CPU it runs without a graph). A strategy
the model does not allow (layered on a model that is not an nn.Sequential) is skipped.
Tasks: the SARCOS-size MLP (21-64-64-64-64-7, batch 64, B = 64), the paper's MNIST
CNN (batch 128, B = 256), ResNet-20 on CIFAR-10-shaped input (--resnet-batch images,
B = 256) and a small GPT-2 (4 layers, width 128, 1,024-token vocabulary, tied
embeddings; 4 sequences of 32 tokens, B = 256). The floor is one forward pass of the
unperturbed model over 2B x batch rows: what evaluating all of a step's points as one
batch costs (ALGORITHM.md, "Cost floor"). Strategies are timed in interleaved rounds in
one run. The layered and graph strategies cost more for a block in an early layer than
in a late one: they are timed over a whole cycle of the block through all coordinates,
or, where a cycle is longer than --positions steps, one step at each of that many
evenly spaced block positions. Writes JSON to benchmarks/results/evaluation-<device>.json.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import cocd_cuda

from .common import compare, machine, show_defaults, write_result
from .models import mnist_cnn, resnet20, sarcos_mlp

TASKS = {
    # name: (model factory, input shape, classes or outputs, loss, batch, B)
    "sarcos": (sarcos_mlp, (21,), 7, nn.MSELoss(), 64, 64),
    "mnist": (mnist_cnn, (1, 28, 28), 10, nn.CrossEntropyLoss(), 128, 256),
    "resnet20": (resnet20, (3, 32, 32), 10, nn.CrossEntropyLoss(), 4, 256),
    "gpt2": (None, (32,), 1024, nn.CrossEntropyLoss(), 4, 256),
}
POSITION_BOUND = ("layered", "graph")  # strategies whose step cost depends on the block


def small_gpt2():
    """GPT-2 (Hugging Face) at 4 layers, width 128, 4 heads, 1,024 tokens: 0.86M parameters."""
    import transformers  # optional: only this task needs it

    config = transformers.GPT2Config(
        n_layer=4, n_embd=128, n_head=4, vocab_size=1024, n_positions=64, use_cache=False,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


def task_inputs(name: str, device: str, batch: int | None = None):
    """(factory, loss_fn, inputs, targets, output, B) of a task."""
    factory, shape, width, loss_fn, default_batch, B = TASKS[name]
    batch = batch or default_batch
    gen = torch.Generator().manual_seed(0)
    if name == "gpt2":  # next-token prediction on random tokens
        ids = torch.randint(0, width, (batch, shape[0] + 1), generator=gen).to(device)
        logits = lambda o: o.logits.flatten(0, 1)  # noqa: E731
        return small_gpt2, loss_fn, {"input_ids": ids[:, :-1]}, ids[:, 1:].flatten(), logits, B
    x = torch.randn(batch, *shape, generator=gen).to(device)
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        y = torch.randint(0, width, (batch,), generator=gen).to(device)
    else:
        y = torch.randn(batch, width, generator=gen).to(device)
    return factory, loss_fn, x, y, None, B


def bench_task(
    name: str, device: str, rounds: int, strategies: list[str], positions: int, batch=None
) -> dict:
    factory, loss_fn, x, y, output, B = task_inputs(name, device, batch)
    cands, graphs, skipped, setup, n = {}, {}, {}, {}, 0
    # nonfinite="zero" everywhere: graphed steps need it, and it makes every row free
    # of the one host read that "raise" costs per step.
    options = dict(lr=1e-4, compute_budget=B, momentum=0.99, nonfinite="zero")
    torch.manual_seed(0)
    n = sum(p.numel() for p in factory().parameters())
    cycle = -(-n // B)
    # Where a cycle is too long to time, step at evenly spaced block positions instead.
    starts = (
        [int((k + 0.5) * n / positions) for k in range(positions)] if cycle > positions else None
    )
    for strategy in strategies:
        torch.manual_seed(0)
        model = factory().to(device).eval()
        graphed = strategy.startswith("graphed-")  # e.g. graphed-layered: CoCD.graphed
        t0 = time.perf_counter()
        try:
            obj = cocd_cuda.ModelObjective(
                model, loss_fn, x, y, strategy=strategy.removeprefix("graphed-"), output=output
            )
        except ValueError as exc:  # this strategy cannot run this model
            skipped[strategy] = str(exc)
            continue
        setup[strategy] = time.perf_counter() - t0
        opt = cocd_cuda.CoCD(model.parameters(), **options)
        if graphed:
            step = cands[strategy] = opt.graphed(obj)
            step.capture_all()  # so that the timed steps only replay
            graphs[strategy] = step
            continue
        opt.step(obj)
        if starts and strategy in POSITION_BOUND:
            where = iter(starts * (10**6 // len(starts)))

            def at_next_position(o=opt, f=obj, where=where):
                o._engine.c = next(where)
                o.step(f)

            cands[strategy] = at_next_position
        else:
            cands[strategy] = lambda o=opt, f=obj: o.step(f)
    torch.manual_seed(0)
    model = factory().to(device).eval()
    args = _repeat(x, 2 * B)
    targets = y.repeat(2 * B, *([1] * (y.dim() - 1)))

    @torch.no_grad()
    def floor():
        out = model(**args) if isinstance(args, dict) else model(args)
        loss_fn(output(out) if output else out, targets)

    cands["floor: one forward over 2B x batch rows"] = floor
    # The layered and graph costs depend on the layer the block is in: time whole cycles
    # of the block (or evenly spaced positions). The others cost the same at every step.
    few = 3 if (device == "cpu" and name != "sarcos") or cycle > 100 else cycle

    def reps_of(k: str) -> int:
        if k.startswith("graphed-"):  # replays read the block from the device: whole cycles
            return cycle
        return (len(starts) if starts else cycle) if k in POSITION_BOUND else few

    reps = {k: reps_of(k) for k in cands}
    captured = {k: step.captures for k, step in graphs.items()}
    t = compare(cands, device, reps, rounds)
    assert all(step.captures == captured[k] for k, step in graphs.items()), "captured while timed"
    seq = t.get("sequential")
    floor_t = t["floor: one forward over 2B x batch rows"]
    return {
        "task": name,
        "n": n,
        "B": B,
        "batch": _first(x).shape[0],
        "block_positions_timed": "whole cycle" if starts is None else starts,
        "steps_timed_per_round": reps,
        "graphs_captured": captured,
        "setup_seconds": setup,
        "skipped": skipped,
        "seconds_per_step": t,
        "speedup_vs_sequential": {k: seq / s for k, s in t.items()} if seq else None,
        "x_floor": {k: s / floor_t for k, s in t.items()},
    }


def _first(x):
    return next(iter(x.values())) if isinstance(x, dict) else x


def _repeat(x, times: int):
    """x (a tensor or a dict of them) with its rows repeated: 2B x batch rows."""
    if isinstance(x, dict):
        return {k: _repeat(v, times) for k, v in x.items()}
    return x.repeat(times, *([1] * (x.dim() - 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tasks", default="sarcos,mnist,resnet20,gpt2")
    parser.add_argument(
        "--strategies",
        default=None,
        help="default: sequential,batched,layered,graph (+ graphed- forms of the first 3 on cuda)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--positions", type=int, default=8, help="block positions timed where a cycle is longer"
    )
    parser.add_argument("--resnet-batch", type=int, default=None, help="default: 4 images")
    parser.add_argument(
        "--out", default=None, help="JSON file (default: a new ./cocd-results/ folder)"
    )
    show_defaults(parser)
    args = parser.parse_args()
    strategies = args.strategies or "sequential,batched,layered,graph" + (
        ",graphed-sequential,graphed-batched,graphed-layered"
        if args.device.startswith("cuda")
        else ""
    )
    result = {"machine": machine(args.device), "tasks": []}
    print(f"# ModelObjective strategies on {args.device}, torch {torch.__version__}")
    for name in args.tasks.split(","):
        batch = args.resnet_batch if name == "resnet20" else None
        r = bench_task(name, args.device, args.rounds, strategies.split(","), args.positions, batch)
        result["tasks"].append(r)
        print(f"\n## {name}: n={r['n']}, B={r['B']}, batch {r['batch']}")
        print(f"{'strategy':>42} {'ms/step':>9} {'vs seq.':>8} {'x floor':>8}")
        for k, s in r["seconds_per_step"].items():
            speed = r["speedup_vs_sequential"][k] if r["speedup_vs_sequential"] else float("nan")
            print(f"{k:>42} {s * 1e3:>9.2f} {speed:>7.1f}x {r['x_floor'][k]:>8.2f}")
    write_result(result, args.out, f"evaluation-{args.device}.json")


if __name__ == "__main__":
    main()

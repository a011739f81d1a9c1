"""Hybrid coordinate descent (arXiv 2408.01374) against gradient descent and CoCD.

    python -m benchmarks.hybrid_cd [--width 50] [--epochs 100] [--thresholds 1e-4,1e-3,1e-2]

The paper's setting: a 2-layer ReLU network f(x) = (1/sqrt(m)) sum_r a_r relu(w_r . x)
with m hidden units, 10 training samples drawn uniformly from the unit sphere in 1,000
dimensions, labels from a 1-D standard Gaussian, W standard Gaussian, A uniform in
[-1, 1] and fixed; only W is trained, on L = 1/(2n) sum (f(x_i) - y_i)^2, full batch
(one step per epoch). Methods:

- ``gd``: gradient descent, W <- W - lr dL/dW, at lr 1 (the paper's gradient step) and
  lr 0.1 (that step damped by alpha, as HybridCD applies it);
- ``hybrid@dw``: ``cocd_cuda.baselines.HybridCD`` with exact gradients, threshold dw,
  alpha = 1/n = 0.1, lr 1, line-search points batched through ``ModelObjective``;
- ``hybrid-zo@dw``: the same with central-difference gradients (2 evaluations per
  weight);
- ``cocd``: CoCD with, per epoch, as many function evaluations as the exact HybridCD
  run at the middle threshold used per epoch on average.

Each method runs in its own process, so that its peak resident memory (above the
process's footprint once the data and model exist) can be measured. Writes
``benchmarks/results/hybrid_cd-cpu.json`` and a PNG plot next to it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

import torch
from torch.nn import functional as F

from . import common

D, SAMPLES = 1000, 10


def problem(width: int, seed: int):
    """Data and a fresh model: Sequential(Linear(D, m), ReLU, Linear(m, 1)), A fixed."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(SAMPLES, D, generator=gen)
    X /= X.norm(dim=1, keepdim=True)  # uniform on the unit sphere
    y = torch.randn(SAMPLES, 1, generator=gen)
    W = torch.randn(width, D, generator=gen)
    A = torch.rand(1, width, generator=gen) * 2 - 1
    model = torch.nn.Sequential(
        torch.nn.Linear(D, width, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 1, bias=False),
    )
    with torch.no_grad():
        model[0].weight.copy_(W)
        model[2].weight.copy_(A / width**0.5)  # the 1/sqrt(m) output scaling
    model[2].weight.requires_grad_(False)
    return model, X, y


def loss_fn(out, target):
    return 0.5 * F.mse_loss(out, target)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(spec: dict) -> dict:
    """One method, in a fresh process: loss, evaluations and seconds per epoch, peak RSS."""
    import cocd_cuda
    from cocd_cuda.baselines import HybridCD

    torch.set_num_threads(1)
    model, X, y = problem(spec["width"], spec["seed"])
    W = model[0].weight
    obj = cocd_cuda.ModelObjective(model, loss_fn, X, y, strategy="layered")
    kind = spec["kind"]
    if kind == "gd":
        evals_per_step = 1

        def step():
            loss = loss_fn(model(X), y)
            (g,) = torch.autograd.grad(loss, [W])
            with torch.no_grad():
                W.sub_(spec["lr"] * g)

    elif kind in ("hybrid", "hybrid-zo"):
        opt = HybridCD(
            [W],
            threshold=spec["threshold"],
            alpha=1.0 / SAMPLES,
            lr=1.0,
            gradient="exact" if kind == "hybrid" else "zeroth",
        )

        def step():
            opt.step(obj)

    else:
        B = spec["budget"]
        opt = cocd_cuda.CoCD([W], lr=spec["lr"], eps=spec["eps"], momentum=spec["momentum"],
                             compute_budget=B)  # fmt: skip
        steps = max(1, round(spec["evals_per_epoch"] / (2 * B)))
        evals_per_step = 2 * B * steps

        def step():
            for _ in range(steps):
                opt.step(obj)

    base_rss = peak_rss_mib()
    losses, evals, seconds = [float(obj())], [0], []
    for _ in range(spec["epochs"]):
        t0 = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - t0)
        losses.append(float(obj()))
        if kind.startswith("hybrid"):
            evals.append(opt.evaluations)
        else:
            evals.append(evals[-1] + evals_per_step)
    return dict(
        spec,
        loss=losses,
        evaluations=evals,
        seconds_per_epoch=sum(seconds) / len(seconds),
        peak_rss_above_start_mib=peak_rss_mib() - base_rss,
    )


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in result["runs"]:
        axes[0].plot(r["loss"], label=r["name"])
        axes[1].plot([max(e, 1) for e in r["evaluations"]], r["loss"], label=r["name"])
    axes[0].set(xlabel="epoch", ylabel="training loss", yscale="log")
    axes[1].set(xlabel="function evaluations", ylabel="training loss", xscale="log", yscale="log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"2-layer ReLU net, m = {result['width']}, {SAMPLES} samples on S^{D - 1}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.hybrid_cd", description=__doc__)
    p.add_argument("--width", type=int, default=50)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--thresholds", default="1e-4,1e-3,1e-2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cocd-budget", type=int, default=4096)
    p.add_argument("--cocd-lr", type=float, default=1.0)
    p.add_argument("--cocd-momentum", type=float, default=0.9)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    base = dict(width=args.width, epochs=args.epochs, seed=args.seed)
    # lr 1 is the paper's gradient step; lr 0.1 = alpha * 1 is HybridCD's damped one
    specs = [dict(base, name=f"GD (lr {lr:g})", kind="gd", lr=lr) for lr in (1.0, 0.1)]
    specs += [dict(base, name=f"HybridCD dw={t:g}", kind="hybrid", threshold=t) for t in thresholds]
    mid = thresholds[len(thresholds) // 2]
    specs.append(dict(base, name=f"HybridCD-ZO dw={mid:g}", kind="hybrid-zo", threshold=mid))
    ctx = mp.get_context("spawn")
    runs = []
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for spec in specs:
            runs.append(pool.apply(run, (spec,)))
            print(f"{spec['name']:24s} done", flush=True)
        ref = next(r for r in runs if r["kind"] == "hybrid" and r["threshold"] == mid)
        per_epoch = ref["evaluations"][-1] / args.epochs
        cocd = dict(base, name=f"CoCD B={args.cocd_budget}", kind="cocd", budget=args.cocd_budget,
                    lr=args.cocd_lr, eps=1e-3, momentum=args.cocd_momentum,
                    evals_per_epoch=per_epoch)  # fmt: skip
        runs.append(pool.apply(run, (cocd,)))
    print(f"\n| method | loss after {args.epochs} epochs | evaluations | s/epoch | peak MiB |")
    print("|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['name']} | {r['loss'][-1]:.4g} (from {r['loss'][0]:.4g}) | "
            f"{r['evaluations'][-1]:,} | {r['seconds_per_epoch']:.3f} | "
            f"{r['peak_rss_above_start_mib']:.1f} |"
        )
    result = dict(
        benchmark="hybrid_cd",
        machine=common.machine("cpu"),
        command="python -m benchmarks.hybrid_cd "
        + " ".join(sys.argv[1:] if argv is None else argv),
        width=args.width,
        samples=SAMPLES,
        dim=D,
        runs=runs,
    )
    out = common.write_result(result, args.out, "hybrid_cd-cpu.json")
    plot(result, os.path.splitext(out)[0] + ".png")


if __name__ == "__main__":
    main()

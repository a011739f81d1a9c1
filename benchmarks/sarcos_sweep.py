"""Why does CoCD diverge on SARCOS at the paper's settings? A sweep on a validation split.

    python -m benchmarks.sarcos_sweep [--sweep causes|figures|stability|all] [--epochs 50]
        [--out FILE (default: results/reproduction/sarcos-<sweep>-cpu.json)] [--resume]

Only the training rows are used: the 80/20 split of ``sarcos_inv_test.mat`` that
``benchmarks.paper`` trains on (seed 0) is split again, 80/20 with seed 1, into fitting and
validation rows. The test rows are never read. Every run starts from the paper's SARCOS
settings (PAPER.md: raw torques, weight decay 1e-4, lr 1e-3, momentum 1, eps 1, B 64,
batch 64, 50 epochs, the 21-64-64-64-64-7 ReLU MLP, standardised inputs, PyTorch's
default initialisation) and changes one thing:

- ``causes``: candidate explanations for the divergence, one at a time, for CoCD (steps
  at the paper's count of 34,750, input scaling, initialisation, activation, width,
  standardised targets, lr, momentum, eps);
- ``figures``: Figure 2 (eps, CoCD vs BCCD), Figure 3 (momentum, B), the B = 1 stress test;
- ``stability``: the honest form of the stability claim, the learning rates (and CoCD
  momenta) at which CoCD, SPSA and ZO-SGD converge at the same budget of 2 x 64
  evaluations per step.

A run *converges* when it ends with a finite validation MSE below the constant-zero
predictor's (the curves' starting point). The JSON holds each run's settings, curve
(validation MSE in torque units per epoch), status and seconds. Finished runs are kept
with ``--resume``, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import cocd_cuda

from . import data as data_mod
from . import paper

PAPER_STEPS = 50 * 695  # 44,484 training rows / batch 64 = 695 steps per epoch

BASE = dict(
    optimizer="cocd", lr=1e-3, momentum=1.0, eps=1.0, budget=64, batch=64, epochs=50,
    weight_decay=1e-4, inputs="standardised", targets="raw", init="default",
    activation="relu", hidden=64, steps=None, zo_eps=1e-3, seed=0, dtype="float32",
    memory=None, batch_norm=False,
)  # fmt: skip


def causes() -> list[tuple[str, dict]]:
    """One change at a time from the paper's settings, CoCD only."""
    out = [("paper settings", {})]
    out += [("paper's step count (34,750)", {"steps": PAPER_STEPS})]
    out += [(f"inputs {v}", {"inputs": v}) for v in ("raw", "minmax")]
    out += [(f"init {v}", {"init": v}) for v in ("xavier", "small")]
    out += [("tanh", {"activation": "tanh"}), ("width 32 (4k net)", {"hidden": 32})]
    out += [("standardised targets", {"targets": "standardised"})]
    out += [(f"lr {v:g}", {"lr": v}) for v in (1e-4, 3e-4)]
    out += [(f"momentum {v:g}", {"momentum": v}) for v in (0.99, 0.95, 0.9)]
    out += [(f"eps {v:g}", {"eps": v}) for v in (0.1, 1e-3)]
    out += [("float64", {"dtype": "float64"})]
    out += [("batch norm", {"batch_norm": True})]
    return out


def figures() -> list[tuple[str, dict]]:
    """Figure 2 (eps, CoCD vs BCCD; BCCD's 1e-6 also in float64), Figure 3 (momentum, B)
    and the B = 1 stress test, on the validation split."""
    out = [(f"fig2 bccd eps {v:g}", {"optimizer": "bccd", "eps": v})
           for v in (1.0, 0.1, 0.01, 1e-4, 1e-6)]  # fmt: skip
    out += [("fig2 bccd eps 1e-06 float64", {"optimizer": "bccd", "eps": 1e-6, "dtype": "float64"})]
    out += [(f"fig2 cocd eps {v:g}", {"eps": v}) for v in (1e-4, 0.01, 0.1, 1.0)]
    out += [(f"fig3 momentum {v:g}", {"momentum": v}) for v in (0.0, 0.5, 0.9, 0.95, 0.99)]
    out += [(f"fig3 B {v}", {"budget": v}) for v in (128, 256, 512, 1024)]
    out += [(f"fig3 M {v:.0%}", {"memory": v}) for v in (0.25, 0.5, 0.75)]
    out += [("stress B 1 momentum 0.95", {"budget": 1, "momentum": 0.95})]
    return out


def stability() -> list[tuple[str, dict]]:
    """lr grid for CoCD, SPSA and ZO-SGD at equal budget; CoCD momentum at its lr."""
    out = []
    for lr in (3e-3, 1e-3, 3e-4, 1e-4, 3e-5):  # the diverging (short) runs first
        for opt in ("cocd", "spsa", "zosgd"):
            out.append((f"{opt} lr {lr:g}", {"optimizer": opt, "lr": lr}))
    for mom in (0.9, 0.99):
        for lr in (1e-4, 1e-3, 3e-3):
            out.append((f"cocd lr {lr:g} momentum {mom:g}", {"lr": lr, "momentum": mom}))
    return out


SWEEPS = {"causes": causes, "stability": stability, "figures": figures}


# ----------------------------------------------------------------------- data and model
def load_rows(data: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows), raw, from the training part of the paper split."""
    ds = data_mod.load_sarcos(data, standardise_targets=False)
    if not ds.info["split"]:
        raise SystemExit("this sweep expects the test-file-only split (no sarcos_inv.mat)")
    path = data_mod._locate(data, ("sarcos",), data_mod.SARCOS_TEST, "SARCOS")
    rows = torch.from_numpy(data_mod._read_mat(path, "sarcos_inv_test"))
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    train = rows[perm[: round(0.8 * len(rows))]]  # the rows benchmarks.paper trains on
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    n_fit = round(0.8 * len(train))
    return train[perm[:n_fit]].numpy(), train[perm[n_fit:]].numpy()


def prepare(fit: np.ndarray, val: np.ndarray, inputs: str, targets: str):
    """Tensors (x_fit, y_fit, x_val, y_val) and the target scale (std per torque)."""
    xf, xv = fit[:, :21], val[:, :21]
    if inputs == "standardised":
        mu, sd = xf.mean(0), xf.std(0, ddof=1)
        xf, xv = (xf - mu) / sd, (xv - mu) / sd
    elif inputs == "minmax":
        lo, hi = xf.min(0), xf.max(0)
        xf, xv = (xf - lo) / (hi - lo), (xv - lo) / (hi - lo)
    elif inputs != "raw":
        raise ValueError(inputs)
    yf, yv = fit[:, 21:], val[:, 21:]
    scale = np.ones(7)
    if targets == "standardised":
        mu, scale = yf.mean(0), yf.std(0, ddof=1)
        yf, yv = (yf - mu) / scale, (yv - mu) / scale
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return t(xf), t(yf), t(xv), t(yv), torch.tensor(scale, dtype=torch.float32)


def build_model(c: dict) -> nn.Sequential:
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[c["activation"]]
    widths = [21] + [c["hidden"]] * 4 + [7]
    layers: list[nn.Module] = []
    for i in range(5):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < 4:
            if c.get("batch_norm"):
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            layers.append(act())
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear) and c["init"] == "xavier":
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and c["init"] == "small":
            m.weight.data.mul_(0.1)
            m.bias.data.zero_()
    return model


# ----------------------------------------------------------------------- one run
def run_one(c: dict, fit: np.ndarray, val: np.ndarray) -> dict:
    """Train with one configuration; validation MSE (torque units) per epoch."""
    dtype = getattr(torch, c["dtype"])
    xf, yf, xv, yv, scale = (t.to(dtype) for t in prepare(fit, val, c["inputs"], c["targets"]))
    torch.manual_seed(c["seed"])
    model = build_model(c).to(dtype)
    s = dict(lr=c["lr"], weight_decay=c["weight_decay"], eps=c["eps"], bccd_eps=c["eps"],
             budget=c["budget"], momentum=c["momentum"], backend="auto", zo_lr=c["lr"],
             zo_eps=c["zo_eps"], seed=c["seed"], sgd_momentum=0.9)  # fmt: skip
    s["memory"] = c.get("memory")
    opt, _ = paper.make_optimizer(c["optimizer"], model.parameters(), s)
    objective = None
    if c["optimizer"] in ("cocd", "bccd"):
        objective = cocd_cuda.ModelObjective(model, F.mse_loss, xf[:64], yf[:64])

    @torch.no_grad()
    def val_mse() -> float:
        model.eval()  # batch norm: the running statistics
        try:
            return float((((model(xv) - yv) * scale) ** 2).mean())
        finally:
            model.train()

    zero_mse = float(((yv * scale) ** 2).mean()) if c["targets"] == "raw" else None
    per_epoch_steps = len(xf) // c["batch"]
    total = c["steps"] or c["epochs"] * per_epoch_steps
    epochs = math.ceil(total / per_epoch_steps)
    gen = torch.Generator().manual_seed(c["seed"])
    curve, status, done, t0 = [val_mse()], "ok", 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(xf), generator=gen)
        try:
            for i in range(min(per_epoch_steps, total - done)):
                idx = perm[i * c["batch"] : (i + 1) * c["batch"]]
                xb, yb = xf[idx], yf[idx]
                if objective is not None:
                    objective.set_batch(xb, yb)
                    loss = opt.step(objective)
                elif c["optimizer"] == "sgd":
                    opt.zero_grad()
                    loss = F.mse_loss(model(xb), yb)
                    loss.backward()
                    opt.step()
                else:
                    loss = opt.step(lambda xb=xb, yb=yb: F.mse_loss(model(xb), yb))
                done += 1
                if not math.isfinite(float(loss)):
                    raise FloatingPointError("non-finite loss")
        except FloatingPointError:
            status = f"diverged in epoch {epoch}"
            break
        curve.append(val_mse())
        if not math.isfinite(curve[-1]):
            status = f"diverged in epoch {epoch}"
            curve[-1] = None
            break
    finite_curve = [v for v in curve if v is not None and math.isfinite(v)]
    start = zero_mse if zero_mse is not None else curve[0]
    final = curve[-1] if status == "ok" else None
    return {
        "settings": c,
        "status": status,
        "converged": final is not None and final < start,
        "final_val_mse": final,
        "best_val_mse": min(finite_curve) if finite_curve else None,
        "start_val_mse": start,
        "val_mse_per_epoch": curve,
        "steps": done,
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------- outputs
def markdown(result: dict) -> str:
    """One row per run: status, converged, best and final validation MSE, steps, seconds."""
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = ["| run | status | converged | best | final | steps | seconds |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, r in result["runs"].items():
        lines.append(
            f"| {key.split(': ', 1)[1]} | {r['status']} | {'yes' if r['converged'] else 'no'} "
            f"| {f(r['best_val_mse'])} | {f(r['final_val_mse'])} | {r['steps']} "
            f"| {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- plot
def plot(result: dict, path: str) -> str:
    """Left: every 'causes' curve; right: best validation MSE against lr per optimizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    for key, r in result["runs"].items():
        if not key.startswith("stability: "):
            curve = [(i, v) for i, v in enumerate(r["val_mse_per_epoch"]) if v is not None]
            label = key.split(": ", 1)[1] + ("" if r["status"] == "ok" else " (diverged)")
            ax1.plot(*zip(*curve, strict=True), label=label, lw=1)
    ax1.set(xlabel="epoch", ylabel="validation MSE (torque units)", yscale="log",
            title="paper settings with one change", ylim=(3, 3000))  # fmt: skip
    ax1.legend(fontsize=6, ncol=2)
    for opt, marker in (("cocd", "o"), ("spsa", "s"), ("zosgd", "^")):
        pts = [(r["settings"]["lr"], r) for k, r in result["runs"].items()
               if k.startswith(f"stability: {opt} lr ") and "momentum" not in k]  # fmt: skip
        pts.sort(key=lambda t: t[0])
        if not pts:
            continue
        lrs = [lr for lr, _ in pts]
        ax2.plot(lrs, [r["best_val_mse"] for _, r in pts], marker=marker, label=f"{opt} best")
        fin = [(lr, r["final_val_mse"]) for lr, r in pts if r["final_val_mse"] is not None]
        if fin:
            ax2.scatter(*zip(*fin, strict=True), marker=marker, facecolors="none",
                        edgecolors="k", s=60)  # fmt: skip
        for lr, r in pts:
            if r["status"] != "ok":
                ax2.annotate("div", (lr, r["best_val_mse"]), fontsize=7)
    ax2.set(xscale="log", yscale="log", xlabel="lr", ylabel="validation MSE",
            title="best (line) and final (circles); 'div' = diverged")  # fmt: skip
    if ax2.lines:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------- main
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sarcos_sweep", description=__doc__)
    p.add_argument("--sweep", default="all", choices=[*SWEEPS, "all"], help="default: all")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument(
        "--out", default=None, help="default: sarcos-<sweep>-cpu.json (all, causes: sweep)"
    )
    p.add_argument("--data", default=None)
    p.add_argument("--resume", action="store_true", help="keep finished runs in --out")
    p.add_argument("--only", default=None, help="run only names containing this text")
    p.add_argument("--table", action="store_true", help="print --out's table and exit")
    args = p.parse_args(argv)
    if args.out is None:
        kind = args.sweep if args.sweep in ("figures", "stability") else "sweep"
        args.out = os.path.join(paper.REPRODUCTION, f"sarcos-{kind}-cpu.json")
    if args.table:
        with open(args.out) as fh:
            print(markdown(json.load(fh)))
        return {}
    torch.set_num_threads(1)
    fit, val = load_rows(args.data)
    result = {"fit_rows": len(fit), "validation_rows": len(val), "runs": {}}
    if os.path.exists(args.out):
        if not args.resume:
            raise SystemExit(f"{args.out} exists: pass --resume to continue it")
        with open(args.out) as fh:
            result = json.load(fh)
    result.update(machine=paper.device_name("cpu"), torch=torch.__version__,
                  commit=paper.git_commit(), base=BASE)  # fmt: skip
    names = list(SWEEPS) if args.sweep == "all" else [args.sweep]
    for sweep in names:
        for label, change in SWEEPS[sweep]():
            key = f"{sweep}: {label}"
            if key in result["runs"] or (args.only and args.only not in key):
                continue
            c = {**BASE, "epochs": args.epochs, **change}
            r = run_one(c, fit, val)
            result["runs"][key] = r
            best, final = r["best_val_mse"], r["final_val_mse"]
            print(f"{key:45s} {r['status']:22s} final {final if final is None else f'{final:.4g}'}"
                  f"  best {best if best is None else f'{best:.4g}'}  {r['seconds']:.0f} s",
                  flush=True)  # fmt: skip
            paper.write_json(result, os.path.splitext(args.out)[0])
    if result["runs"]:
        table = markdown(result)
        paper.write_markdown(table, os.path.splitext(args.out)[0])
        print("\n" + table)
        print("plot:", plot(result, os.path.splitext(args.out)[0] + ".png"))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

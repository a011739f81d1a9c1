"""Figure 5 of the paper: how far CoCD's estimate buffer is from the full finite-difference
gradient during training, against the block size B.

    python -m benchmarks.grad_error [--budgets 16,32,64,128,256,512,1024,2048]
        [--steps 550] [--every 11] [--hidden 32] [--lr LR] [--seed 0] [--noise]
        [--early 110] [--out FILE.json] [--overwrite | --replot]

The paper (Appendix B) trains an about-4k-parameter SARCOS net and plots the average of
``||g_hat_t - grad_eps f(x_t)||`` against B. Here, for each B, CoCD trains the
21-32-32-32-32-7 ReLU MLP (``sarcos_mlp(hidden=32)``, 4,103 parameters) at the
``paper-sarcos`` preset's settings (raw torques, lr, momentum, eps, weight decay, batch,
data split and batch order of ``benchmarks.paper``); every ``--every`` steps, on that
step's mini-batch:

- ``grad_eps f(x_t)``: central differences of radius eps at *every* coordinate, at the
  point x_t the step starts from (``fd_gradient``: one block of all n coordinates, 2n
  exact evaluations, the same realised steps as CoCD's own);
- ``g_hat_t``: CoCD's estimate buffer after step t, the direction it descends along from
  x_t (fresh estimates at x_t for the step's B coordinates, older ones elsewhere).

Every B sees the same initial weights and mini-batches. The error is averaged over all
measured steps (mean and median), over the steps after the first full cycle through the
coordinates (t > n / B, when no buffer entry is still at its initial 0) and over the
first ``--early`` steps. ``--noise`` also measures, at each measured x_t, the distance
between the finite-difference gradients of two consecutive mini-batches: the error a
buffer exact at x_t but filled from other batches would have.

Writes the JSON (settings, per-B errors per measured step, machine, torch version,
commit), a markdown table and a PNG (left: the averages against B on a log-x axis, as
the paper's figure; right: the error at every measured step); prints the table.
``--replot`` redoes the table and the PNG from an existing JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
from torch.nn import functional as F

import cocd_cuda
from cocd_cuda.evaluation import Block, split
from cocd_cuda.layout import ParamLayout

from . import common, models, paper
from . import data as data_mod

BUDGETS = (16, 32, 64, 128, 256, 512, 1024, 2048)
OUT = os.path.join(paper.REPRODUCTION, "grad-error-cpu.json")
# Read off the paper's Figure 5 by eye (PAPER.md): linear in log B between these.
PAPER_ENDS = {16: 14.0, 2048: 6.0}
EARLY = 110  # the first two epochs: at the paper's settings, before any B's run blows up


@torch.no_grad()
def fd_gradient(objective, opt: cocd_cuda.CoCD) -> torch.Tensor:
    """``grad_eps f(x)`` at the current parameters: central differences at every coordinate.

    Coordinate order and radii are ``opt``'s (its param groups' eps); the step is the
    realised one, ``(x + eps) - (x - eps)`` after rounding to the parameter dtype, exactly
    as CoCD divides by. ``objective`` is a block evaluator (``ModelObjective``). float64.
    """
    layout = ParamLayout(opt.param_groups)
    eps = [group["eps"] for group in opt.param_groups]
    block = Block.at(layout, 0, layout.n, eps, central=True)
    f_plus, f_minus = split(objective.evaluate_block(block), central=True)
    return (f_plus - f_minus) / (block.plus - block.minus)


def buffer(opt: cocd_cuda.CoCD) -> torch.Tensor:
    """CoCD's estimate buffer (dense mode: one entry per coordinate), float64."""
    return opt.state_dict()["state"]["buffer"].double()


def train_and_measure(
    model, batches, s: dict, budget: int, every: int, noise: bool = False
) -> dict:
    """Train ``model`` with CoCD at block size ``budget`` on ``batches`` (a list of (x, y));
    at steps every, 2 every, ... the error ``||g_hat_t - grad_eps f(x_t)||``.

    With ``noise``, also the mini-batch noise at x_t: ``||grad_eps f(x_t) - grad_eps
    f'(x_t)||`` with f' the loss on the next step's batch, what the error would be if
    every buffer entry were exact at x_t but came from another batch.
    Stops at a non-finite loss (recorded in ``status``).
    """
    opt = cocd_cuda.CoCD(
        model.parameters(),
        lr=s["lr"],
        weight_decay=s["weight_decay"],
        eps=s["eps"],
        compute_budget=budget,
        momentum=s["momentum"],
        backend=s["backend"],
    )
    x0, y0 = batches[0]
    objective = cocd_cuda.ModelObjective(model, F.mse_loss, x0, y0, strategy=s["strategy"])
    rows, status, t0 = [], "ok", time.perf_counter()
    for t, (xb, yb) in enumerate(batches, start=1):
        objective.set_batch(xb, yb)
        measure = t % every == 0
        if measure:
            g = fd_gradient(objective, opt)
            if noise:
                objective.set_batch(*batches[t % len(batches)])
                other = fd_gradient(objective, opt)
                objective.set_batch(xb, yb)
        try:
            loss = float(opt.step(objective))
        except FloatingPointError:
            status = f"diverged at step {t}"
            break
        if not math.isfinite(loss):
            status = f"diverged at step {t}"
            break
        if measure:
            err = float((buffer(opt) - g).norm())
            rows.append({"step": t, "error": err, "fd_norm": float(g.norm()), "loss": loss})
            if noise:
                rows[-1]["batch_noise"] = float((other - g).norm())
    return {
        "budget": budget,
        "status": status,
        "measurements": rows,
        "seconds": time.perf_counter() - t0,
    }


def summarise(run: dict, n: int, early: int = EARLY) -> dict:
    """Mean error over all measured steps, over those after the first cycle (t > n/B),
    and over the first ``early`` steps."""
    rows = run["measurements"]
    cycle = math.ceil(n / run["budget"])
    late = [r for r in rows if r["step"] > cycle]
    first = [r for r in rows if r["step"] <= early]

    def mean(key, rs):
        return sum(r[key] for r in rs) / len(rs) if rs else None

    rel = [r["error"] / r["fd_norm"] for r in rows if r["fd_norm"] > 0]
    return {
        "steps_per_cycle": cycle,
        "mean_error": mean("error", rows),
        "median_error": statistics.median(r["error"] for r in rows) if rows else None,
        "mean_error_after_first_cycle": mean("error", late),
        "mean_error_early": mean("error", first),
        "mean_fd_norm": mean("fd_norm", rows),
        "mean_relative_error": sum(rel) / len(rel) if rel else None,
        "mean_batch_noise": mean("batch_noise", rows)
        if rows and "batch_noise" in rows[0]
        else None,
        "measured_steps": len(rows),
        "measured_after_first_cycle": len(late),
    }


def log_fit(budgets: list[int], values: list[float]) -> dict:
    """Least-squares line ``value = a + b log2 B``: slope per doubling of B and R^2."""
    xs = [math.log2(b) for b in budgets]
    mx, my = sum(xs) / len(xs), sum(values) / len(values)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True)) / sxx
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, values, strict=True))
    ss_tot = sum((y - my) ** 2 for y in values)
    return {
        "intercept": a,
        "slope_per_doubling": b,
        "r2": 1 - ss_res / ss_tot if ss_tot > 0 else None,
    }


def markdown(result: dict) -> str:
    f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    s = result["settings"]
    lines = [
        f"SARCOS, {s['model']} ({s['parameters']:,} parameters), lr {s['lr']:g}, momentum "
        f"{s['momentum']:g}, eps {s['eps']:g}, weight decay {s['weight_decay']:g}, batch "
        f"{s['batch']}, seed {s['seed']}; {s['steps']} steps per B, error measured every "
        f"{s['every']} steps. {result['machine']}, torch {result['torch']}, commit "
        f"{result['commit']}.",
        "",
        "| B | B / n | steps per cycle | status | mean error | median error "
        f"| mean error after cycle 1 | mean error, steps 1-{s['early']} | mean grad_eps norm "
        "| mean relative error | mean batch noise | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        sm = r["summary"]
        lines.append(
            f"| {r['budget']} | {100 * r['budget'] / s['parameters']:.1f}% "
            f"| {sm['steps_per_cycle']} | {r['status']} | {f(sm['mean_error'])} "
            f"| {f(sm['median_error'])} | {f(sm['mean_error_after_first_cycle'])} "
            f"| {f(sm['mean_error_early'])} "
            f"| {f(sm['mean_fd_norm'])} | {f(sm['mean_relative_error'], 3)} "
            f"| {f(sm.get('mean_batch_noise'))} | {r['seconds']:.0f} |"
        )
    lines.append("")
    slope = (PAPER_ENDS[2048] - PAPER_ENDS[16]) / 7
    for key, fit in result["fits"].items():
        lines.append(
            f"Line fit of the {key.replace('_', ' ')} against log2 B: slope "
            f"{fit['slope_per_doubling']:.2f} per doubling, R^2 {f(fit['r2'], 3)} "
            f"(paper: about {slope:.2f} per doubling, R^2 about 1)."
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> str:
    """Left, the paper's layout: average error against B (log-x), with the paper's ends.
    Right: the error at each measured step, one line per B."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, s = result["runs"], result["settings"]
    budgets = [r["budget"] for r in runs]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    values = list(PAPER_ENDS.values())
    for key, label, marker in (
        ("mean_error", "mean, all measured steps", "o"),
        ("median_error", "median, all measured steps", "^"),
        ("mean_error_after_first_cycle", "mean after the first cycle", "s"),
        ("mean_error_early", f"mean, steps 1-{s['early']}", "v"),
        ("mean_batch_noise", "mini-batch noise (mean)", "x"),
    ):
        pts = [(b, r["summary"].get(key)) for b, r in zip(budgets, runs, strict=True)]
        pts = [(b, v) for b, v in pts if v is not None]
        if pts:
            name = label if key == "mean_batch_noise" else f"CoCD, {label}"
            ax.plot(*zip(*pts, strict=True), marker=marker, label=name)
            values += [v for _, v in pts]
    ends = sorted(PAPER_ENDS.items())
    ax.plot(*zip(*ends, strict=True), "k--", lw=1, label="paper (read off its figure)")
    ax.set_xscale("log", base=2)
    if max(values) > 20 * min(values):  # a blow-up would flatten everything else
        ax.set_yscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set(
        xlabel="block size B",
        ylabel=r"average $\|\hat g_t - \nabla_\epsilon f(x_t)\|$",
        title=f"{s['parameters']:,}-parameter SARCOS MLP, lr {s['lr']:g}, {s['steps']} steps",
    )
    ax.legend(fontsize=8)
    colours = plt.cm.viridis([k / max(1, len(runs) - 1) for k in range(len(runs))])
    for r, colour in zip(runs, colours, strict=True):
        rows = r["measurements"]
        ax2.plot([m["step"] for m in rows], [m["error"] for m in rows], color=colour,
                 lw=1, label=f"B = {r['budget']}")  # fmt: skip
    ax2.set(yscale="log", xlabel="step t", ylabel=r"$\|\hat g_t - \nabla_\epsilon f(x_t)\|$",
            title="at each measured step")  # fmt: skip
    ax2.legend(fontsize=7, ncol=2)
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_budgets(text: str) -> list[int]:
    try:
        budgets = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise SystemExit(f"--budgets must be comma-separated integers, got {text!r}") from None
    if not budgets or min(budgets) < 1:
        raise SystemExit(f"--budgets must be positive integers, got {text!r}")
    return budgets


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.grad_error",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="block sizes B")
    p.add_argument("--steps", type=int, default=550, help="CoCD steps per B (55 per epoch)")
    p.add_argument("--every", type=int, default=11, help="measure every K steps")
    p.add_argument("--hidden", type=int, default=32, help="MLP width (32: 4,103 parameters)")
    p.add_argument("--lr", type=float, default=None, help="default: the preset's (1e-3)")
    p.add_argument(
        "--noise",
        action="store_true",
        help="also measure the mini-batch noise at x_t (one more full gradient per measurement)",
    )
    p.add_argument("--early", type=int, default=EARLY, help="also average over steps 1..N")
    p.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    p.add_argument("--data", default=None, help="data folder (as benchmarks.paper)")
    p.add_argument("--out", default=OUT, help="JSON path (.md and .png beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--replot", action="store_true", help="redo --out's table and plot, no run")
    common.show_defaults(p)
    args = p.parse_args(argv)
    if args.replot:
        with open(args.out) as fh:
            return finish(json.load(fh), os.path.splitext(args.out)[0])
    budgets = parse_budgets(args.budgets)
    for key in ("steps", "every", "hidden"):
        if getattr(args, key) < 1:
            raise SystemExit(f"--{key} must be >= 1, got {getattr(args, key)}")
    if os.path.exists(args.out) and not args.overwrite:
        raise SystemExit(f"{args.out} exists: pass --overwrite to replace it, or another --out")
    preset = ["--preset", "paper-sarcos", "--seed", str(args.seed)]
    if args.lr is not None:
        preset += ["--lr", repr(args.lr)]
    s = paper.resolve_settings(paper.parse_args(preset))
    torch.set_num_threads(s["threads"])
    try:
        ds = data_mod.load("sarcos", args.data, standardise_targets=False)
    except data_mod.DataError as err:
        raise SystemExit(f"error: {err}") from None
    # benchmarks.paper's batch order: a fresh permutation per epoch from one seeded generator
    gen = torch.Generator().manual_seed(s["seed"])
    batch, rows = s["batch"], len(ds.x_train)
    per_epoch = rows // batch
    batches = []
    while len(batches) < args.steps:
        perm = torch.randperm(rows, generator=gen)
        for i in range(min(per_epoch, args.steps - len(batches))):
            idx = perm[i * batch : (i + 1) * batch]
            batches.append((ds.x_train[idx], ds.y_train[idx]))
    torch.manual_seed(s["seed"])
    init = models.sarcos_mlp(hidden=args.hidden)
    n = models.count_parameters(init)
    s.update(
        model=f"sarcos_mlp(hidden={args.hidden})",
        parameters=n,
        data=ds.source,
        steps=args.steps,
        every=args.every,
        steps_per_epoch=per_epoch,
        budgets=budgets,
        noise=args.noise,
        early=args.early,
    )
    print(
        f"{ds.describe()}\n{s['model']}: {n:,} parameters; lr {s['lr']:g}, momentum "
        f"{s['momentum']:g}, eps {s['eps']:g}, weight decay {s['weight_decay']:g}, batch "
        f"{batch}; {args.steps} steps per B, measured every {args.every}",
        flush=True,
    )
    result = {
        "figure": "paper Appendix B, Figure 5: gradient error vs B",
        "command": "python -m benchmarks.grad_error "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": paper.device_name("cpu"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": paper.git_commit(),
        "settings": s,
        "paper": {"about": PAPER_ENDS, "shape": "falls linearly in log B"},
        "runs": [],
    }
    stem = os.path.splitext(args.out)[0]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for budget in budgets:
        model = models.sarcos_mlp(hidden=args.hidden)
        model.load_state_dict(init.state_dict())
        run = train_and_measure(model, batches, s, min(budget, n), args.every, args.noise)
        run["budget"] = budget
        run["summary"] = summarise(run, n, args.early)
        result["runs"].append(run)
        sm = run["summary"]
        print(
            f"B {budget:5d}: mean error {sm['mean_error']:.3f}, after cycle 1 "
            f"{sm['mean_error_after_first_cycle']}, {run['status']}, "
            f"{run['seconds']:.0f} s",
            flush=True,
        )
        paper.write_json(result, stem)
    return finish(result, stem)


def finish(result: dict, stem: str) -> dict:
    """Summaries, line fits, the markdown table and the plot of a finished result."""
    n = result["settings"]["parameters"]
    early = result["settings"].setdefault("early", EARLY)
    for run in result["runs"]:
        run["summary"] = summarise(run, n, early)
    result["fits"] = {}
    for key in ("mean_error", "median_error", "mean_error_after_first_cycle", "mean_error_early"):
        pts = [(r["budget"], r["summary"][key]) for r in result["runs"]]
        pts = [(b, v) for b, v in pts if v is not None]
        if len(pts) >= 2:
            result["fits"][key] = log_fit(*map(list, zip(*pts, strict=True)))
    result["summarised_at_commit"] = paper.git_commit()
    paper.write_json(result, stem)
    table = markdown(result)
    paper.write_markdown(table, stem)
    print("\n" + table)
    try:
        print("plot:", plot(result, stem + ".png"))
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
    print(f"results: {stem}.json, {stem}.md")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

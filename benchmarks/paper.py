"""The paper's experiments as one command: CoCD against its peers, on real data, with plots.

    python -m benchmarks.paper --task {digits,sarcos,mnist,cifar10}
        --optimizers cocd,bccd,spsa,zosgd,mezo,sgd,hybridcd,hybridcd-zo --epochs N
        --device {cpu,cuda}
        [--seed S] [--out DIR] [--data DIR] [--max-steps-per-epoch K] ...

Every optimizer starts from the same initial weights and sees the same mini-batches.
Per step the zeroth-order methods get the same budget of function evaluations: CoCD and
BCCD refresh B coordinates (2B evaluations, central differences), SPSA, ZO-SGD and MeZO
average q = B random directions (2q = 2B evaluations). SGD (backprop, the first-order
oracle) is counted as 1 evaluation per step (one forward + backward). HybridCD
(``cocd_cuda.baselines.HybridCD``, arXiv 2408.01374) spends what its line searches need:
``hybridcd`` takes exact gradients (1 forward + backward, counted as 1, like SGD) and
``hybridcd-zo`` central differences (2 evaluations per coordinate), each plus 2 per
line-search point; its evaluations per step are counted as they happen and vary. Each
step's evaluations all use one fixed mini-batch.

Writes ``<out>/<task>-<device>.json`` (``<task>-<model>-<device>`` for a non-default
model), a markdown table (``.md``) and two PNG plots (the metric against epochs and
against function evaluations); prints the table and the paths. ``--out`` defaults to a
new folder under ``./cocd-results/``; the committed results are in ``benchmarks/results``.
See docs/paper.md for the settings and where they come from.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

import torch
from torch.nn import functional as F

import cocd_cuda
from cocd_cuda import baselines

from . import common, models
from . import data as data_mod

OPTIMIZERS = ("cocd", "bccd", "spsa", "zosgd", "mezo", "sgd", "hybridcd", "hybridcd-zo")
RANDOM_PEERS = {"spsa": baselines.SPSA, "zosgd": baselines.ZOSGD, "mezo": baselines.MeZO}
HYBRID = {"hybridcd": "exact", "hybridcd-zo": "zeroth"}  # name -> HybridCD's gradient

# Paper settings (ICML 2026, main experiments: 50 epochs, batch 64 for SARCOS and 128 for
# classification, aligned lr and weight decay across CoCD, BCCD and SGD). BCCD is CoCD with
# momentum 0 and otherwise the same settings, radius included (ALGORITHM.md's definition);
# --bccd-eps sets another radius. digits is this package's embedded default, not the paper's.
TASKS: dict[str, dict] = {
    "digits": dict(
        model="digits_mlp",
        lr=0.05,
        momentum=0.99,
        eps=0.1,
        budget=128,
        batch=64,
        epochs=50,
        bccd_eps=None,  # None: the same radius as CoCD
        threads=1,
        source="embedded default (this package's choice, not from the paper)",
    ),
    "sarcos": dict(
        model="sarcos_mlp",
        lr=1e-3,
        momentum=1.0,
        eps=1.0,
        budget=64,
        batch=64,
        epochs=50,
        bccd_eps=None,
        threads=1,
        source="paper",
    ),
    "mnist": dict(
        model="mnist_cnn",
        lr=1e-2,
        momentum=0.99,
        eps=0.1,
        budget=256,
        batch=128,
        epochs=50,
        bccd_eps=None,
        threads=None,
        source="paper",
    ),
    "cifar10": dict(
        model="cifar10_cnn",
        lr=1e-2,
        momentum=0.99,
        eps=0.1,
        budget=1024,
        batch=128,
        epochs=50,
        bccd_eps=None,
        threads=None,
        source="paper",
    ),
}
# The paper's ResNet-20 scale-up run: B 2048, eps 1.0, momentum up to 0.95, 10 epochs.
MODEL_SETTINGS = {
    ("cifar10", "resnet20"): dict(budget=2048, eps=1.0, momentum=0.95, epochs=10),
}
DEFAULT_ZO_EPS = 1e-3  # random peers: MeZO's default radius (a direction has norm ~sqrt(n))

# Paper-faithful presets (--preset): everything PAPER.md states for each experiment on top
# of the task's Table 1 settings (weight decay, BCCD's radius 1e-6, SGD momentum 0.9, the
# 3-conv + 1-FC CNN, raw SARCOS torques, 50 epochs). Where the paper is silent the choice
# is documented in docs/REPRODUCTION.md. Command-line flags still override a preset.
REPRODUCTION = os.path.join(common.RESULTS, "reproduction")
PAPER_COMMON = dict(bccd_eps=1e-6, sgd_momentum=0.9, epochs=50, optimizers="cocd,bccd,sgd")
PRESETS: dict[str, dict] = {
    "paper-sarcos": dict(
        PAPER_COMMON, task="sarcos", model="sarcos_mlp", weight_decay=1e-4, sarcos_targets="raw"
    ),
    "paper-mnist": dict(PAPER_COMMON, task="mnist", model="mnist_paper_cnn_bn", weight_decay=1e-4),
    "paper-cifar10": dict(
        PAPER_COMMON, task="cifar10", model="cifar10_paper_cnn_bn", weight_decay=5e-4
    ),
    # Figure 6 (Appendix E): ResNet-20, lr 0.1, weight decay 1e-4, B 2048, eps 1, 10 epochs,
    # momentum in {0.5, 0.9, 0.95} (0.9 here; --momentum for the others) and BCCD.
    "paper-resnet20": dict(
        PAPER_COMMON,
        task="cifar10",
        model="resnet20",
        lr=0.1,
        weight_decay=1e-4,
        momentum=0.9,
        budget=2048,
        eps=1.0,
        epochs=10,
        optimizers="cocd,bccd",
    ),
}


# ----------------------------------------------------------------------- settings
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.paper",
        description="The paper's experiments: CoCD vs BCCD, SPSA, ZO-SGD, MeZO, SGD and HybridCD.",
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="the paper's own settings for one experiment (flags still override); "
        "results go to benchmarks/results/reproduction/",
    )
    p.add_argument("--task", default="digits", choices=sorted(TASKS))
    p.add_argument(
        "--optimizers",
        default="cocd,bccd,spsa",
        help=f"comma-separated, from {','.join(OPTIMIZERS)} (default: cocd,bccd,spsa)",
    )
    p.add_argument("--epochs", type=int, default=None, help="default: the task's")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out", default=None, help="output folder (default: a new ./cocd-results/paper-<time>)"
    )
    p.add_argument(
        "--data", default=None, help=f"data folder (default ${data_mod.ENV}, then ../shared/data)"
    )
    p.add_argument("--model", default=None, help="cifar10: cifar10_cnn (default) or resnet20")
    p.add_argument("--lr", type=float, default=None, help="CoCD, BCCD and SGD (aligned)")
    p.add_argument("--momentum", type=float, default=None, help="CoCD's gamma")
    p.add_argument("--eps", type=float, default=None, help="CoCD's radius")
    p.add_argument("--bccd-eps", type=float, default=None, help="BCCD's radius")
    p.add_argument("--budget", type=int, default=None, help="B (and q for the random peers)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--weight-decay", type=float, default=0.0, help="aligned across all")
    p.add_argument("--zo-lr", type=float, default=None, help="SPSA/ZO-SGD/MeZO lr (default: --lr)")
    p.add_argument("--zo-eps", type=float, default=DEFAULT_ZO_EPS, help="SPSA/ZO-SGD/MeZO radius")
    p.add_argument("--sgd-momentum", type=float, default=0.0)
    p.add_argument("--hybrid-threshold", type=float, default=1e-2, help="HybridCD's threshold dw")
    p.add_argument(
        "--hybrid-alpha",
        type=float,
        default=1.0,
        help="HybridCD's alpha (1: its gradient step is SGD's at the aligned --lr)",
    )
    p.add_argument(
        "--sarcos-targets",
        default="standardised",
        choices=["standardised", "raw"],
        help="SARCOS torques standardised (default) or in original units (the paper's scale)",
    )
    p.add_argument("--backend", default="auto", choices=["auto", "native", "reference"])
    p.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "layered", "batched", "sequential"],
        help="how CoCD/BCCD evaluate their points (cocd_cuda.ModelObjective)",
    )
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help="cap to save time")
    p.add_argument("--train-limit", type=int, default=None, help="use N training rows")
    p.add_argument("--test-limit", type=int, default=None, help="use N test rows (random)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the per-epoch checkpoints (bit for bit; --epochs may grow)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing results")
    p.add_argument(
        "--checkpoints",
        default=None,
        help="checkpoint folder (default <out>/checkpoints/<name>; kept out of git)",
    )
    common.show_defaults(p)
    known, _ = p.parse_known_args(argv)
    if known.preset:
        p.set_defaults(out=REPRODUCTION, **PRESETS[known.preset])
    args = p.parse_args(argv)
    names = [s.strip() for s in args.optimizers.split(",") if s.strip()]
    unknown = [s for s in names if s not in OPTIMIZERS]
    if unknown or not names:
        p.error(f"unknown optimizer(s) {unknown}; choose from {','.join(OPTIMIZERS)}")
    if len(set(names)) != len(names):
        p.error("an optimizer is listed twice")
    args.optimizers = names
    return args


def resolve_settings(args: argparse.Namespace) -> dict:
    """The task's defaults, overridden by the command line; everything that was used."""
    base = dict(TASKS[args.task])
    model = args.model or base["model"]
    if model not in models.BUILDERS:
        raise SystemExit(f"unknown --model {model!r}; one of {sorted(models.BUILDERS)}")
    base.update(MODEL_SETTINGS.get((args.task, model), {}))
    s = {
        "task": args.task,
        "model": model,
        "defaults_from": base["source"],
        "lr": args.lr if args.lr is not None else base["lr"],
        "momentum": args.momentum if args.momentum is not None else base["momentum"],
        "eps": args.eps if args.eps is not None else base["eps"],
        "budget": args.budget if args.budget is not None else base["budget"],
        "batch": args.batch if args.batch is not None else base["batch"],
        "epochs": args.epochs if args.epochs is not None else base["epochs"],
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "max_steps_per_epoch": args.max_steps_per_epoch,
        "train_limit": args.train_limit,
        "test_limit": args.test_limit,
        "backend": args.backend,
        "strategy": args.strategy,
        "sgd_momentum": args.sgd_momentum,
        "zo_eps": args.zo_eps,
    }
    if any(name in HYBRID for name in args.optimizers):
        s["hybrid_threshold"], s["hybrid_alpha"] = args.hybrid_threshold, args.hybrid_alpha
    if args.task == "sarcos":
        s["sarcos_targets"] = args.sarcos_targets
    s["bccd_eps"] = (
        args.bccd_eps
        if args.bccd_eps is not None
        else (base["bccd_eps"] if base["bccd_eps"] is not None else s["eps"])
    )
    s["zo_lr"] = args.zo_lr if args.zo_lr is not None else s["lr"]
    s["threads"] = args.threads if args.threads is not None else base["threads"]
    for key in ("epochs", "budget", "batch"):
        if s[key] < 1:
            raise SystemExit(f"--{key} must be >= 1, got {s[key]}")
    return s


# ----------------------------------------------------------------------- training
def make_optimizer(name: str, params, s: dict):
    """(optimizer, function evaluations per step) for one optimizer name.

    HybridCD's evaluations per step vary: None, and they are read from its counter.
    """
    params = list(params)
    if name in ("cocd", "bccd"):
        memory = None  # s["memory"]: the memory ratio M = m / n (sweeps); None keeps m = n
        if s.get("memory") is not None:
            n = sum(p.numel() for p in params)
            memory = max(s["budget"], round(s["memory"] * n))
        opt = cocd_cuda.CoCD(
            params,
            lr=s["lr"],
            weight_decay=s["weight_decay"],
            eps=s["eps"] if name == "cocd" else s["bccd_eps"],
            compute_budget=s["budget"],
            momentum=s["momentum"] if name == "cocd" else 0.0,
            memory_budget=memory,
            backend=s["backend"],
        )
        return opt, 2 * opt.compute_budget
    if name in RANDOM_PEERS:
        opt = RANDOM_PEERS[name](
            params,
            lr=s["zo_lr"],
            eps=s["zo_eps"],
            num_directions=s["budget"],
            weight_decay=s["weight_decay"],
            seed=s["seed"],
        )
        return opt, opt.evaluations_per_step
    if name == "sgd":
        # torch's coupled weight decay equals CoCD's decoupled one when momentum is 0
        opt = torch.optim.SGD(
            params, lr=s["lr"], momentum=s["sgd_momentum"], weight_decay=s["weight_decay"]
        )
        return opt, 1
    if name in HYBRID:
        # lr aligned with the others; eps (zeroth-order) is CoCD's coordinate radius.
        # HybridCD has no weight decay: the run records 0 (see hyperparameters)
        if s["weight_decay"]:
            _say(f"  {name}: HybridCD has no weight decay; it trains without it")
        opt = baselines.HybridCD(
            params,
            threshold=s["hybrid_threshold"],
            alpha=s["hybrid_alpha"],
            lr=s["lr"],
            gradient=HYBRID[name],
            eps=s["eps"],
        )
        return opt, None
    raise ValueError(name)


def loss_function(kind: str):
    return F.cross_entropy if kind == "classification" else F.mse_loss


@torch.no_grad()
def evaluate(model, x, y, kind: str, info: dict, chunk: int = 1000) -> dict:
    """Test loss (and accuracy, or MSE in the original units for SARCOS), eval mode."""
    was_training = model.training
    model.eval()
    loss_fn = loss_function(kind)
    total, correct, raw = 0.0, 0, 0.0
    y_std = torch.tensor(info["y_std"], device=x.device) if "y_std" in info else None
    for i in range(0, len(x), chunk):
        out = model(x[i : i + chunk])
        yy = y[i : i + chunk]
        total += float(loss_fn(out, yy, reduction="sum"))
        if kind == "classification":
            correct += int((out.argmax(1) == yy).sum())
        elif y_std is not None:
            raw += float((((out - yy) * y_std) ** 2).sum())
    model.train(was_training)
    n = len(x)
    if kind == "classification":
        return {"test_loss": total / n, "test_accuracy": correct / n}
    per = n * y.shape[1]
    res = {"test_loss": total / per, "test_mse": total / per}
    if y_std is not None:
        res["test_mse_original_units"] = raw / per
    return res


def finite(value) -> bool:
    return value is not None and math.isfinite(value)


# Settings that may differ between an interrupted run and its --resume.
RESUME_MAY_CHANGE = ("epochs", "threads")


def _save_checkpoint(path: str, state: dict) -> None:
    """Write atomically: an interruption mid-write leaves the previous checkpoint intact."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def _load_checkpoint(path: str, name: str, s: dict) -> dict:
    saved = torch.load(path, weights_only=False)  # this script's own file
    old = {k: v for k, v in saved["settings"].items() if k not in RESUME_MAY_CHANGE}
    new = {k: v for k, v in s.items() if k not in RESUME_MAY_CHANGE}
    if old != new:
        diff = {k: (old.get(k), new.get(k)) for k in old.keys() | new.keys()
                if old.get(k) != new.get(k)}  # fmt: skip
        raise SystemExit(
            f"--resume: checkpoint {path} ({name}) was made with other settings "
            f"(saved, now): {diff}. Use the same flags, or --overwrite to start again."
        )
    return saved


def train_one(
    name: str,
    init_model,
    ds,
    s: dict,
    device: str,
    progress: bool,
    checkpoint: str | None = None,
    resume: bool = False,
    on_epoch=None,
) -> dict:
    """Train a copy of init_model with one optimizer; the run's record.

    With ``checkpoint`` the state (model, optimizer, batch order, curve) is saved after every
    epoch; ``resume`` continues from it exactly where it stopped. ``on_epoch(record)`` gets
    the record so far after each epoch (for partial results).
    """
    model = copy.deepcopy(init_model).to(device)
    model.train()
    opt, per_step = make_optimizer(name, model.parameters(), s)
    kind = ds.kind
    loss_fn = loss_function(kind)
    x, y = ds.x_train.to(device), ds.y_train.to(device)
    xt, yt = ds.x_test.to(device), ds.y_test.to(device)
    n_rows, batch = len(x), min(s["batch"], len(x))
    steps = max(1, n_rows // batch)
    if s["max_steps_per_epoch"]:
        steps = min(steps, s["max_steps_per_epoch"])
    # CoCD and BCCD evaluate their 2B points through the evaluation engine (layered or
    # batched, exact); the random peers perturb every coordinate, so they call a closure.
    objective = None
    if name in ("cocd", "bccd", *HYBRID):  # HybridCD batches its line-search points
        objective = cocd_cuda.ModelObjective(
            model, loss_fn, x[:batch], y[:batch], strategy=s["strategy"]
        )
    metric = "test_accuracy" if kind == "classification" else "test_mse"
    gen = torch.Generator().manual_seed(s["seed"])  # same batches for every optimizer
    per_epoch = [
        {"epoch": 0, "train_loss": None, **evaluate(model, xt, yt, kind, ds.info)}
        | {"seconds": 0.0, "evaluations": 0, "steps": 0}
    ]
    evaluations, total_steps, status, error = 0, 0, "ok", None
    first = 1
    if resume and checkpoint and os.path.isfile(checkpoint):
        saved = _load_checkpoint(checkpoint, name, s)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        per_epoch, evaluations = saved["per_epoch"], saved["evaluations"]
        total_steps = saved["steps"]
        status, error = saved["status"], saved["error"]
        first = saved["epoch"] + 1 if status == "ok" else s["epochs"] + 1
        _say(f"  {name}: resumed after epoch {saved['epoch']} ({checkpoint})")

    def record(final_status: str) -> dict:
        return _record(name, per_epoch, metric, final_status, error, evaluations, per_step,
                       total_steps, steps, hyperparameters(name, s, opt))  # fmt: skip

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    bar = _progress(s["epochs"] * steps, f"{s['task']} {name}", progress, (first - 1) * steps)
    for epoch in range(first, s["epochs"] + 1):
        perm = torch.randperm(n_rows, generator=gen).to(device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        done = 0
        sync()
        t0 = time.perf_counter()
        try:
            for i in range(steps):
                idx = perm[i * batch : (i + 1) * batch]
                xb, yb = x[idx], y[idx]
                if name == "sgd":
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(xb), yb)
                    loss.backward()
                    opt.step()
                    loss = loss.detach()
                elif objective is not None:
                    objective.set_batch(xb, yb)  # one fixed mini-batch for the whole step
                    before = getattr(opt, "evaluations", 0)
                    loss = opt.step(objective)
                else:
                    loss = opt.step(lambda xb=xb, yb=yb: loss_fn(model(xb), yb))
                loss_sum += loss.to(torch.float64)
                done += 1
                evaluations += per_step if per_step is not None else opt.evaluations - before
                bar.update(1)
        except FloatingPointError as err:
            status = f"diverged in epoch {epoch} (step {total_steps + done + 1}): non-finite loss"
            error = str(err)
        sync()
        seconds = time.perf_counter() - t0
        total_steps += done
        train_loss = float(loss_sum) / done if done else None
        if status == "ok" and not finite(train_loss):
            status = f"diverged in epoch {epoch}: non-finite training loss"
        if status == "ok":
            row = {"epoch": epoch, "train_loss": train_loss,
                   **evaluate(model, xt, yt, kind, ds.info)}  # fmt: skip
            row |= {"seconds": seconds, "evaluations": evaluations, "steps": total_steps}
            per_epoch.append(row)
            if not finite(row[metric]) or not finite(row["test_loss"]):
                status = f"diverged in epoch {epoch}: non-finite test {metric}"
        if checkpoint:
            _save_checkpoint(checkpoint, {
                "epoch": epoch, "settings": s, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "generator": gen.get_state(),
                "per_epoch": per_epoch, "evaluations": evaluations, "steps": total_steps,
                "status": status, "error": error})  # fmt: skip
        if status != "ok":
            break
        if on_epoch is not None and epoch < s["epochs"]:
            on_epoch(record(f"incomplete: {epoch} of {s['epochs']} epochs"))
        bar.set_postfix_str(f"train {train_loss:.4g} {metric} {row[metric]:.4g}")
        every = max(1, s["epochs"] // 5)
        if epoch % every == 0 or epoch == s["epochs"]:
            _say(
                f"  {name:5s} epoch {epoch:3d}/{s['epochs']}: train loss {train_loss:.4g}, "
                f"{metric} {row[metric]:.4g}, {seconds:.2f} s, {evaluations:,} evaluations",
                bar,
            )
    bar.close()
    return record(status)


def _record(name, per_epoch, metric, status, error, evaluations, per_step, total_steps, steps,
            hyper) -> dict:  # fmt: skip
    """One optimizer's run as it goes into the JSON."""
    trained = [r for r in per_epoch if r["epoch"] > 0]
    if per_step is None:  # varies (HybridCD): the mean so far
        per_step = round(evaluations / total_steps, 1) if total_steps else None
    return {
        "optimizer": name,
        "metric": metric,
        "final": None if status.startswith("diverged") else per_epoch[-1][metric],
        "per_epoch": per_epoch,
        "seconds_per_epoch": (sum(r["seconds"] for r in trained) / len(trained))
        if trained
        else None,
        "evaluations": evaluations,
        "evaluations_per_step": per_step,
        "steps": total_steps,
        "steps_per_epoch": steps,
        "status": status,
        "error": error,
        "hyperparameters": hyper,
    }


def hyperparameters(name: str, s: dict, opt) -> dict:
    wd = s["weight_decay"]
    if name in ("cocd", "bccd"):
        return {"lr": s["lr"], "weight_decay": wd,
                "momentum": s["momentum"] if name == "cocd" else 0.0,
                "eps": s["eps"] if name == "cocd" else s["bccd_eps"],
                "compute_budget": opt.compute_budget, "backend": opt.backend}  # fmt: skip
    if name in RANDOM_PEERS:
        return {"lr": s["zo_lr"], "weight_decay": wd, "eps": s["zo_eps"],
                "num_directions": s["budget"], "seed": s["seed"]}  # fmt: skip
    if name in HYBRID:
        return {"lr": s["lr"], "weight_decay": 0.0, "threshold": opt.defaults["threshold"],
                "alpha": opt.defaults["alpha"], "gradient": opt.gradient,
                "eps": opt.eps if opt.gradient == "zeroth" else None, "tries": opt.tries,
                "evaluation": "1 forward+backward counted as 1" if opt.gradient == "exact"
                else "every closure value"}  # fmt: skip
    return {"lr": s["lr"], "weight_decay": wd, "momentum": s["sgd_momentum"],
            "evaluation": "1 forward+backward counted as 1"}  # fmt: skip


class _NoBar:
    def update(self, n=1): ...
    def set_postfix_str(self, s): ...
    def close(self): ...


def _progress(total: int, desc: str, enabled: bool, initial: int = 0):
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # optional: the run works without it
        return _NoBar()
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def _say(text: str, bar=None) -> None:
    if bar is not None and not isinstance(bar, _NoBar):
        bar.write(text)
    else:
        print(text, flush=True)


# ----------------------------------------------------------------------- outputs
def git_commit() -> str:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, text=True, stderr=subprocess.DEVNULL
        ).strip()
        dirty = subprocess.check_output(
            ["git", "status", "--porcelain", "--", "cocd_cuda", "csrc", "benchmarks"],
            cwd=repo,
            text=True,
            stderr=subprocess.DEVNULL,
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f"{model}, {os.cpu_count()} cores, {threads} torch thread{'s' * (threads != 1)}"


def _json_safe(obj):
    """Non-finite floats become null: the JSON stays standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _fmt(value, metric: str) -> str:
    if value is None:
        return "-"
    if metric == "test_accuracy":
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"


def _mse_label(s: dict) -> str:
    raw = s.get("sarcos_targets") == "raw"
    return "test MSE (original units)" if raw else "test MSE (standardised targets)"


def markdown_table(result: dict) -> str:
    s = result["settings"]
    runs = result["runs"]
    metric = runs[0]["metric"] if runs else "test_accuracy"
    label = "test accuracy" if metric == "test_accuracy" else _mse_label(s)
    lower = metric != "test_accuracy"
    lines = [
        f"**{s['task']}** ({s['model']}, {s['parameters']:,} parameters; {s['data']}), "
        f"{result['device']} ({result['device_name']}), torch {result['torch']}, "
        f"commit {result['commit']}. "
        f"{s['epochs']} epochs x {s['steps_per_epoch']} steps, batch {s['batch']}, "
        f"B = q = {s['budget']} ({100 * s['budget'] / s['parameters']:.2f}% of the "
        f"parameters), lr {s['lr']:g}, CoCD momentum {s['momentum']:g}, eps {s['eps']:g}, "
        f"BCCD eps {s['bccd_eps']:g}, random peers lr {s['zo_lr']:g} eps {s['zo_eps']:g}, "
        f"weight decay {s['weight_decay']:g}, seed {s['seed']}.",
        "",
        f"| optimizer | final {label} | best | final test loss | final train loss "
        "| s / epoch | evaluations | per step | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        vals = [e[metric] for e in r["per_epoch"][1:] if finite(e.get(metric))]
        best = (min(vals) if lower else max(vals)) if vals else None
        last = r["per_epoch"][-1]
        extra = {"sgd": " (1 = fwd+bwd)", "hybridcd": " (mean; 1 = fwd+bwd)",
                 "hybridcd-zo": " (mean)"}.get(r["optimizer"], "")  # fmt: skip
        sec = r["seconds_per_epoch"]
        ok = r["status"] == "ok"
        test_loss = _fmt(last["test_loss"] if ok else None, "loss")
        train_loss = _fmt(last["train_loss"] if ok else None, "loss")
        lines.append(
            f"| {r['optimizer']} | {_fmt(r['final'], metric)} | {_fmt(best, metric)} "
            f"| {test_loss} | {train_loss} "
            f"| {'-' if sec is None else f'{sec:.2f}'} | {r['evaluations']:,} "
            f"| {r['evaluations_per_step']}{extra} | {r['status']} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, stem: str) -> list[str]:
    """Two PNGs: test metric and train loss against epochs, and against evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    metric = runs[0]["metric"]
    ylabel = "test accuracy" if metric == "test_accuracy" else _mse_label(result["settings"])
    paths = []
    for axis, fname in (("epoch", "epochs"), ("evaluations", "evaluations")):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        positive = {"x": False, "y1": False, "y2": False}  # log scales need positive data
        for r in runs:
            rows = r["per_epoch"] if axis == "epoch" else r["per_epoch"][1:]
            label = r["optimizer"] + ("" if r["status"] == "ok" else " (diverged)")
            if r["optimizer"] in ("sgd", "hybridcd") and axis == "evaluations":
                label += " (1 eval = fwd+bwd)"
            te = [(e[axis], e[metric]) for e in rows if finite(e[metric])]
            tr = [(e[axis], e["train_loss"]) for e in rows if finite(e["train_loss"])]
            ax1.plot([a for a, _ in te], [b for _, b in te], marker=".", label=label)
            ax2.plot([a for a, _ in tr], [b for _, b in tr], marker=".", label=label)
            positive["x"] |= any(a > 0 for a, _ in te + tr)
            positive["y1"] |= any(b > 0 for _, b in te)
            positive["y2"] |= any(b > 0 for _, b in tr)
        for ax in (ax1, ax2):
            ax.set_xlabel("epoch" if axis == "epoch" else "function evaluations")
            if axis == "evaluations" and positive["x"]:
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
        ax1.set_ylabel(ylabel)
        if metric != "test_accuracy" and positive["y1"]:
            ax1.set_yscale("log")
        ax2.set_ylabel("train loss (mean over the epoch's steps)")
        if positive["y2"]:
            ax2.set_yscale("log")
        ax1.legend(fontsize=8)
        s = result["settings"]
        fig.suptitle(
            f"{s['task']} ({s['model']}, {s['parameters']:,} parameters), "
            f"B = q = {s['budget']}, {result['device']}"
        )
        fig.tight_layout()
        path = f"{stem}-{fname}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def output_name(args: argparse.Namespace, s: dict, device: str) -> str:
    """<preset>-<device>, else <task>-<device> (<task>-<model>-<device> off the default)."""
    if args.preset:
        return f"{args.preset}-{device}"
    if s["model"] == TASKS[args.task]["model"]:
        return f"{args.task}-{device}"
    return f"{args.task}-{s['model']}-{device}"


def write_json(result: dict, stem: str) -> None:
    """``stem``.json, replaced atomically (a run killed mid-write leaves the old file)."""
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    with open(stem + ".json.tmp", "w") as fh:
        json.dump(_json_safe(result), fh, indent=1, allow_nan=False)
    os.replace(stem + ".json.tmp", stem + ".json")


def write_markdown(table: str, stem: str) -> None:
    """``stem``.md: the table a benchmark printed."""
    with open(stem + ".md", "w") as fh:
        fh.write(table)


# ----------------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    s = resolve_settings(args)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (torch.cuda.is_available())")
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    try:
        options = {}
        if args.task == "sarcos":
            options["standardise_targets"] = args.sarcos_targets == "standardised"
        ds = data_mod.load(args.task, args.data, **options)
    except data_mod.DataError as err:
        raise SystemExit(f"error: {err}") from None
    gen = torch.Generator().manual_seed(s["seed"])
    if s["train_limit"] and s["train_limit"] < len(ds.x_train):
        keep = torch.randperm(len(ds.x_train), generator=gen)[: s["train_limit"]]
        ds.x_train, ds.y_train = ds.x_train[keep], ds.y_train[keep]
    if s["test_limit"] and s["test_limit"] < len(ds.x_test):
        # a random subset: test files may be sorted by class (the CIFAR-10 JPEG copy is)
        keep = torch.randperm(len(ds.x_test), generator=gen)[: s["test_limit"]]
        ds.x_test, ds.y_test = ds.x_test[keep], ds.y_test[keep]
    torch.manual_seed(s["seed"])
    init_model = models.build(s["model"])
    n = models.count_parameters(init_model)
    batch = min(s["batch"], len(ds.x_train))
    steps = max(1, len(ds.x_train) // batch)
    if s["max_steps_per_epoch"]:
        steps = min(steps, s["max_steps_per_epoch"])
    s.update(
        parameters=n,
        data=ds.source,
        train_rows=len(ds.x_train),
        test_rows=len(ds.x_test),
        steps_per_epoch=steps,
        threads=torch.get_num_threads(),
    )
    print(
        f"{ds.describe()}\nmodel {s['model']}: {n:,} parameters; B = q = {s['budget']} "
        f"({100 * s['budget'] / n:.2f}%), {2 * min(s['budget'], n)} evaluations per step; "
        f"{s['epochs']} epochs x {steps} steps of batch {batch}; device {device}",
        flush=True,
    )
    progress = not args.no_progress
    args.out = args.out or common.fresh_dir("paper")
    stem = os.path.join(args.out, output_name(args, s, device))
    if os.path.exists(stem + ".json") and not (args.resume or args.overwrite):
        raise SystemExit(
            f"{stem}.json exists: pass --resume to continue that run, --overwrite to replace "
            "it, or --out DIR to write elsewhere"
        )
    ckpt_dir = args.checkpoints or os.path.join(args.out, "checkpoints", os.path.basename(stem))
    if args.overwrite and not args.resume and os.path.isdir(ckpt_dir):
        shutil.rmtree(ckpt_dir)
    result = {
        "task": args.task,
        "preset": args.preset,
        "device": device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": git_commit(),
        "command": "python -m benchmarks.paper " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": s,
        "runs": [],
        "checkpoints": os.path.relpath(ckpt_dir),
    }
    os.makedirs(args.out, exist_ok=True)
    runs = result["runs"]
    for name in args.optimizers:
        t0 = time.perf_counter()

        def partial(record):  # the curve so far, readable while the run goes on
            write_json({**result, "runs": [*runs, record]}, stem)

        run = train_one(name, init_model, ds, s, device, progress,
                        os.path.join(ckpt_dir, f"{name}.pt"), args.resume, partial)  # fmt: skip
        run["wall_seconds"] = time.perf_counter() - t0
        runs.append(run)
        write_json(result, stem)
        final = _fmt(run["final"], run["metric"])
        print(
            f"{name}: {run['metric']} {final} after {run['steps']} steps, "
            f"{run['evaluations']:,} evaluations, {run['wall_seconds']:.1f} s ({run['status']})",
            flush=True,
        )
    table = markdown_table(result)
    write_markdown(table, stem)
    try:
        plots = plot(result, stem)
    except ImportError:
        plots = []
        print("matplotlib is not installed: no plots (pip install matplotlib)")
    print("\n" + table)
    print(f"results: {stem}.json, {stem}.md")
    if plots:
        print(f"plots:   {', '.join(plots)}")
    result["paths"] = {"json": stem + ".json", "markdown": stem + ".md", "plots": plots}
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

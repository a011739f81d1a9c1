"""cocd_cuda.minimize against scipy, CMA-ES and nevergrad on black boxes, at equal budgets.

    python -m benchmarks.blackbox [--dims 10,100,1000] [--seeds 2] [--seeds-1000 1]
        [--functions quadratic,rosenbrock,rastrigin,ode] [--time-cap 30]

Every method sees the function through one counter: it may call it ``budget`` times
(200 n evaluations in 10 dimensions, 100 n in 100, 10 n in 1,000, 500 for the ODE
fit), and its score is the lowest value among those calls (best seen, the same rule
for every method, so a method that overshoots its budget or ends early is scored the
same way). A run also stops after ``--time-cap`` seconds of wall time (recorded).

Methods: ``cocd_cuda.minimize`` (CoCD; lr and eps chosen per function and dimension
from a small grid on a separate tuning seed, the tuning runs not counted);
scipy.optimize Powell, Nelder-Mead, COBYLA and L-BFGS-B with finite-difference
gradients (defaults, untuned); CMA-ES (``cma``, sigma0 1, separable CMA in 1,000
dimensions, where the full covariance update is too slow for this CPU); nevergrad NGOpt.
The peers are the ``bench`` extras (``pip install cma nevergrad``); a missing one is
skipped with a note.

Problems: an ill-conditioned quadratic (sum_i 10^(4 i/(n-1)) x_i^2, condition 10^4,
x0 ~ N(0, I)), Rosenbrock (x0 ~ U[-2, 2]^n), Rastrigin (x0 ~ U[-5.12, 5.12]^n), and a
real black box: fitting the four log-parameters of a Lotka-Volterra model to 30 noisy
observations with scipy.integrate.solve_ivp (a failed solve scores 1e6).

Writes ``benchmarks/results/blackbox-cpu.json`` and a PNG of the median best-so-far
curves.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings

import numpy as np

from . import common


class OutOfBudget(Exception):
    pass


class Counted:
    """The function as every method sees it: counted, capped, best value recorded."""

    def __init__(self, f, budget: int, seconds: float):
        self.f, self.budget = f, budget
        self.deadline = time.perf_counter() + seconds
        self.n, self.best, self.trace, self.timed_out = 0, math.inf, [], False

    def __call__(self, x) -> float:
        if self.n >= self.budget:
            raise OutOfBudget
        if time.perf_counter() > self.deadline:
            self.timed_out = True
            raise OutOfBudget
        v = float(self.f(np.asarray(x, dtype=np.float64)))
        self.n += 1
        if v < self.best:
            self.best = v
            self.trace.append((self.n, v))
        return v


# ----------------------------------------------------------------------- problems
def quadratic(n: int):
    scales = 10.0 ** (4.0 * np.arange(n) / max(n - 1, 1))
    return lambda x: float(np.dot(scales, x * x))


def rosenbrock(n: int):
    def f(x):
        return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))

    return f


def rastrigin(n: int):
    return lambda x: float(10.0 * n + np.sum(x * x - 10.0 * np.cos(2.0 * np.pi * x)))


TRUE_LV = np.log([1.0, 0.1, 1.5, 0.075])


def lotka_volterra():
    """Loss of log-parameters against 30 noisy observations of a Lotka-Volterra system."""
    from scipy.integrate import solve_ivp

    t_obs = np.linspace(0.5, 15.0, 30)

    def simulate(logp):
        a, b, c, d = np.exp(logp)

        def rhs(_t, z):
            u, v = z
            return [a * u - b * u * v, -c * v + d * u * v]

        sol = solve_ivp(rhs, (0.0, 15.0), [10.0, 5.0], t_eval=t_obs, rtol=1e-6, atol=1e-8)
        return sol.y if sol.success and sol.y.shape[1] == t_obs.size else None

    rng = np.random.default_rng(1234)
    clean = simulate(TRUE_LV)
    observed = clean * (1.0 + 0.05 * rng.standard_normal(clean.shape))

    def f(logp):
        if not np.all(np.isfinite(logp)) or np.any(np.abs(logp) > 10):
            return 1e6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = simulate(logp)
        if y is None or not np.all(np.isfinite(y)):
            return 1e6
        return float(np.mean((y - observed) ** 2))

    return f


PROBLEMS = {"quadratic": quadratic, "rosenbrock": rosenbrock, "rastrigin": rastrigin}


def start(name: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "quadratic":
        return rng.standard_normal(n)
    if name == "rosenbrock":
        return rng.uniform(-2.0, 2.0, n)
    if name == "rastrigin":
        return rng.uniform(-5.12, 5.12, n)
    return TRUE_LV + rng.normal(0.0, 0.7, 4)  # ode


def budget_for(name: str, n: int) -> int:
    if name == "ode":
        return 500
    return {10: 200, 100: 100}.get(n, 10) * n


# ----------------------------------------------------------------------- methods
def run_cocd(f, x0, seed, settings):
    import cocd_cuda

    cocd_cuda.minimize(f, x0, max_evals=10**12, **settings)


def run_scipy(method):
    def run(f, x0, seed, settings):
        from scipy.optimize import minimize

        opts = {"Powell": dict(maxfev=10**9, maxiter=10**9, xtol=0, ftol=0),
                "Nelder-Mead": dict(maxfev=10**9, maxiter=10**9, xatol=0, fatol=0),
                "COBYLA": dict(maxiter=10**9, tol=0),
                "L-BFGS-B": dict(maxfun=10**9, maxiter=10**9, ftol=0, gtol=0)}[method]  # fmt: skip
        # the tolerances are 0 so that each method spends its whole budget if it can
        minimize(f, x0, method=method, options=opts)

    return run


def run_cma(f, x0, seed, settings):
    import cma

    opts = {"verbose": -9, "seed": seed + 1, "CMA_diagonal": len(x0) >= 1000,
            "tolfun": 0, "tolx": 0, "tolfunhist": 0, "tolstagnation": 10**9}  # fmt: skip
    es = cma.CMAEvolutionStrategy(x0, 1.0, opts)
    while not es.stop():
        X = es.ask()
        es.tell(X, [f(x) for x in X])


def run_ngopt(f, x0, seed, settings):
    import nevergrad as ng

    param = ng.p.Array(init=x0)
    param.random_state = np.random.RandomState(seed)
    opt = ng.optimizers.NGOpt(parametrization=param, budget=f.budget, num_workers=1)
    for _ in range(f.budget):
        cand = opt.ask()
        opt.tell(cand, f(cand.value))


METHODS = {
    "CoCD": run_cocd,
    "Powell": run_scipy("Powell"),
    "Nelder-Mead": run_scipy("Nelder-Mead"),
    "COBYLA": run_scipy("COBYLA"),
    "L-BFGS-B (FD)": run_scipy("L-BFGS-B"),
    "CMA-ES": run_cma,
    "NGOpt": run_ngopt,
}
NEEDS = {"CMA-ES": "cma", "NGOpt": "nevergrad"}


def one(fn, method, x0, seed, budget, cap, settings=None) -> dict:
    f = Counted(fn, budget, cap)
    t0 = time.perf_counter()
    error = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            METHODS[method](f, x0.copy(), seed, settings or {})
    except OutOfBudget:
        pass
    except Exception as exc:  # a method failing is a result too; record it
        error = f"{type(exc).__name__}: {exc}"[:200]
    return dict(best=f.best, evaluations=f.n, seconds=time.perf_counter() - t0,
                timed_out=f.timed_out, error=error, trace=f.trace)  # fmt: skip


COCD_GRID = [dict(lr=10.0**k, eps=eps, momentum=0.9) for k in range(-6, 0)
             for eps in (1e-3, 0.3)]  # fmt: skip


def tune_cocd(name, fn, n, budget, cap) -> tuple[dict, list]:
    """CoCD's lr and eps for this problem, from the grid, on tuning seed 1000."""
    x0 = start(name, n, 1000)
    trials = []
    for s in COCD_GRID:
        r = one(fn, "CoCD", x0, 1000, budget, cap, s)
        trials.append(dict(s, best=r["best"]))
    best = min(trials, key=lambda t: t["best"] if math.isfinite(t["best"]) else math.inf)
    return {k: best[k] for k in ("lr", "eps", "momentum")}, trials


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = sorted({(r["problem"], r["n"]) for r in result["runs"]}, key=lambda c: (c[0], c[1]))
    cols = 3
    rows = -(-len(cases) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (prob, n) in zip(axes.flat, cases, strict=False):
        for method in result["methods"]:
            runs = [
                r
                for r in result["runs"]
                if (r["problem"], r["n"], r["method"]) == (prob, n, method)
            ]
            if not runs:
                continue
            budget = runs[0]["budget"]
            grid = np.unique(np.geomspace(1, budget, 60).astype(int))
            curves = []
            for r in runs:
                tr = r["trace"]
                if not tr:
                    continue
                evals = np.array([e for e, _ in tr])
                vals = np.array([v for _, v in tr])
                idx = np.searchsorted(evals, grid, side="right") - 1
                curves.append(np.where(idx >= 0, vals[np.clip(idx, 0, None)], np.nan))
            if curves:
                ax.plot(grid, np.nanmedian(np.array(curves), axis=0), label=method)
        ax.set(title=f"{prob}, n = {n}", xscale="log", yscale="log", xlabel="evaluations",
               ylabel="median best f")  # fmt: skip
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(cases) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.blackbox", description=__doc__)
    p.add_argument("--dims", default="10,100,1000")
    p.add_argument("--seeds", type=int, default=2, help="seeds in 10 and 100 dimensions")
    p.add_argument("--seeds-1000", type=int, default=1, help="seeds in 1,000 dimensions")
    p.add_argument("--functions", default="quadratic,rosenbrock,rastrigin,ode")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--time-cap", type=float, default=30.0, help="seconds per run")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    methods = []
    skipped = {}
    for m in args.methods.split(","):
        try:
            if m in NEEDS:
                __import__(NEEDS[m])
            methods.append(m)
        except ImportError:
            skipped[m] = f"needs {NEEDS[m]} (pip install {NEEDS[m]})"
            print(f"skipping {m}: {skipped[m]}")
    dims = [int(d) for d in args.dims.split(",")]
    cases = []
    for name in args.functions.split(","):
        if name == "ode":
            cases.append((name, 4))
        else:
            cases += [(name, n) for n in dims]
    runs, tuning = [], {}
    for name, n in cases:
        fn = lotka_volterra() if name == "ode" else PROBLEMS[name](n)
        budget = budget_for(name, n)
        seeds = args.seeds_1000 if n >= 1000 else args.seeds
        settings, trials = tune_cocd(name, fn, n, budget, args.time_cap)
        tuning[f"{name}-{n}"] = dict(chosen=settings, trials=trials)
        for seed in range(seeds):
            x0 = start(name, n, seed)
            f0 = fn(x0)
            for m in methods:
                r = one(fn, m, x0, seed, budget, args.time_cap, settings if m == "CoCD" else None)
                r.update(problem=name, n=n, seed=seed, method=m, budget=budget, f0=f0)
                runs.append(r)
            line = "  ".join(f"{r['method']} {r['best']:.3g}" for r in runs[-len(methods) :])
            print(f"{name} n={n} seed={seed} budget={budget}: {line}", flush=True)
    # table: median best over seeds, and rank of CoCD
    print("\n| problem | n | budget | " + " | ".join(methods) + " |")
    print("|---|---|---|" + "---|" * len(methods))
    summary = []
    for name, n in cases:
        row = {}
        for m in methods:
            vals = [r["best"] for r in runs if (r["problem"], r["n"], r["method"]) == (name, n, m)]
            row[m] = statistics.median(vals)
        budget = budget_for(name, n)
        summary.append(dict(problem=name, n=n, budget=budget, median_best=row))
        best = min(row.values())
        cells = [f"**{row[m]:.3g}**" if row[m] == best else f"{row[m]:.3g}" for m in methods]
        print(f"| {name} | {n} | {budget:,} | " + " | ".join(cells) + " |")
    result = dict(
        benchmark="blackbox",
        machine=common.machine("cpu"),
        command="python -m benchmarks.blackbox " + " ".join(sys.argv[1:] if argv is None else argv),
        methods=methods,
        skipped=skipped,
        time_cap_s=args.time_cap,
        cocd_tuning=tuning,
        summary=summary,
        runs=runs,
    )
    out = common.write_result(result, args.out, "blackbox-cpu.json")
    plot(result, os.path.splitext(out)[0] + ".png")


if __name__ == "__main__":
    main()

"""One paper preset over several seeds: each seed's run and the mean and spread.

    python -m benchmarks.seeds --preset paper-sarcos [--seeds 0,1,2] [--out DIR]
        [-- any other benchmarks.paper flags]

Runs ``python -m benchmarks.paper --preset P --seed S --out DIR/seed<S>`` for each seed
(a seed sets the initial weights, the batch order and the random peers' directions; the
data split is fixed), continuing a seed's run from its checkpoints where one exists;
``--table`` only summarises the runs already there.
Then writes ``DIR/<preset>-seeds-<device>.json`` and ``.md``: per optimizer, each seed's
final and best metric and status, and the mean, sample standard deviation, minimum and
maximum over the seeds whose run finished.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

from . import paper


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value), min and max."""
    if not values:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(values) / len(values)
    std = (
        math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        if len(values) > 1
        else None
    )
    return {"count": len(values), "mean": mean, "std": std, "min": min(values), "max": max(values)}


def summarise(results: dict[int, dict]) -> dict:
    """Per optimizer: each seed's final, best and status, and the spread of the finals."""
    out = {}
    names = [r["optimizer"] for r in next(iter(results.values()))["runs"]]
    for name in names:
        per_seed = {}
        for seed, result in results.items():
            run = next(r for r in result["runs"] if r["optimizer"] == name)
            lower = run["metric"] != "test_accuracy"
            values = [e[run["metric"]] for e in run["per_epoch"][1:]]
            values = [v for v in values if paper.finite(v)]
            best = (min(values) if lower else max(values)) if values else None
            per_seed[seed] = {"final": run["final"], "best": best, "status": run["status"]}
        finals = [v["final"] for v in per_seed.values() if paper.finite(v["final"])]
        bests = [v["best"] for v in per_seed.values() if paper.finite(v["best"])]
        out[name] = {
            "metric": run["metric"],
            "seeds": per_seed,
            "final": spread(finals),
            "best": spread(bests),
        }
    return out


def markdown(summary: dict, preset: str) -> str:
    def f(v, metric):
        return paper._fmt(v, metric)

    lines = [
        f"**{preset}**, seeds {', '.join(map(str, next(iter(summary.values()))['seeds']))}.",
        "",
        "| optimizer | final per seed | final mean | final std | best per seed | statuses |",
        "|---|---|---|---|---|---|",
    ]
    for name, sm in summary.items():
        m = sm["metric"]
        finals = ", ".join(f(v["final"], m) for v in sm["seeds"].values())
        bests = ", ".join(f(v["best"], m) for v in sm["seeds"].values())
        statuses = "; ".join(v["status"] for v in sm["seeds"].values())
        std = sm["final"]["std"]
        std = (
            "-" if std is None else (f"{100 * std:.2f}%" if m == "test_accuracy" else f"{std:.3g}")
        )
        lines.append(
            f"| {name} | {finals} | {f(sm['final']['mean'], m)} | {std} | {bests} | {statuses} |"
        )
    return "\n".join(lines) + "\n"


def split_passthrough(argv) -> tuple[list[str], list[str]]:
    """(this script's arguments, the benchmarks.paper flags after ``--``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


def parse_seeds(text: str) -> list[int]:
    """Distinct comma-separated integers, or SystemExit naming the value."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds must list distinct integers, got {text!r}")
    return seeds


def main(argv=None) -> dict:
    argv, extra = split_passthrough(argv)
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", required=True, choices=sorted(paper.PRESETS))
    p.add_argument("--seeds", default="0,1,2", help="comma-separated (default: 0,1,2)")
    p.add_argument("--out", default=None, help="default: benchmarks/results/reproduction/seeds")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--table", action="store_true", help="summarise the runs in --out, run none")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    # relative to the working directory: the runs' records name no absolute path
    out = args.out or os.path.relpath(os.path.join(paper.REPRODUCTION, "seeds"))
    command = f"python -m benchmarks.seeds --preset {args.preset} --seeds {args.seeds}"
    command += "".join(f" --{k} {v}" for k, v in (("out", args.out), ("device", args.device))
                       if v is not None and v != "cpu")  # fmt: skip
    command += (" -- " + " ".join(extra)) if extra else ""
    results = {}
    for seed in seeds:
        folder = os.path.join(out, f"seed{seed}")
        path = os.path.join(folder, f"{args.preset}-{args.device}.json")
        if args.table:
            if not os.path.exists(path):
                raise SystemExit(f"--table: no run for seed {seed} ({path}); run without --table")
            with open(path) as fh:
                results[seed] = json.load(fh)
            continue
        cmd = [
            "--preset",
            args.preset,
            "--seed",
            str(seed),
            "--out",
            folder,
            "--device",
            args.device,
            "--no-progress",
            *extra,
        ]
        if os.path.exists(path):
            cmd.append("--resume")  # finished runs are kept, interrupted ones continue
        print(f"seed {seed}: python -m benchmarks.paper {' '.join(cmd)}", flush=True)
        results[seed] = paper.main(cmd)
    summary = summarise(results)
    first = results[seeds[0]]
    stem = os.path.join(out, f"{args.preset}-seeds-{args.device}")
    record = {
        "preset": args.preset,
        "seeds": seeds,
        "command": command,
        "device_name": first["device_name"],
        "torch": torch.__version__,
        "commit": paper.git_commit(),
        "run_commits": {str(seed): r["commit"] for seed, r in results.items()},
        "settings": {k: v for k, v in first["settings"].items() if k != "seed"},
        "runs": {  # relative to this file's folder
            str(seed): os.path.join(f"seed{seed}", f"{args.preset}-{args.device}.json")
            for seed in seeds
        },
        "summary": summary,
    }
    paper.write_json(record, stem)
    table = markdown(summary, args.preset)
    paper.write_markdown(table, stem)
    print("\n" + table)
    print(f"results: {stem}.json, {stem}.md")
    return record


if __name__ == "__main__":
    main()

"""Wall-clock time to reach a test accuracy: CoCD against SPSA, ZO-SGD and MeZO.

    python -m benchmarks.time_to_accuracy [--task digits] [--targets 0.9,0.95]
        [--seeds 0,1,2] [--optimizers cocd,spsa,zosgd,mezo] [--out DIR]
        [-- any other benchmarks.paper flags]

Runs ``python -m benchmarks.paper --task T --optimizers ... --seed S --out DIR/seed<S>``
for each seed: every optimizer in one process, on the same machine, the same batches and
an equal number of evaluations per step (CoCD's 2B points against q = B random directions
of two evaluations each). A seed's finished run is kept and reused. Then, per optimizer
and target, the training seconds (evaluation excluded) until the first epoch whose test
accuracy reaches the target, and the epoch; a run that never reaches it counts as not
reached. Writes ``DIR/<task>-time-to-accuracy-<device>.json``, ``.md`` and ``.png``
(test accuracy against training seconds, seed 0).
"""

from __future__ import annotations

import argparse
import json
import os

from . import paper
from .seeds import parse_seeds, split_passthrough, spread


def time_to(run: dict, target: float) -> tuple[float | None, int | None]:
    """(training seconds, epoch) at the first epoch whose accuracy reaches target."""
    seconds = 0.0
    for e in run["per_epoch"][1:]:
        seconds += e["seconds"]
        if paper.finite(e["test_accuracy"]) and e["test_accuracy"] >= target:
            return seconds, e["epoch"]
    return None, None


def summarise(results: dict[int, dict], targets: list[float]) -> dict:
    """Per optimizer and target: each seed's (seconds, epoch) and the spread of the seconds."""
    out = {}
    for name in [r["optimizer"] for r in next(iter(results.values()))["runs"]]:
        out[name] = {}
        for target in targets:
            per_seed = {}
            for seed, result in results.items():
                run = next(r for r in result["runs"] if r["optimizer"] == name)
                seconds, epoch = time_to(run, target)
                per_seed[seed] = {"seconds": seconds, "epoch": epoch}
            reached = [v["seconds"] for v in per_seed.values() if v["seconds"] is not None]
            out[name][f"{target:g}"] = {"seeds": per_seed, "seconds": spread(reached)}
    return out


def markdown(summary: dict, task: str, seeds: list[int]) -> str:
    targets = list(next(iter(summary.values())))
    head = " | ".join(f"{100 * float(t):g}%: seconds (epoch) per seed | mean" for t in targets)
    lines = [
        f"**{task}**, seeds {', '.join(map(str, seeds))}: training seconds until the test "
        "accuracy first reaches the target.",
        "",
        f"| optimizer | {head} |",
        "|---|" + "---|---|" * len(targets),
    ]
    for name, per_target in summary.items():
        cells = []
        for t in targets:
            row = per_target[t]
            each = ", ".join(
                "not reached" if v["seconds"] is None else f"{v['seconds']:.2f} ({v['epoch']})"
                for v in row["seeds"].values()
            )
            sp = row["seconds"]
            mean = "-" if sp["count"] < len(seeds) else f"{sp['mean']:.2f}"
            cells += [each, mean]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for run in result["runs"]:
        seconds, xs, ys = 0.0, [0.0], [run["per_epoch"][0]["test_accuracy"]]
        for e in run["per_epoch"][1:]:
            seconds += e["seconds"]
            xs.append(seconds)
            ys.append(e["test_accuracy"])
        ax.plot(xs, ys, label=run["optimizer"])
    for t in result.get("targets", []):
        ax.axhline(t, color="grey", lw=0.5, ls="--")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{result['task']}, seed {result['seed']}, {result['device_name']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    argv, extra = split_passthrough(argv)
    command = " ".join(
        ["python -m benchmarks.time_to_accuracy", *argv, *(["--", *extra] if extra else [])]
    )
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.time_to_accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", default="digits", choices=["digits", "mnist", "cifar10"])
    p.add_argument("--targets", default="0.9,0.95", help="test accuracies (default: 0.9,0.95)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated (default: 0,1,2)")
    p.add_argument("--optimizers", default="cocd,spsa,zosgd,mezo")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", default=None, help="default: results/reproduction/time-to-accuracy")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    try:
        targets = [float(t) for t in args.targets.split(",") if t.strip()]
    except ValueError:
        raise SystemExit(
            f"--targets must be comma-separated numbers, got {args.targets!r}"
        ) from None
    if not targets or any(not 0 < t <= 1 for t in targets):
        raise SystemExit(f"--targets must be accuracies in (0, 1], got {args.targets!r}")
    # relative to the working directory: the runs' records name no absolute path
    out = args.out or os.path.relpath(os.path.join(paper.REPRODUCTION, "time-to-accuracy"))
    results = {}
    for seed in seeds:
        folder = os.path.join(out, f"seed{seed}")
        path = os.path.join(folder, f"{args.task}-{args.device}.json")
        if not os.path.exists(path):
            paper.main(["--task", args.task, "--optimizers", args.optimizers, "--seed",
                        str(seed), "--out", folder, "--device", args.device, "--no-progress",
                        *extra])  # fmt: skip
        with open(path) as fh:
            results[seed] = json.load(fh)
    summary = summarise(results, targets)
    first = results[seeds[0]]
    record = {
        "task": args.task,
        "device": args.device,
        "device_name": first["device_name"],
        "torch": first["torch"],
        "commit": paper.git_commit(),
        "command": command,
        "settings": first["settings"],
        "targets": targets,
        "seeds": seeds,
        "summary": summary,
    }
    stem = os.path.join(out, f"{args.task}-time-to-accuracy-{args.device}")
    paper.write_json(record, stem)
    table = markdown(summary, args.task, seeds)
    paper.write_markdown(table, stem)
    print(table)
    print("plot:", plot({**first, "seed": seeds[0], "targets": targets}, stem + ".png"))
    return record


if __name__ == "__main__":
    main()

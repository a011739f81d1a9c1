"""Timing and provenance helpers shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch

RESULTS = os.path.join(os.path.dirname(__file__), "results")  # committed results


def fresh_dir(name: str) -> str:
    """A new folder ./cocd-results/<name>-<time> for one run's outputs.

    The default for every benchmark's output, so that the committed results under
    benchmarks/results change only when --out names them.
    """
    base = os.path.join("cocd-results", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    path, k = base, 1
    while os.path.exists(path):
        k += 1
        path = f"{base}-{k}"
    os.makedirs(path)
    return path


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Make --help show each option's default, unless its help text already says it."""
    parser.epilog = parser.epilog or "Run from the repository root: python -m benchmarks.<name>."
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0 or action.default is None:
            continue
        if "default" not in (action.help or "").lower():
            action.help = f"{action.help or ''} (default: %(default)s)".strip()


def timer(device: str) -> Callable[[Callable[[], object], int], float]:
    """Seconds per call of fn, over `reps` calls (synchronising around the region)."""

    def run(fn, reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    return run


def compare(
    cands: dict[str, Callable], device: str, reps: int | dict[str, int], rounds: int
) -> dict[str, float]:
    """Median seconds per call of each candidate, interleaved round by round.

    ``reps`` is calls per timing, for all candidates or per candidate name.
    """
    run = timer(device)
    count = reps if isinstance(reps, dict) else dict.fromkeys(cands, reps)
    for name, fn in cands.items():  # warm-up
        run(fn, max(1, count[name] // 4))
    samples: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(rounds):
        for name, fn in cands.items():
            samples[name].append(run(fn, count[name]))
    return {k: statistics.median(v) for k, v in samples.items()}


def machine(device: str) -> dict:
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
        dirty = bool(
            subprocess.check_output(
                ["git", "status", "--porcelain", "--", "csrc", "cocd_cuda"], text=True
            ).strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    info = {
        "device": device,
        "torch": torch.__version__,
        "commit": commit + ("+dirty" if dirty else ""),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_result(result: dict, out: str | None, default_name: str) -> str:
    """Write a benchmark's JSON to out (default: default_name in a fresh_dir)."""
    out = out or os.path.join(fresh_dir(default_name.removesuffix(".json")), default_name)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"\nwrote {out}")
    return out

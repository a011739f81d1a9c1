"""Greedy Coordinate Gradient (GCG) on discrete coordinates: a toy and a steering task.

    python -m benchmarks.gcg [--seeds 5] [--targets 20] [--budget 20000] [--out DIR]
    python -m benchmarks.gcg --replot RESULT.json   # redraw the plot of a result file

1. The published toy: vocabulary 10,000, embedding dimension 4, E standard normal with
   token 0 embedded as the zero vector, G(x) = sum of squares of the embedded sequence,
   start [0, 10], top_k = 10, 100 iterations. The optimum, 0, is [0, 0]. Against it, a
   zeroth-order cyclic coordinate search: at each position in turn, evaluate G for all
   10,000 tokens there (one vectorised call) and keep the best.
2. Steering a small randomly initialised transformer (no download): find a 10-token
   prompt whose next-token prediction (the argmax at the last position) is a given
   target, minimising the cross-entropy of the target. GCG (top_k 32), the cyclic
   coordinate search over the full vocabulary, and random single-token swaps (kept
   when they lower the loss) each get the same budget of evaluated sequences.

Writes the JSON to ``--out`` (a file path; default ``gcg-cpu.json`` in a new folder under
``./cocd-results/``) and, next to it, a PNG of the loss against evaluated sequences for
both experiments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
from torch import nn
from torch.nn import functional as F

from cocd_cuda.baselines import GCG

from . import common


def sum_of_squares(emb: torch.Tensor) -> torch.Tensor:
    return (emb * emb).sum(dim=(1, 2))


def coordinate_search(E, loss_fn, tokens, budget: int, batch: int = 4096):
    """Cyclic exact minimisation over one position at a time, every token tried.

    Returns the loss after each sweep position (with the evaluations spent so far) and
    the final tokens. Stops at the budget or after a full cycle without change.
    """
    V, L = E.shape[0], tokens.numel()
    tokens = tokens.clone()
    with torch.no_grad():
        loss = float(loss_fn(E[tokens][None])[0])
    evals, trace, unchanged = 1, [(1, loss)], 0
    i = 0
    while evals + V <= budget and unchanged < L:
        cand = tokens.repeat(V, 1)
        cand[:, i] = torch.arange(V)
        with torch.no_grad():
            f = torch.cat([loss_fn(E[cand[s : s + batch]]) for s in range(0, V, batch)])
        evals += V
        best = int(torch.argmin(f))
        if float(f[best]) < loss:
            tokens, loss, unchanged = cand[best].clone(), float(f[best]), 0
        else:
            unchanged += 1
        trace.append((evals, loss))
        i = (i + 1) % L
    return trace, tokens


def toy(seed: int, iterations: int = 100) -> dict:
    gen = torch.Generator().manual_seed(seed)
    E = torch.randn(10_000, 4, generator=gen, dtype=torch.float64)
    E[0] = 0.0
    start = torch.tensor([0, 10])
    gcg = GCG(E, sum_of_squares, start, top_k=10)
    losses, seqs = [gcg.loss], [gcg.tokens.tolist()]
    for _ in range(iterations):
        losses.append(gcg.step())
        seqs.append(gcg.tokens.tolist())
    tail = seqs[-10:]
    norms2 = (E * E).sum(1)
    trace, final = coordinate_search(E, sum_of_squares, start, budget=10**9)
    return dict(
        seed=seed,
        gcg_loss=losses,
        gcg_final=losses[-1],
        gcg_best=min(losses),
        gcg_final_tokens=seqs[-1],
        gcg_tokens_in_last_10=sorted({t for s in tail for t in s}),
        gcg_evaluations=gcg.evaluations,
        # with token 0 at position 0 (never proposed: zero gradient there), the best
        # reachable is the smallest non-zero embedding at position 1
        best_without_token0=float(norms2[1:].min()),
        start_loss=float(norms2[10]),
        coordinate_search_trace=trace,
        coordinate_search_final=trace[-1][1],
        coordinate_search_tokens=final.tolist(),
        coordinate_search_evaluations=trace[-1][0],
        coordinate_search_evaluations_to_final=next(e for e, f in trace if f == trace[-1][1]),
    )


class TinyLM(nn.Module):
    """Randomly initialised 2-layer transformer encoder with a next-token head."""

    def __init__(self, vocab: int, dim: int, length: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.E = nn.Parameter(torch.randn(vocab, dim))
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.5)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, vocab)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(emb + self.pos)[:, -1])


def steer(model: TinyLM, target: int, start: torch.Tensor, budget: int, seed: int) -> dict:
    E = model.E.detach()

    def loss_fn(emb):
        logits = model.logits(emb)
        return F.cross_entropy(logits, torch.full((emb.shape[0],), target), reduction="none")

    def hit(tokens):
        with torch.no_grad():
            return int(model.logits(E[tokens][None]).argmax()) == target

    out = {}
    # GCG, stopping at the budget
    gcg = GCG(E, loss_fn, start, top_k=32, batch_size=1024)
    trace = [(gcg.evaluations, gcg.loss)]
    first = None
    while gcg.evaluations + start.numel() * 32 + 1 <= budget:
        gcg.step()
        trace.append((gcg.evaluations, gcg.loss))
        if first is None and hit(gcg.tokens):
            first = gcg.evaluations
    out["gcg"] = dict(final=gcg.loss, best=min(t[1] for t in trace), hit_at=first, trace=trace)
    # cyclic coordinate search over the full vocabulary
    trace, tokens = coordinate_search(E, loss_fn, start, budget)
    out["coordinate_search"] = dict(
        final=trace[-1][1], best=trace[-1][1], hit=hit(tokens), evaluations=trace[-1][0],
        trace=trace,
    )  # fmt: skip
    # random single-token swaps, kept when they lower the loss
    gen = torch.Generator().manual_seed(seed)
    tokens = start.clone()
    with torch.no_grad():
        loss = float(loss_fn(E[tokens][None])[0])
    evals, trace, batch = 1, [(1, loss)], 256
    while evals + batch <= budget:
        cand = tokens.repeat(batch, 1)
        pos = torch.randint(0, tokens.numel(), (batch,), generator=gen)
        cand[torch.arange(batch), pos] = torch.randint(0, E.shape[0], (batch,), generator=gen)
        with torch.no_grad():
            f = loss_fn(E[cand])
        evals += batch
        best = int(torch.argmin(f))
        if float(f[best]) < loss:
            tokens, loss = cand[best].clone(), float(f[best])
        trace.append((evals, loss))
    out["random_swaps"] = dict(final=loss, best=loss, hit=hit(tokens), trace=trace)
    out["gcg"]["hit"] = hit(gcg.tokens)
    return out


def _median_curve(traces: list, grid: list[int]) -> list[float]:
    """Per g: the median over runs of each run's best loss within g evaluations."""
    out = []
    for g in grid:
        at = [min((f for e, f in t if e <= g), default=t[0][1]) for t in traces]
        out.append(sorted(at)[len(at) // 2])
    return out


def plot(result: dict, path: str) -> None:
    """Toy: every seed's GCG and coordinate-search losses; steering: the medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, t in enumerate(result["toy"]):
        # each GCG iteration evaluates the same number of sequences (1 + the swaps of
        # position 1; position 0 holds token 0 and proposes none), spread evenly
        k = len(t["gcg_loss"]) - 1
        per = (t["gcg_evaluations"] - 1) / k
        xs = [1 + j * per for j in range(k + 1)]
        ax1.plot(xs, t["gcg_loss"], color="C0", alpha=0.7, label="GCG (top_k 10)" * (i == 0))
        e, f = zip(*t["coordinate_search_trace"], strict=True)
        ax1.step(e, f, where="post", color="C1", alpha=0.7,
                 label="coordinate search, full vocabulary" * (i == 0))  # fmt: skip
    ax1.set(xlabel="evaluated sequences", ylabel="G(x) = sum of squares", xscale="log")
    ax1.set_yscale("symlog", linthresh=1e-2)
    ax1.set_ylim(bottom=0)
    ax1.set_title(f"toy: V 10,000, d 4, start [0, 10] ({len(result['toy'])} seeds)", fontsize=10)
    st = result["steering"]
    grid = sorted({int(x) for x in torch.logspace(0, math.log10(st["budget"]), 60).tolist()})
    names = {"gcg": "GCG (top_k 32)", "coordinate_search": "coordinate search",
             "random_swaps": "random single swaps"}  # fmt: skip
    for name, label in names.items():
        traces = [r[name]["trace"] for r in st["runs"]]
        hits = st["summary"][name]["hits"]
        ax2.plot(grid, _median_curve(traces, grid),
                 label=f"{label}: target reached {hits}/{len(traces)}")  # fmt: skip
    ax2.set(xlabel="evaluated sequences", ylabel="target cross-entropy, best so far (median)",
            xscale="log")  # fmt: skip
    ax2.set_title(f"steering a random transformer (vocab {st['vocab']}, "
                  f"{st['length']}-token prompt)", fontsize=10)  # fmt: skip
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gcg", description=__doc__)
    p.add_argument("--seeds", type=int, default=5, help="toy: embedding matrices")
    p.add_argument("--targets", type=int, default=20, help="steering: target tokens")
    p.add_argument("--budget", type=int, default=20_000, help="steering: sequences per method")
    p.add_argument("--out", default=None)
    p.add_argument("--replot", default=None, help="only redraw the plot of this result file")
    args = p.parse_args(argv)
    if args.replot:
        with open(args.replot) as fh:
            plot(json.load(fh), os.path.splitext(args.replot)[0] + ".png")
        return
    torch.set_num_threads(1)

    toys = [toy(s) for s in range(args.seeds)]
    print("toy (V 10,000, d 4, start [0, 10], top_k 10, 100 iterations)")
    print("| seed | start | GCG final | GCG best | best without token 0 | "
          "coordinate search (evaluations) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for t in toys:
        print(
            f"| {t['seed']} | {t['start_loss']:.3f} | {t['gcg_final']:.3f} | "
            f"{t['gcg_best']:.3f} | {t['best_without_token0']:.4f} | "
            f"{t['coordinate_search_final']:.3g} "
            f"({t['coordinate_search_evaluations_to_final']:,}) |"
        )

    V, dim, L = 1000, 32, 10
    model = TinyLM(V, dim, L, seed=0)
    gen = torch.Generator().manual_seed(1)
    targets = torch.randint(0, V, (args.targets,), generator=gen).tolist()
    steering = []
    for j, target in enumerate(targets):
        start = torch.randint(0, V, (L,), generator=gen)
        r = steer(model, target, start, args.budget, seed=j)
        steering.append(dict(target=target, start=start.tolist(), **r))
    print(f"\nsteering (vocab {V}, dim {dim}, prompt {L}, budget {args.budget:,} sequences)")
    print("| method | target reached | median final loss |")
    print("|---|---|---|")
    summary = {}
    for name in ("gcg", "coordinate_search", "random_swaps"):
        hits = sum(s[name]["hit"] for s in steering)
        finals = sorted(s[name]["final"] for s in steering)
        med = finals[len(finals) // 2]
        summary[name] = dict(hits=hits, of=len(steering), median_final_loss=med)
        print(f"| {name} | {hits}/{len(steering)} | {med:.3f} |")
    result = dict(
        benchmark="gcg",
        machine=common.machine("cpu"),
        command="python -m benchmarks.gcg " + " ".join(sys.argv[1:] if argv is None else argv),
        toy=toys,
        steering=dict(vocab=V, dim=dim, length=L, budget=args.budget, summary=summary,
                      runs=steering),
    )  # fmt: skip
    out = common.write_result(result, args.out, "gcg-cpu.json")
    plot(result, os.path.splitext(out)[0] + ".png")


if __name__ == "__main__":
    main()

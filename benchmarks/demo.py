"""A short real training run with CoCD: an MLP learns a fixed teacher network.

    python -m benchmarks.demo [--steps 600] [--backend auto]

Prints the training and held-out loss as it goes, then the result beside the loss of
the untrained network. No data download: the data come from a seeded teacher.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import cocd_cuda


def make_data(seed: int = 0, rows: int = 2048, inputs: int = 8):
    gen = torch.Generator().manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(inputs, 16), nn.Tanh(), nn.Linear(16, 1))
    for p in teacher.parameters():
        p.data = torch.randn(p.shape, generator=gen)
    x = torch.randn(rows, inputs, generator=gen)
    with torch.no_grad():
        y = teacher(x)
    split = rows * 3 // 4
    return (x[:split], y[:split]), (x[split:], y[split:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--backend", default="auto", choices=["auto", "reference", "native"])
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny model: threads cost more than they give
    (x, y), (x_test, y_test) = make_data()
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    n = sum(p.numel() for p in model.parameters())
    opt = cocd_cuda.CoCD(
        model.parameters(),
        lr=0.05,
        eps=0.01,
        compute_budget=32,
        momentum=0.99,
        backend=args.backend,
    )
    loss_fn = nn.MSELoss()

    def test_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model(x_test), y_test))

    start_loss = test_loss()
    print(
        f"CoCD ({opt.backend} backend) on a {n}-parameter MLP, B=32 of {n} coordinates "
        f"per step, {2 * 32} evaluations per step"
    )
    print(f"step     0  test MSE {start_loss:.4f}")
    gen = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, x.shape[0], (args.batch,), generator=gen)
        xb, yb = x[idx], y[idx]  # one fixed mini-batch for all evaluations of the step
        train = opt.step(lambda xb=xb, yb=yb: loss_fn(model(xb), yb))
        if step % (args.steps // 6) == 0 or step == args.steps:
            print(f"step {step:5d}  train MSE {float(train):.4f}  test MSE {test_loss():.4f}")
    seconds = time.perf_counter() - t0
    end_loss = test_loss()
    print(
        f"result: test MSE {start_loss:.4f} -> {end_loss:.4f} "
        f"({start_loss / end_loss:.1f}x lower) in {args.steps} steps, {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()

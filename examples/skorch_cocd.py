"""Train a small classifier with CoCD in skorch.

    python examples/skorch_cocd.py --epochs 30

``CoCDNetMixin`` makes each batch one CoCD step whose closure is the net's forward
and loss (no backward).
"""

import argparse

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn

from cocd_cuda import CoCD
from cocd_cuda.integrations import CoCDNetMixin


class CoCDClassifier(CoCDNetMixin, NeuralNetClassifier):
    """A skorch classifier trained by CoCD."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default: 30)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (default: 0.05)")
    parser.add_argument("--budget", type=int, default=32, help="compute_budget (default: 32)")
    args = parser.parse_args()

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 8)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)).astype(np.int64)
    net = CoCDClassifier(
        nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3)),
        criterion=nn.CrossEntropyLoss,
        optimizer=CoCD,
        optimizer__compute_budget=args.budget,
        lr=args.lr,
        max_epochs=args.epochs,
        batch_size=128,
        train_split=None,
        verbose=0,
    )
    net.fit(x, y)
    first, last = net.history[0, "train_loss"], net.history[-1, "train_loss"]
    accuracy = float((net.predict(x) == y).mean())
    print(f"training loss: {first:.4f} -> {last:.4f} after {args.epochs} epochs")
    print(f"training accuracy: {accuracy:.3f}")


if __name__ == "__main__":
    main()

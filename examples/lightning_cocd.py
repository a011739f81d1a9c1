"""Train a small classifier with CoCD in PyTorch Lightning (manual optimization).

    python examples/lightning_cocd.py --steps 200

A ``ModelObjective`` evaluates each step's points through its fast block path;
``cocd_training_step`` takes the step from ``training_step``.
"""

import argparse

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from cocd_cuda import CoCD, ModelObjective
from cocd_cuda.integrations import cocd_training_step


class Classifier(pl.LightningModule):
    def __init__(self, lr: float, compute_budget: int):
        super().__init__()
        self.automatic_optimization = False  # CoCD takes its own steps: no backward
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        self.lr, self.compute_budget = lr, compute_budget
        self.objective = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.objective is None:
            self.objective = ModelObjective(self.net, F.cross_entropy, x, y)
        else:
            self.objective.set_batch(x, y)
        loss = cocd_training_step(self, self.objective)
        self.log("train_loss", loss, prog_bar=True)

    def configure_optimizers(self):
        return CoCD(self.parameters(), lr=self.lr, compute_budget=self.compute_budget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="CoCD steps (default: 200)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (default: 0.05)")
    parser.add_argument("--budget", type=int, default=32, help="compute_budget (default: 32)")
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True)
    model = Classifier(args.lr, args.budget)
    with torch.no_grad():
        before = F.cross_entropy(model.net(x), y).item()
    trainer = pl.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    with torch.no_grad():
        after = F.cross_entropy(model.net(x), y).item()
    print(f"training loss: {before:.4f} -> {after:.4f} after {args.steps} CoCD steps")


if __name__ == "__main__":
    main()

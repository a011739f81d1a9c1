"""CoCD with ModelObjective on real data: scikit-learn's 8x8 handwritten digits.

    python examples/model_objective.py

A 64-32-10 MLP trained with cross-entropy, no backpropagation: each step refreshes
B = 128 coordinates with 256 loss evaluations, which ModelObjective's layered strategy
computes from one forward pass per layer. Prints the test accuracy before and after.
"""

import torch
from sklearn.datasets import load_digits

import cocd_cuda

torch.manual_seed(0)
digits = load_digits()
X = torch.tensor(digits.data, dtype=torch.float32) / 16.0
Y = torch.tensor(digits.target)
order = torch.randperm(len(X))
train, test = order[:1437], order[1437:]  # an 80/20 split

model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
model.eval()  # CoCD's evaluations of one step must all see the same function
obj = cocd_cuda.ModelObjective(model, torch.nn.CrossEntropyLoss(), X[:64], Y[:64])
opt = cocd_cuda.CoCD(model.parameters(), lr=0.05, compute_budget=128, momentum=0.99)


def accuracy() -> float:
    with torch.no_grad():
        return (model(X[test]).argmax(1) == Y[test]).float().mean().item()


print(f"{obj.strategy} strategy, {sum(p.numel() for p in model.parameters())} parameters")
print(f"test accuracy before: {accuracy():.1%}")
for _ in range(10):
    for batch in train[torch.randperm(len(train))].split(64):
        obj.set_batch(X[batch], Y[batch])  # one fixed mini-batch per step
        loss = opt.step(obj)
print(f"test accuracy after {opt.step_count} steps: {accuracy():.1%}")

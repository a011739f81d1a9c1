import torch

import cocd_cuda

torch.manual_seed(0)
x = torch.linspace(-1, 1, 64).unsqueeze(1)
y = 3 * x - 0.5
model = torch.nn.Linear(1, 1)
opt = cocd_cuda.CoCD(model.parameters(), lr=0.1, compute_budget=8, momentum=0.99)
for _ in range(300):
    loss = opt.step(lambda: torch.nn.functional.mse_loss(model(x), y))
print(f"weight {model.weight.item():.3f}, bias {model.bias.item():.3f}")
print(f"loss returned by step: {loss.item():.4f}")
with torch.no_grad():
    print(f"loss f(x):             {torch.nn.functional.mse_loss(model(x), y).item():.4f}")

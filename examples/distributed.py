import torch
import torch.distributed as dist

import cocd_cuda

dist.init_process_group("gloo")  # or "nccl" on GPUs
torch.manual_seed(0)  # coordinate-parallel: every rank uses the same data
x = torch.linspace(-1, 1, 64).unsqueeze(1)
y = 3 * x - 0.5
model = torch.nn.Linear(1, 1)
opt = cocd_cuda.CoCD(
    model.parameters(), lr=0.1, compute_budget=2, momentum=0.99,
    process_group=dist.group.WORLD, parallel="coordinate",
)  # fmt: skip
for _ in range(300):
    loss = opt.step(lambda: torch.nn.functional.mse_loss(model(x), y))
print(f"rank {dist.get_rank()}: weight {model.weight.item():.3f}, bias {model.bias.item():.3f}")
dist.barrier()  # every rank is past CoCD's last collective before any tears down
dist.destroy_process_group()

"""How the optimizer's parameters map onto the flat coordinate vector ``x``."""

from __future__ import annotations

import bisect
import numbers
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Run:
    """A run of consecutive block coordinates that live in one parameter tensor."""

    param: int  # index into ParamLayout.params
    offset: int  # first element, in the tensor's logical row-major order
    length: int
    slot: int  # position of the run's first coordinate inside the block


class ParamLayout:
    """Parameters in param-group order, their coordinate ranges and the buffer dtype.

    Groups are concatenated in order, so each group owns one contiguous coordinate
    range; the coordinate -> (tensor, offset) map is a prefix sum searched once per
    step, never once per coordinate.
    """

    def __init__(self, param_groups: list[dict]):
        self.params: list[torch.Tensor] = []
        self.names: list[str] = []  # "param group 0, parameter 1", for error messages
        self.param_group: list[int] = []
        self.starts: list[int] = []
        self.group_bounds: list[tuple[int, int]] = []
        n = 0
        for gi, group in enumerate(param_groups):
            g0 = n
            for pi, p in enumerate(group["params"]):
                self.params.append(p)
                self.names.append(f"param group {gi}, parameter {pi}")
                self.param_group.append(gi)
                self.starts.append(n)
                n += p.numel()
            self.group_bounds.append((g0, n))
        self.n = n
        self.numels = [p.numel() for p in self.params]
        self.dtypes = [p.dtype for p in self.params]
        self.device = self.params[0].device
        # Estimates are fp32 whatever the storage dtype; fp64 as soon as any parameter
        # is fp64, so that fp64 users get fp64 estimates.
        wide = any(p.dtype == torch.float64 for p in self.params)
        self.acc_dtype = torch.float64 if wide else torch.float32

    def runs(self, c: int, length: int) -> list[Run]:
        """Split the cyclic coordinate range c, c+1, ..., c+length-1 (mod n) by tensor."""
        out: list[Run] = []
        pos, slot = c, 0
        p = bisect.bisect_right(self.starts, pos) - 1
        while slot < length:
            while self.numels[p] == 0 or pos >= self.starts[p] + self.numels[p]:
                p += 1
                if p == len(self.params):
                    p, pos = 0, 0
            take = min(length - slot, self.starts[p] + self.numels[p] - pos)
            out.append(Run(p, pos - self.starts[p], take, slot))
            pos += take
            slot += take
            if pos == self.n:
                p, pos = 0, 0
        return out


def as_loss(value, device: torch.device) -> torch.Tensor:
    """The closure's return value as a 0-dim tensor, without reading it on the host."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"the closure must return a scalar loss, got a tensor of shape "
                f"{tuple(value.shape)}; reduce it (e.g. .mean()) inside the closure"
            )
        if value.is_meta:
            raise ValueError(
                "the closure returned a loss on the meta device, which holds no value; "
                "compute the loss from real tensors"
            )
        if value.is_complex():
            raise TypeError(
                f"the closure returned a complex loss ({value.dtype}); return a real one"
            )
        return value.detach().reshape(())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64, device=device)
    raise TypeError(
        f"the closure must return a scalar loss tensor or a Python number, got "
        f"{type(value).__name__}"
    )

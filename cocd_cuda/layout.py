"""How the optimizer's parameters map onto the flat coordinate vector ``x``."""

from __future__ import annotations

import bisect
import math
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
        self.param_group: list[int] = []
        self.starts: list[int] = []
        self.group_bounds: list[tuple[int, int]] = []
        n = 0
        for gi, group in enumerate(param_groups):
            g0 = n
            for p in group["params"]:
                self.params.append(p)
                self.param_group.append(gi)
                self.starts.append(n)
                n += p.numel()
            self.group_bounds.append((g0, n))
        self.n = n
        self.numels = [p.numel() for p in self.params]
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


def check_params(param_groups: list[dict]) -> None:
    """Reject parameter sets that CoCD cannot optimize, naming the offender."""
    seen: set[int] = set()
    device = None
    total = 0
    for gi, group in enumerate(param_groups):
        for pi, p in enumerate(group["params"]):
            where = f"param group {gi}, parameter {pi}"
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{where} is a {type(p).__name__}, expected a torch.Tensor")
            if not p.is_floating_point():
                raise ValueError(
                    f"{where} has dtype {p.dtype}; CoCD optimizes floating-point "
                    "tensors (float16, bfloat16, float32, float64) only"
                )
            if p.layout != torch.strided:
                raise ValueError(f"{where} has layout {p.layout}; only dense tensors are supported")
            if id(p) in seen:
                raise ValueError(
                    f"{where} appears twice in the parameter list; pass each tensor once"
                )
            seen.add(id(p))
            if device is None:
                device = p.device
            elif p.device != device:
                raise ValueError(
                    f"{where} is on {p.device} but earlier parameters are on {device}; "
                    "CoCD needs all parameters on one device"
                )
            total += p.numel()
    if not seen:
        raise ValueError("CoCD got an empty parameter list; pass the tensors to optimize")
    if total == 0:
        raise ValueError("CoCD got parameters with no elements; there is nothing to optimize")


def as_loss(value, device: torch.device) -> torch.Tensor:
    """The closure's return value as a 0-dim tensor, without reading it on the host."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"the closure must return a scalar loss, got a tensor of shape "
                f"{tuple(value.shape)}; reduce it (e.g. .mean()) inside the closure"
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


def finite_number(name: str, value, where: str) -> float:
    """``value`` as a float, or a TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({where})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Invalid {name}: {value!r} ({where}); it must be finite")
    return value

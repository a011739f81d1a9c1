"""Pure-PyTorch CoCD: the executable specification (docs/ALGORITHM.md).

Plain torch ops, one coordinate at a time, so that every rule of the algorithm can be
read off the code. The native engine updates the same state (``CoCDState``) and must
agree with this one step for step.
"""

from __future__ import annotations

import torch

from . import evaluation
from .evaluation import (
    Block,
    block_losses,
    evaluates_blocks,
    n_evals,
    nonfinite_error,
    perturbed,
    split,
)
from .layout import ParamLayout, as_loss
from .state import CoCDState
from .validation import GroupHyper, check_unchanged


class ReferenceEngine:
    """CoCD's step, written with plain torch ops, on a ``CoCDState`` it does not own."""

    name = "reference"

    def __init__(self, layout: ParamLayout, compute_budget: int, central: bool):
        self.layout = layout
        self.B = compute_budget
        self.central = central
        dev = layout.device
        # Cached per-coordinate bookkeeping for the block, one allocation per engine.
        self._block_offsets = torch.arange(self.B, device=dev)
        self._group_ends = torch.tensor([e for _, e in layout.group_bounds], device=dev)

    def step(self, state: CoCDState, closure, hyper: list[GroupHyper], nonfinite: str, share):
        """One CoCD step. Nothing is changed unless every evaluation succeeds."""
        check_unchanged(self.layout)
        c = state.counters.c
        if evaluates_blocks(closure):
            block = Block.at(self.layout, c, self.B, [hp.eps for hp in hyper], self.central)
            h = block.plus - block.minus
            losses = share.gather(
                lambda: block_losses(closure, block, share, self.layout, c), h.device
            )
        else:
            h = torch.empty(self.B, dtype=torch.float64, device=self.layout.device)
            losses = share.gather(lambda: self._evaluate(closure, hyper, c, h, share), h.device)
        g, loss = self._estimates(losses, h, nonfinite, state)
        self._commit(state, g, hyper)
        return loss

    def _evaluate(self, closure, hyper, c: int, h: torch.Tensor, share) -> torch.Tensor:
        """Evaluate f at this share's points of the block; x is restored on every exit.

        Fills ``h`` with the realised steps; the losses of other shares stay 0.
        """
        layout, central = self.layout, self.central
        dev = layout.device
        losses = torch.zeros(n_evals(self.B, central), dtype=torch.float64, device=dev)
        if not central and share.with_f0:
            losses[0] = as_loss(closure(), dev)  # f(x), once per step
        for run in layout.runs(c, self.B):
            p = layout.params[run.param]
            eps = hyper[layout.param_group[run.param]].eps
            for k in range(run.length):
                j = run.slot + k
                index = _element(p, run.offset + k)
                original = p[index].clone()
                plus = perturbed(original, eps)
                minus = perturbed(original, -eps) if central else original
                h[j] = plus.double() - minus.double()  # the realised step
                if not share.j0 <= j < share.j1:
                    continue
                try:
                    p[index] = plus
                    losses[evaluation.index(j, False, central)] = as_loss(closure(), dev)
                    if central:
                        p[index] = minus
                        losses[evaluation.index(j, True, central)] = as_loss(closure(), dev)
                finally:
                    p[index] = original  # exact restore, never x + eps - eps
        return losses

    def _estimates(self, losses: torch.Tensor, h: torch.Tensor, nonfinite: str, state):
        """Finite differences, the fault check and the returned loss estimate."""
        f_plus, f_minus = split(losses, self.central)
        loss = _mean_in_kernel_order((f_plus + f_minus) / 2) if self.central else losses[0]
        g = torch.where(h != 0, (f_plus - f_minus) / h, 0.0).to(self.layout.acc_dtype)
        finite = torch.isfinite(g) & torch.isfinite(f_plus) & torch.isfinite(f_minus)
        if nonfinite == "zero":
            g = torch.where(finite, g, 0.0)
        elif not bool(finite.all()):  # the one host read of a step
            k = state.counters
            raise nonfinite_error(losses, g, self.central, k.c, self.layout.n, k.t)
        return g, loss.to(self.layout.acc_dtype)

    def _commit(self, state: CoCDState, g: torch.Tensor, hyper: list[GroupHyper]) -> None:
        """Decay, refresh and descend: the only place the state and x change."""
        layout, n, v = self.layout, self.layout.n, state.v
        block = (state.counters.c + self._block_offsets) % n
        if state.dense:
            for (start, end), hp in zip(layout.group_bounds, hyper, strict=True):
                if hp.momentum != 1.0:
                    v[start:end].mul_(hp.momentum)
            v[block] = g  # fresh estimates are not decayed in the step that made them
            for p, start, numel, gi in zip(
                layout.params, layout.starts, layout.numels, layout.param_group, strict=True
            ):
                x = p.to(v.dtype)
                p.copy_(_descend(x, v[start : start + numel].view(p.shape), hyper[gi]))
        else:
            coords = state.coords
            if any(hp.momentum != 1.0 for hp in hyper):
                gammas = torch.tensor([hp.momentum for hp in hyper], dtype=v.dtype)
                groups = torch.searchsorted(self._group_ends, coords.long(), right=True)
                v.mul_(gammas.to(v.device)[groups])
            slots = state.ring_slots(self._block_offsets)
            coords[slots] = block.to(coords.dtype)  # push, evicting the oldest entries
            v[slots] = g
            for p, start, numel, gi in zip(
                layout.params, layout.starts, layout.numels, layout.param_group, strict=True
            ):
                inside = (coords >= start) & (coords < start + numel)
                if not bool(inside.any()):
                    continue
                local = coords[inside] - start
                flat = p.view(-1) if p.is_contiguous() else p.reshape(-1).clone()
                x = flat[local].to(v.dtype)
                flat[local] = _descend(x, v[inside], hyper[gi]).to(p.dtype)
                if not p.is_contiguous():
                    p.copy_(flat.view(p.shape))
        state.counters.advance()


def _descend(x: torch.Tensor, v: torch.Tensor, hp: GroupHyper) -> torch.Tensor:
    """x * (1 - lr*wd) - lr * v, each product rounded on its own (no fused multiply-add)."""
    if hp.weight_decay != 0.0:
        x = x * (1.0 - hp.lr * hp.weight_decay)
    return x - hp.lr * v


def _element(p: torch.Tensor, offset: int):
    """Index of element ``offset`` (logical row-major order) of ``p``, for any strides."""
    index = []
    for size in reversed(p.shape):
        offset, r = divmod(offset, size)
        index.append(r)
    return tuple(reversed(index))


SUM_LANES = 256  # kSumLanes in csrc/kernels/cocd_kernels.h


def _mean_in_kernel_order(values: torch.Tensor) -> torch.Tensor:
    """The mean of float64 ``values``, summed in the kernels' order (cocd_kernels.h).

    Value j goes to lane j mod 256, in order of j; then lane t += lane t + s for
    s = 128, ..., 1. One order everywhere makes every engine return the same bits.
    """
    B = values.numel()
    rows = -(-B // SUM_LANES)
    padded = torch.zeros(rows * SUM_LANES, dtype=values.dtype, device=values.device)
    padded[:B] = values  # adding the padding's +0.0 leaves a lane unchanged
    lanes = torch.zeros(SUM_LANES, dtype=values.dtype, device=values.device)
    for row in padded.view(rows, SUM_LANES):
        lanes += row
    s = SUM_LANES // 2
    while s > 0:
        lanes[:s] += lanes[s : 2 * s].clone()
        s //= 2
    return lanes[0] / B

"""Pure-PyTorch CoCD: the executable specification (docs/ALGORITHM.md).

Plain torch ops, one coordinate at a time, so that every rule of the algorithm can be
read off the code. The native engine keeps the same state and must agree with this
one step for step.
"""

from __future__ import annotations

import torch

from .layout import ParamLayout, as_loss
from .objective import Block
from .validation import GroupHyper, check_unchanged


def perturbed(value: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    """``round(value + delta)`` in the parameter's dtype.

    The sum is formed in float64 and rounded to float32 before the parameter's dtype,
    which is the order the native kernels use too. ``delta`` may be a float64 tensor
    (e.g. a 0-dim one on the device): the same rounding, with no host read.
    """
    if value.dtype == torch.float64:
        return value + delta
    return (value.double() + delta).float().to(value.dtype)


class ReferenceEngine:
    """CoCD's state and step, written with plain torch ops."""

    name = "reference"

    def __init__(
        self,
        layout: ParamLayout,
        compute_budget: int,
        memory_budget: int,
        central: bool,
        nonfinite: str,
        init_grad: torch.Tensor | None,
    ):
        self.layout = layout
        self.B = compute_budget
        self.m = memory_budget
        self.central = central
        self.nonfinite = nonfinite
        self.dense = memory_budget == layout.n
        dev, acc = layout.device, layout.acc_dtype
        # Dense: v[i] is coordinate i. FIFO: a full ring of (coords[k], v[k]); head is
        # the oldest entry, i.e. the next one to be overwritten.
        self.v = torch.zeros(self.m, dtype=acc, device=dev)
        self.coords = None if self.dense else torch.arange(self.m, device=dev)
        if init_grad is not None:
            self.v.copy_(init_grad)
        self.head = 0
        self.c = 0
        self.t = 0
        self.share = None  # a distributed.Share when CoCD runs over a process group
        # Cached per-coordinate bookkeeping for the block, one allocation per engine.
        self._block_offsets = torch.arange(self.B, device=dev)
        self._group_ends = torch.tensor([e for _, e in layout.group_bounds], device=dev)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        self.v.zero_()
        if self.coords is not None:
            self.coords.copy_(torch.arange(self.m, device=self.coords.device))
        self.head = self.c = self.t = 0

    def state(self) -> dict:
        return {
            "buffer": self.v.clone(),
            "coords": None if self.coords is None else self.coords.clone(),
            "head": self.head,
            "fill": self.m,  # the ring starts full (coordinates 0..m-1) and stays full
            "c": self.c,
            "t": self.t,
        }

    def load(self, state: dict) -> None:
        """Commit a state that ``validation.cocd_state`` checked in full."""
        self.v.copy_(state["buffer"])
        if self.coords is not None:
            self.coords.copy_(state["coords"])
        self.head, self.c, self.t = int(state["head"]), int(state["c"]), int(state["t"])

    # ------------------------------------------------------------------- step
    def step(self, closure, hyper: list[GroupHyper]) -> torch.Tensor:
        """One CoCD step. Nothing is changed unless every evaluation succeeds."""
        check_unchanged(self.layout)
        if self.share is None and not evaluates_blocks(closure):
            losses, h = self._evaluate(closure, hyper)
        else:
            block = self.block(hyper)
            h = block.plus - block.minus

            def local():
                if evaluates_blocks(closure):
                    return self._block_losses(closure, block)
                return self._evaluate(closure, hyper)[0]

            losses = local() if self.share is None else self.share.gather(local, h.device)
        g, loss = self._estimates(losses, h)
        self._commit(g, hyper)
        return loss

    def block(self, hyper: list[GroupHyper]) -> Block:
        """The step's coordinates and their perturbed values, for a block evaluator."""
        layout, parts = self.layout, ([], [], [])
        runs = layout.runs(self.c, self.B)
        for run in runs:
            p = layout.params[run.param]
            eps = hyper[layout.param_group[run.param]].eps
            base = p.reshape(-1)[run.offset : run.offset + run.length]
            minus = perturbed(base, -eps) if self.central else base
            for part, values in zip(parts, (base, perturbed(base, eps), minus), strict=True):
                part.append(values.double())
        base, plus, minus = (torch.cat(part) for part in parts)
        return Block(layout.params, runs, base, plus, minus, self.central)

    def _block_losses(self, closure, block: Block) -> torch.Tensor:
        """A block evaluator's losses; with a share, only this rank's (zeros elsewhere)."""
        if self.share is None:
            return closure.evaluate_block(block)
        j0, j1, n = self.share.j0, self.share.j1, self.layout.n
        losses = torch.zeros(self.share.n_eval, dtype=torch.float64, device=block.base.device)
        if j1 > j0:
            runs = self.layout.runs((self.c + j0) % n, j1 - j0)
            part = Block(block.params, runs, block.base[j0:j1], block.plus[j0:j1],
                         block.minus[j0:j1], self.central)  # fmt: skip
            f = closure.evaluate_block(part)
            if self.central:
                losses[2 * j0 : 2 * j1] = f
            else:
                losses[1 + j0 : 1 + j1] = f[1:]
                if self.share.with_f0:
                    losses[0] = f[0]
        elif self.share.with_f0 and not self.central:
            losses[0] = as_loss(closure(), losses.device)
        return losses

    def _evaluate(self, closure, hyper):
        """Evaluate f at the block's perturbed points; x is restored on every exit.

        With a share (distributed), only this rank's points; the others stay 0.
        """
        layout, B, share = self.layout, self.B, self.share
        dev = layout.device
        n_eval = 2 * B if self.central else B + 1
        losses = torch.zeros(n_eval, dtype=torch.float64, device=dev)
        h = torch.empty(B, dtype=torch.float64, device=dev)
        if not self.central and (share is None or share.with_f0):
            losses[0] = as_loss(closure(), dev)  # f(x), once per step
        for run in layout.runs(self.c, B):
            p = layout.params[run.param]
            eps = hyper[layout.param_group[run.param]].eps
            for k in range(run.length):
                j = run.slot + k
                if share is not None and not share.j0 <= j < share.j1:
                    continue
                index = _element(p, run.offset + k)
                original = p[index].clone()
                plus = perturbed(original, eps)
                minus = perturbed(original, -eps) if self.central else original
                try:
                    p[index] = plus
                    if self.central:
                        losses[2 * j] = as_loss(closure(), dev)
                        p[index] = minus
                        losses[2 * j + 1] = as_loss(closure(), dev)
                    else:
                        losses[1 + j] = as_loss(closure(), dev)
                finally:
                    p[index] = original  # exact restore, never x + eps - eps
                h[j] = plus.double() - minus.double()  # the realised step
        return losses, h

    def _estimates(self, losses: torch.Tensor, h: torch.Tensor):
        """Finite differences, the fault check and the returned loss estimate."""
        if self.central:
            f_plus, f_minus = losses[0::2], losses[1::2]
            loss = _mean_in_kernel_order((f_plus + f_minus) / 2)
        else:
            f_plus, f_minus = losses[1:], losses[0].expand(self.B)
            loss = losses[0]
        g = torch.where(h != 0, (f_plus - f_minus) / h, 0.0).to(self.layout.acc_dtype)
        finite = torch.isfinite(g) & torch.isfinite(f_plus) & torch.isfinite(f_minus)
        if self.nonfinite == "zero":
            g = torch.where(finite, g, 0.0)
        elif not bool(finite.all()):  # the one host read of a step
            raise self._nonfinite_error(f_plus, f_minus, finite)
        return g, loss.to(self.layout.acc_dtype)

    def _nonfinite_error(self, f_plus, f_minus, finite) -> FloatingPointError:
        j = int((~finite).nonzero()[0, 0])
        i = (self.c + j) % self.layout.n
        return FloatingPointError(
            f"non-finite loss or estimate at step {self.t} for coordinate {i} "
            f"(f+={float(f_plus[j])}, f-={float(f_minus[j])}); parameters and "
            "optimizer state are unchanged. The closure must compute the same function "
            "at every call of a step: with the model in train mode (dropout), a batch "
            "drawn inside the closure or other randomness, the differences are noise; "
            "call model.eval() and fix the batch before the step. Otherwise lower eps "
            "or lr, or pass nonfinite='zero' to refresh such coordinates with 0."
        )

    def _commit(self, g: torch.Tensor, hyper: list[GroupHyper]) -> None:
        """Decay, refresh and descend: the only place the state and x change."""
        layout, B, n = self.layout, self.B, self.layout.n
        block = (self.c + self._block_offsets) % n
        if self.dense:
            for (start, end), hp in zip(layout.group_bounds, hyper, strict=True):
                if hp.momentum != 1.0:
                    self.v[start:end].mul_(hp.momentum)
            self.v[block] = g  # fresh estimates are not decayed in the step that made them
            for p, start, numel, gi in zip(
                layout.params, layout.starts, layout.numels, layout.param_group, strict=True
            ):
                x = p.to(self.v.dtype)
                p.copy_(_descend(x, self.v[start : start + numel].view(p.shape), hyper[gi]))
        else:
            if any(hp.momentum != 1.0 for hp in hyper):
                gammas = torch.tensor([hp.momentum for hp in hyper], dtype=self.v.dtype)
                groups = torch.searchsorted(self._group_ends, self.coords, right=True)
                self.v.mul_(gammas.to(self.v.device)[groups])
            slots = (self.head + self._block_offsets) % self.m
            self.coords[slots] = block  # push, evicting the oldest entries
            self.v[slots] = g
            self.head = (self.head + B) % self.m
            for p, start, numel, gi in zip(
                layout.params, layout.starts, layout.numels, layout.param_group, strict=True
            ):
                inside = (self.coords >= start) & (self.coords < start + numel)
                if not bool(inside.any()):
                    continue
                local = self.coords[inside] - start
                flat = p.view(-1) if p.is_contiguous() else p.reshape(-1).clone()
                x = flat[local].to(self.v.dtype)
                flat[local] = _descend(x, self.v[inside], hyper[gi]).to(p.dtype)
                if not p.is_contiguous():
                    p.copy_(flat.view(p.shape))
        self.c = (self.c + B) % n
        self.t += 1


def evaluates_blocks(closure) -> bool:
    """True for closures that evaluate a whole block at once (a non-sequential ModelObjective)."""
    return callable(getattr(closure, "evaluate_block", None)) and closure.strategy != "sequential"


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

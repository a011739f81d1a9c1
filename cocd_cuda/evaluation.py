"""The evaluation protocol: how an engine asks for f at a step's points.

A step evaluates f at ``n_evals(B, central)`` points, in one fixed order (the layout
the kernels use too, ``eval_slot`` in csrc/kernels/cocd_kernels.h):

- central differences: evaluation ``2j`` is x + eps e_j, ``2j + 1`` is x - eps e_j;
- forward differences: evaluation ``0`` is f(x), ``1 + j`` is x + eps e_j,

where j is the slot of the block's coordinate. The losses of a step are one float64
vector in that order; ``split`` reads f+ and f- back out of it.

A closure is evaluated point by point (the engine moves x and calls it), unless it is
a block evaluator (``BlockEvaluator``, e.g. a ``ModelObjective``), which is handed the
whole ``Block`` of points at once. Which of a step's evaluations this process does is
a ``Share``: all of them (``Everything``), or a rank's part (``distributed.Share``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .layout import ParamLayout, Run, as_loss


# ------------------------------------------------------------------ the layout
def n_evals(B: int, central: bool) -> int:
    """Evaluations per step."""
    return 2 * B if central else B + 1


def evals_of(j0: int, j1: int, central: bool, with_f0: bool) -> list[int]:
    """The evaluations that perturb slots j0..j1-1 (and f(x) in forward mode), in order."""
    if central:
        return [k for j in range(j0, j1) for k in (2 * j, 2 * j + 1)]
    return ([0] if with_f0 else []) + [1 + j for j in range(j0, j1)]


def points_of(evals: list[int], central: bool) -> list[tuple[int, bool]]:
    """(slot, at x - eps) of each evaluation; slot -1 is f(x). One list per step, so the
    engines' per-evaluation loops do no arithmetic of their own."""
    if central:
        return [(k // 2, k % 2 == 1) for k in evals]
    return [(k - 1, False) for k in evals]


def split(losses: torch.Tensor, central: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(f+, f-) per slot, read out of a step's losses."""
    if central:
        return losses[0::2], losses[1::2]
    return losses[1:], losses[0].expand(losses.numel() - 1)


def index(j: int, minus: bool, central: bool) -> int:
    """The evaluation of slot j at x + eps (``minus``: x - eps, central only)."""
    return 2 * j + int(minus) if central else 1 + j


def points(j0: int, j1: int, central: bool) -> slice:
    """Where the evaluations of slots j0..j1-1 lie in a step's losses (f(x) excluded)."""
    return slice(2 * j0, 2 * j1) if central else slice(1 + j0, 1 + j1)


# ------------------------------------------------------------------- the points
def perturbed(value: torch.Tensor, delta) -> torch.Tensor:
    """``round(value + delta)`` in the parameter's dtype.

    The sum is formed in float64 and rounded to float32 before the parameter's dtype,
    which is the order the native kernels use too. ``delta`` is a number or a float64
    tensor that broadcasts against ``value``.
    """
    if value.dtype == torch.float64:
        return value + delta
    return (value.double() + delta).float().to(value.dtype)


@dataclass
class Block:
    """The points of one CoCD step, as the engine computed them.

    Coordinate j of the block lives in ``params[run.param]`` at element
    ``run.offset + (j - run.slot)``; ``base``, ``plus`` and ``minus`` are its original
    and perturbed values in float64 (exact: every value is one of the parameter dtype).
    In forward mode ``minus`` equals ``base`` and evaluation 0 is f(x).
    """

    params: list[torch.Tensor]
    runs: list[Run]
    base: torch.Tensor
    plus: torch.Tensor
    minus: torch.Tensor
    central: bool

    @staticmethod
    def at(layout: ParamLayout, c: int, B: int, eps: list[float], central: bool) -> Block:
        """The block of B coordinates starting at c; ``eps`` per param group."""
        parts = ([], [], [])
        runs = layout.runs(c, B)
        for run in runs:
            p = layout.params[run.param]
            e = eps[layout.param_group[run.param]]
            base = p.reshape(-1)[run.offset : run.offset + run.length]
            minus = perturbed(base, -e) if central else base
            for part, values in zip(parts, (base, perturbed(base, e), minus), strict=True):
                part.append(values.double())
        base, plus, minus = (torch.cat(part) for part in parts)
        return Block(layout.params, runs, base, plus, minus, central)

    def part(self, layout: ParamLayout, c: int, j0: int, j1: int) -> Block:
        """Slots j0..j1-1 of this block (which starts at coordinate c)."""
        runs = layout.runs((c + j0) % layout.n, j1 - j0)
        sl = slice(j0, j1)
        return Block(self.params, runs, self.base[sl], self.plus[sl], self.minus[sl], self.central)


class BlockEvaluator(Protocol):
    """A closure that evaluates a whole block of points at once (``ModelObjective``).

    ``evaluate_block`` returns f at every point of a ``Block`` in evaluation order.
    The graph-capturable form: ``begin_points`` does the work shared by every point,
    ``unperturbed`` gives f(x), and ``point_losses(p, elems, values, base, acts)`` f at
    points that each set one element of p; ``vectorises(p)`` says whether that is
    available for p. ``by_block`` is False when evaluating point by point is as good.
    """

    by_block: bool

    def __call__(self) -> torch.Tensor: ...
    def evaluate_block(self, block: Block) -> torch.Tensor: ...
    def begin_points(self): ...
    def unperturbed(self, acts) -> torch.Tensor: ...
    def point_losses(self, p, elems, values, base, acts) -> torch.Tensor: ...
    def vectorises(self, p: torch.Tensor) -> bool: ...


def evaluates_blocks(closure) -> bool:
    """True for a closure the engines hand whole blocks to (a ``BlockEvaluator`` whose
    ``by_block`` is True). Checked by attribute, not ``isinstance``: a runtime protocol
    check costs tens of microseconds, and this runs several times a step."""
    return getattr(closure, "by_block", False) is True and hasattr(closure, "evaluate_block")


# ------------------------------------------------------------------ the shares
class Everything:
    """Every evaluation of a step, here (no process group)."""

    def __init__(self, B: int, central: bool):
        self.j0, self.j1, self.with_f0 = 0, B, True
        self.n_eval = n_evals(B, central)
        self.whole = True

    def evals(self) -> list[int]:
        return list(range(self.n_eval))

    def gather(self, evaluate, device) -> torch.Tensor:
        return evaluate()


def block_losses(closure, block: Block, share, layout: ParamLayout, c: int) -> torch.Tensor:
    """A block evaluator's losses; with a partial share, only its points (zeros elsewhere)."""
    if share.whole:
        return closure.evaluate_block(block)
    losses = torch.zeros(share.n_eval, dtype=torch.float64, device=block.base.device)
    j0, j1 = share.j0, share.j1
    if j1 > j0:
        f = closure.evaluate_block(block.part(layout, c, j0, j1))
        losses[points(j0, j1, block.central)] = f[points(0, j1 - j0, block.central)]
        if not block.central and share.with_f0:
            losses[0] = f[0]
    elif share.with_f0 and not block.central:
        losses[0] = as_loss(closure(), losses.device)
    return losses


# ------------------------------------------------------------------- the faults
def is_sync_error(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's error for a host sync under sync debug mode "error"
    (how ``CoCD.graphed`` finds closures that cannot be captured)."""
    return "synchronizing CUDA operation" in str(exc)


def nonfinite_error(losses, g, central: bool, c: int, n: int, t: int) -> FloatingPointError:
    """The error of a step whose losses or estimates are not all finite."""
    f_plus, f_minus = split(losses, central)
    finite = torch.isfinite(g) & torch.isfinite(f_plus) & torch.isfinite(f_minus)
    j = int((~finite).nonzero()[0, 0])
    return FloatingPointError(
        f"non-finite loss or estimate at step {t} for coordinate {(c + j) % n} "
        f"(f+={float(f_plus[j])}, f-={float(f_minus[j])}); parameters and "
        "optimizer state are unchanged. The closure must compute the same function "
        "at every call of a step: with the model in train mode (dropout), a batch "
        "drawn inside the closure or other randomness, the differences are noise; "
        "call model.eval() and fix the batch before the step. Otherwise lower eps "
        "or lr, or pass nonfinite='zero' to refresh such coordinates with 0."
    )

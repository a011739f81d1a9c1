"""``cocd_cuda.minimize``: CoCD on a black-box function, with a scipy-style interface.

    res = cocd_cuda.minimize(fun, x0, max_evals=20_000, compute_budget=16, lr=1e-2)
    res.x, res.fun, res.nfev, res.nit, res.success, res.message

``fun`` takes a 1-D vector and returns a real number. If ``x0`` is a torch tensor,
``fun`` receives torch tensors (x0's dtype and device; integer x0 becomes float64);
otherwise ``x0`` is read as a numpy array and ``fun`` receives float64 numpy arrays.
Each call receives a fresh copy, so ``fun`` may keep or modify it.
"""

from __future__ import annotations

import math
import numbers

import torch

from .evaluation import n_evals
from .optimizer import CoCD

__all__ = ["OptimizeResult", "minimize"]


class OptimizeResult(dict):
    """The result of ``minimize``: a dict with attribute access, like scipy's.

    ``x``: the final point (numpy array, or tensor for a tensor ``x0``); ``fun``: f(x),
    evaluated exactly; ``jac``: CoCD's buffer of gradient estimates at the end;
    ``nfev``: calls of ``fun``; ``nit``: CoCD steps; ``success``, ``status`` (0
    converged, 1 budget used up, 2 stopped by the callback) and ``message``.
    """

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    __setattr__ = dict.__setitem__
    __delattr__ = dict.__delitem__

    def __repr__(self) -> str:
        width = max(map(len, self)) if self else 0
        return "\n".join(f"{k:>{width}}: {v!r}" for k, v in self.items())


_MESSAGES = {
    0: "every stored gradient estimate is at most gtol",
    1: "the evaluation budget (max_evals) or maxiter is used up",
    2: "stopped by the callback",
}


def _as_vector(x0) -> tuple[torch.Tensor, bool]:
    """x0 as a contiguous 1-D floating tensor, and whether fun gets torch tensors."""
    is_torch = isinstance(x0, torch.Tensor)
    if is_torch:
        x = x0.detach()
        if x.is_complex():
            raise ValueError(f"x0 has complex dtype {x.dtype}; pass a real vector")
        if not x.is_floating_point():
            x = x.to(torch.float64)
        x = x.clone()
    else:
        import numpy as np

        try:
            arr = np.asarray(x0)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"x0 must be a 1-D vector of real numbers: {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise ValueError(
                f"x0 must be a 1-D vector of real numbers, got dtype {arr.dtype}; pass a "
                "list, numpy array or torch tensor of floats"
            )
        x = torch.tensor(arr, dtype=torch.float64)
    if x.dim() != 1:
        raise ValueError(
            f"x0 must be 1-D with shape (n,), got shape {tuple(x.shape)}; pass "
            "x0.ravel() (or [x0] for a scalar) and reshape inside fun"
        )
    if x.numel() == 0:
        raise ValueError("x0 is empty; there is nothing to minimize")
    if not bool(torch.isfinite(x).all()):
        bad = torch.nonzero(~torch.isfinite(x)).flatten()[:5].tolist()
        raise ValueError(f"x0 has non-finite entries (indices {bad}); pass a finite start")
    return x, is_torch


def _bounds(bounds, n: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Lower and upper bound vectors from (lo, hi) pairs or an object with lb/ub."""
    if bounds is None:
        return None
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds
        lo = torch.as_tensor(bounds.lb, dtype=torch.float64).broadcast_to((n,))
        hi = torch.as_tensor(bounds.ub, dtype=torch.float64).broadcast_to((n,))
    else:
        pairs = list(bounds)
        if len(pairs) != n or any(len(p) != 2 for p in pairs):
            raise ValueError(
                f"bounds must be {n} (lo, hi) pairs, one per coordinate of x0, got "
                f"{len(pairs)} entries"
            )
        lo = torch.tensor([-math.inf if a is None else float(a) for a, _ in pairs])
        hi = torch.tensor([math.inf if b is None else float(b) for _, b in pairs])
    lo, hi = lo.to(torch.float64), hi.to(torch.float64)
    if bool(torch.isnan(lo).any() | torch.isnan(hi).any()):
        raise ValueError("bounds contain NaN; use None or +-inf for an open side")
    if bool((lo > hi).any()):
        i = int(torch.nonzero(lo > hi)[0])
        raise ValueError(f"bounds for coordinate {i} are empty: lo={lo[i]} > hi={hi[i]}")
    return lo.to(x.device, x.dtype), hi.to(x.device, x.dtype)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r}; it must be an int >= 1")
    return int(value)


def minimize(
    fun,
    x0,
    *,
    max_evals: int | None = None,
    maxiter: int | None = None,
    compute_budget: int | None = None,
    lr: float = 1e-2,
    eps: float = 1e-3,
    momentum: float = 0.9,
    central_difference: bool = True,
    bounds=None,
    gtol: float | None = None,
    callback=None,
    progress: bool = False,
    nonfinite: str = "raise",
    backend: str = "auto",
) -> OptimizeResult:
    """Minimize ``fun(x)`` over a 1-D vector ``x`` with CoCD, starting from ``x0``.

    Budget: ``max_evals`` calls of ``fun`` in all (default ``1000 * n``), counted
    exactly: one at x0, ``2B`` per step (central differences; ``B + 1`` forward), one
    at the final point; steps that would not fit are not taken. ``maxiter`` also caps
    the steps. ``compute_budget`` B (default ``min(n, 32)``), ``lr``, ``eps``,
    ``momentum``, ``central_difference`` and ``nonfinite`` are CoCD's options (see
    ``cocd_cuda.CoCD``).

    ``bounds``: ``(lo, hi)`` pairs (``None`` for an open side) or an object with ``lb``
    and ``ub`` such as ``scipy.optimize.Bounds``; x0 and every step are clipped into the
    box, while finite differences may evaluate ``fun`` up to ``eps`` outside it.
    ``gtol`` (default None: off): stop (``success=True``) once every stored gradient
    estimate has magnitude at most gtol, after a whole cycle over the coordinates.
    ``callback(intermediate)`` is called after each step with an ``OptimizeResult``
    holding ``x``, ``fun`` (the step's loss estimate), ``nit`` and ``nfev``; returning
    True stops the run.
    ``progress=True`` shows a tqdm bar over evaluations.

    A non-finite value of ``fun`` raises ``FloatingPointError`` (``ValueError`` at x0)
    whose ``result`` attribute holds the last finite point; ``nonfinite="zero"`` instead
    refreshes such coordinates with estimate 0 and carries on.
    """
    x, is_torch = _as_vector(x0)
    n = x.numel()
    max_evals = 1000 * n if max_evals is None else _positive_int("max_evals", max_evals)
    maxiter = None if maxiter is None else _positive_int("maxiter", maxiter)
    B = min(n, 32) if compute_budget is None else _positive_int("compute_budget", compute_budget)
    B = min(B, n)
    if gtol is not None and (
        isinstance(gtol, bool) or not isinstance(gtol, numbers.Real) or not gtol >= 0
    ):
        raise ValueError(f"Invalid gtol: {gtol!r}; it must be a number >= 0")
    box = _bounds(bounds, n, x)
    if box is not None:
        torch.clamp(x, *box, out=x)
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise ImportError("progress=True needs tqdm: pip install tqdm") from None
        bar = tqdm(total=max_evals, desc="cocd_cuda.minimize", unit="eval", leave=False)
    else:
        bar = None

    nfev = 0

    def call(point: torch.Tensor):
        nonlocal nfev
        arg = point.clone() if is_torch else point.detach().cpu().numpy().copy()
        value = fun(arg)
        nfev += 1
        if bar is not None:
            bar.update(1)
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"fun must return a scalar, got a tensor of shape {tuple(value.shape)}"
                )
            return value.detach().reshape(()).to(torch.float64)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"fun must return a real scalar, got {type(value).__name__}: {value!r}"
            ) from None

    def export(t: torch.Tensor):
        return t.detach().clone() if is_torch else t.detach().cpu().numpy().copy()

    def result(point, f, nit, status, opt) -> OptimizeResult:
        return OptimizeResult(
            x=export(point),
            fun=float(f),
            jac=export(_estimates(opt)),
            nfev=nfev,
            nit=nit,
            status=status,
            success=status == 0,
            message=_MESSAGES[status],
        )

    try:
        f0 = float(call(x))
        if not math.isfinite(f0):
            raise ValueError(f"fun(x0) = {f0}; start from a point where fun is finite")
        opt = CoCD(
            [x],
            lr=lr,
            eps=eps,
            compute_budget=B,
            momentum=momentum,
            central_difference=central_difference,
            nonfinite=nonfinite,
            backend=backend,
        )
        per_step = n_evals(B, central_difference)
        cycle = -(-n // B)  # steps per sweep over all coordinates
        nit, status = 0, 1
        while nfev + per_step + 1 <= max_evals and (maxiter is None or nit < maxiter):
            last = x.clone()
            try:
                loss = opt.step(lambda: call(x))
            except FloatingPointError as exc:
                err = FloatingPointError(
                    f"fun returned a non-finite value in step {nit + 1} (after {nfev} "
                    "evaluations); the step was not taken. Narrow the bounds, lower lr or "
                    "eps, or pass nonfinite='zero' to skip such coordinates"
                )
                err.result = result(last, f0 if nit == 0 else math.nan, nit, 1, opt)
                raise err from exc
            nit += 1
            if box is not None:
                torch.clamp(x, *box, out=x)
            if callback is not None:
                info = OptimizeResult(x=export(x), fun=float(loss), nit=nit, nfev=nfev)
                if callback(info) is True:
                    status = 2
                    break
            if gtol is not None and nit >= cycle and float(_estimates(opt).abs().max()) <= gtol:
                status = 0
                break
        f_final = f0 if nit == 0 else float(call(x))
        return result(x, f_final, nit, status, opt)
    finally:
        if bar is not None:
            bar.refresh()  # show the final count: updates between refreshes are throttled
            bar.close()


def _estimates(opt: CoCD) -> torch.Tensor:
    """The optimizer's stored gradient estimates, one per coordinate."""
    return opt.state_dict()["state"]["buffer"]

"""Graphed CoCD steps: one whole step captured in a CUDA graph, then replayed.

A CoCD step on a small model is launch-bound on a GPU: 2B closure calls of a few
small kernels each, plus one ``advance_`` per call. Captured once in a CUDA graph,
the step replays with one launch. What makes that valid from step to step: the
native ops read the block pointer and ring head from the device counters tensor
(never a host value), every buffer the step touches is allocated once, and with
``nonfinite="zero"`` nothing is read back on the host.
"""

from __future__ import annotations

import warnings

import torch

from .reference import evaluates_blocks


class GraphedStep:
    """``CoCD.graphed(closure)``: call it with no arguments to take one CoCD step.

    On CUDA the first call captures one step (the closure's evaluations and the
    optimizer kernels) in a CUDA graph, and each call replays it: the closure's Python
    code is not run again. So the closure must be capturable (only CUDA tensor ops, no
    host reads) and must read its data from the same tensors at every call: refill
    them in place (``inputs.copy_(batch)``). The step is recaptured automatically,
    before it runs, when a param group's hyperparameters change, when a parameter's
    storage moves, or when a ``ModelObjective`` is given a new batch by ``set_batch``;
    ``captures`` counts the captures. Each call returns the step's loss estimate as a
    fresh 0-dim tensor. Optimizer step hooks do not run for graphed steps.

    On CPU the same step runs without a graph, so code written for both works on both.
    """

    def __init__(self, optimizer, closure):
        if not callable(closure):
            raise TypeError(
                f"CoCD.graphed needs the closure that returns the loss, got {closure!r}"
            )
        self._optimizer = optimizer
        self._closure = closure
        self._check()
        if evaluates_blocks(closure):
            warnings.warn(
                f"CoCD.graphed evaluates this ModelObjective point by point (its "
                f"'{closure.strategy}' strategy depends on where the block lies, which "
                "changes from step to step, so it cannot be replayed as one graph)",
                stacklevel=3,
            )
        engine = optimizer._engine
        self._device = engine.layout.device
        self._graph: torch.cuda.CUDAGraph | None = None
        self._captured_for = None
        self._loss: torch.Tensor | None = None
        self.captures = 0
        engine.capturable = True  # from now on replays advance the counters on the device

    def _check(self) -> None:
        """What a graph cannot replay; checked at construction and at every call."""
        opt = self._optimizer
        engine = opt._engine
        if engine.name != "native":
            raise ValueError(
                "CoCD.graphed needs the native backend, but this CoCD runs the "
                f"{engine.name} backend; construct it with backend='native' (and build the "
                "extension if that fails)"
            )
        if opt.nonfinite != "zero":
            raise ValueError(
                "CoCD.graphed needs nonfinite='zero': raising on a non-finite loss reads a "
                "flag on the host each step, which a graph cannot do; construct CoCD(..., "
                "nonfinite='zero')"
            )
        if engine.share is not None:
            raise ValueError(
                "CoCD.graphed does not run over a process_group (the share's collectives "
                "are not captured); call step() instead"
            )

    def _point(self):
        """The closure as a plain one, so that the engine evaluates it point by point."""
        return self._closure()

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        self._check()  # load_state_dict may have changed nonfinite
        opt = self._optimizer
        opt._opt_called = True  # what LR schedulers look for (they wrap opt.step)
        hyper = opt._hyperparameters()
        engine = opt._engine
        if self._device.type != "cuda":
            return engine.step(self._point, hyper)
        with torch.cuda.device(self._device):  # capture and replay on the parameters' GPU
            table = engine._param_table()  # rebuilt outside the capture if a storage moved
            closure = self._closure
            key = (
                hyper,
                table,
                getattr(closure, "inputs", None),
                getattr(closure, "targets", None),
            )
            if self._graph is None or not _same(key, self._captured_for):
                self._capture(hyper)
                self._captured_for = key
            self._graph.replay()
            return self._loss.clone()

    def _capture(self, hyper) -> None:
        engine = self._optimizer._engine
        self._graph = self._loss = None  # release the previous graph's memory first
        # Warm the closure up on a side stream, as torch.cuda.graph recommends (lazy
        # library initialisation must not happen during capture), with host syncs made
        # errors. It only evaluates f(x): the optimizer's state and x are untouched.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.cuda.stream(side):
                for _ in range(2):
                    value = self._closure()
        except RuntimeError as exc:
            if "synchronizing CUDA operation" not in str(exc):
                raise
            raise RuntimeError(
                "CoCD.graphed: the closure cannot be captured in a CUDA graph, because it "
                f"synchronises with the host ({exc}); remove host reads such as .item() or "
                "printing tensors from it, or call step() instead"
            ) from exc
        finally:
            torch.cuda.set_sync_debug_mode(mode)
        torch.cuda.current_stream().wait_stream(side)
        if not (isinstance(value, torch.Tensor) and value.is_cuda and value.numel() == 1):
            where = f" on {value.device}" if isinstance(value, torch.Tensor) else ""
            raise TypeError(
                "CoCD.graphed needs a closure that returns its loss as a one-element CUDA "
                f"tensor, got {type(value).__name__}{where}"
            )
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss = engine.step(self._point, hyper)
        self._graph, self._loss = graph, loss
        self.captures += 1


def _same(a: tuple, b: tuple | None) -> bool:
    """Equal hyperparameters and the very same tensors (identity, not values)."""
    if b is None or a[0] != b[0]:
        return False
    return all(x is y for x, y in zip(a[1:], b[1:], strict=True))

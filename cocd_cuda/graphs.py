"""Graphed CoCD steps: one whole step captured in a CUDA graph, then replayed.

A CoCD step on a small model is launch-bound on a GPU: 2B closure calls of a few
small kernels each, plus one ``advance_`` per call. Captured once in a CUDA graph,
the step replays with one launch. What makes that valid from step to step: the
native ops read the block pointer and ring head from the device counters tensor
(never a host value), every buffer the step touches is allocated once, and with
``nonfinite="zero"`` nothing is read back on the host.
"""

from __future__ import annotations

import math
import warnings

import torch

from .evaluation import evaluates_blocks, is_sync_error


class GraphedStep:
    """``CoCD.graphed(closure)``: call it with no arguments to take one CoCD step.

    On CUDA a call captures a step (the closure's evaluations and the optimizer
    kernels) in a CUDA graph the first time it is needed, and replays it: the closure's
    Python code is not run again. So the closure must be capturable (only CUDA tensor
    ops, no host reads) and must read its data from the same tensors at every call:
    refill them in place (``inputs.copy_(batch)``).

    A plain closure gives one graph: its 2B evaluations, point by point. A
    ``ModelObjective`` with the layered or batched strategy gives one graph per set of
    parameter tensors a block can lie in (a few per tensor): each evaluates the B (or
    2B) points of every tensor in its set as one vectorised batch, with the block's
    coordinates read on the device. The graphs share one memory pool.

    The graphs read the param groups' hyperparameters from a device tensor, written
    before each replay, so an LR scheduler (or any change to ``param_groups``) needs no
    recapture. Everything is recaptured, before the step runs, when a parameter's
    storage moves, or when a ``ModelObjective`` is given a new batch by ``set_batch``;
    ``captures`` counts the captures. Each call returns the step's loss estimate as a
    fresh 0-dim tensor. Optimizer step hooks do not run for graphed steps.

    On CPU the same step runs without a graph, so code written for both works on both.
    """

    def __init__(self, step, closure):
        if not callable(closure):
            raise TypeError(
                f"CoCD.graphed needs the closure that returns the loss, got {closure!r}"
            )
        self._opt_step = step  # an optimizer.CapturableStep
        self._closure = closure
        self._check()
        layout = step.layout
        self._by_block = evaluates_blocks(closure) and all(
            closure.vectorises(p) for p in layout.params
        )
        if evaluates_blocks(closure) and not self._by_block:
            warnings.warn(
                "CoCD.graphed evaluates this ModelObjective point by point: some parameters "
                f"are not evaluated by its '{closure.strategy}' strategy",
                stacklevel=3,
            )
        self._device = layout.device
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None
        self._captured_for = None
        self.captures = 0

    def _check(self) -> None:
        """What a graph cannot replay; checked at construction and at every call."""
        problem = self._opt_step.problem()
        if problem is not None:
            raise ValueError(problem)

    def _point(self):
        """The closure as a plain one, so that the engine evaluates it point by point."""
        return self._closure()

    def _touched(self, c: int | None = None) -> tuple[int, ...]:
        """The parameters the block at c lies in (empty: evaluate point by point)."""
        if not self._by_block:
            return ()
        step = self._opt_step
        runs = step.layout.runs(step.block_pointer() if c is None else c, step.B)
        return tuple(sorted({run.param for run in runs}))

    def _step(self, touched):
        if touched:
            return self._opt_step.step(self._closure, touched)
        return self._opt_step.step(self._point)

    def _refresh(self) -> None:
        """Drop every graph if what they were captured for changed."""
        closure = self._closure
        key = (
            *self._opt_step.captured_for(),
            getattr(closure, "inputs", None),
            getattr(closure, "targets", None),
        )
        if not _same(key, self._captured_for):
            self._graphs.clear()  # release the old graphs' memory first
            self._pool = torch.cuda.graph_pool_handle()
            self._captured_for = key

    def _graph_for(self, touched):
        if touched not in self._graphs:
            touched, graph, loss = self._capture(touched)
            self._graphs[touched] = (graph, loss)
        return self._graphs[touched]

    @torch.no_grad()
    def __call__(self) -> torch.Tensor:
        self._check()  # load_state_dict may have changed nonfinite
        if self._device.type != "cuda":
            return self._step(self._touched())
        with torch.cuda.device(self._device):  # capture and replay on the parameters' GPU
            self._refresh()
            graph, loss = self._graph_for(self._touched())
            graph.replay()
            self._opt_step.replayed()
            return loss.clone()

    @torch.no_grad()
    def capture_all(self) -> None:
        """Capture now every graph the coming steps can need, rather than on first use.

        Graphs are captured as blocks reach new sets of tensors; this does all of them
        at once (it takes no step), so that later calls only replay. On CPU it does
        nothing.
        """
        if self._device.type != "cuda":
            return
        with torch.cuda.device(self._device):
            self._refresh()
            for touched in self._tensor_sets():
                self._graph_for(touched)

    def _tensor_sets(self) -> list[tuple[int, ...]]:
        """Every value of ``_touched`` from here on: c cycles through c0 + kB (mod n)."""
        step = self._opt_step
        n, B, c = step.layout.n, step.B, step.block_pointer()
        period = n // math.gcd(n, B)
        return list(dict.fromkeys(self._touched((c + k * B) % n) for k in range(period)))

    def _capture(self, touched):
        """Warm up, then capture one step; returns (touched, graph, loss).

        If the by-block evaluation fails (say, an op without a vmap rule), the step is
        captured point by point instead, and stays so.
        """
        # Warm up on a side stream, as torch.cuda.graph recommends (lazy library
        # initialisation must not happen during capture), with host syncs made errors.
        # It only evaluates f: the optimizer's state and x are untouched.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.cuda.stream(side):
                for _ in range(2):
                    value = self._closure()
                    if touched:
                        try:
                            self._opt_step.evaluate(self._closure, touched)
                        except RuntimeError as exc:
                            if is_sync_error(exc):
                                raise
                            warnings.warn(
                                f"CoCD.graphed: evaluating by block failed ({exc}); "
                                "evaluating point by point from now on",
                                stacklevel=4,
                            )
                            self._by_block, touched = False, ()
                            self._graphs.clear()
        except RuntimeError as exc:
            if not is_sync_error(exc):
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
        # The graphs of one GraphedStep share a pool: each only passes data to the next
        # through buffers allocated outside the graphs, and its one live output (the
        # loss) is held until it is dropped with the graph.
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            loss = self._step(touched)
        self.captures += 1
        return touched, graph, loss


def _same(a: tuple, b: tuple | None) -> bool:
    """The very same tensors (identity, not values)."""
    return b is not None and all(x is y for x, y in zip(a, b, strict=True))

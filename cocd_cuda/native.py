"""The native engine: CoCD's step through the fused cocd_cuda ops (csrc/).

Per step: ``plan_`` saves the block's coordinates and their perturbed values once,
``advance_`` runs once per evaluation (it stores the previous loss on the device,
restores the previous coordinate and perturbs the next), ``finite_difference_`` forms
the estimates, and ``dense_update_`` (one pass over x and v, every param group at once) or
``fifo_update_`` (one pass over the ring) decays, refreshes and descends. No op reads
a device value on the host; with ``nonfinite="raise"`` the step reads one int32 flag.

On CPU the per-evaluation work of ``advance_`` runs in Python instead
(``_evaluate_on_host``): it writes the bits ``plan_`` saved through integer numpy views
of the parameters, which costs a third of an op call, and stores the losses once.

The ops read the block pointer and ring head from the device copy of the step counters
(``state.StepCounters``), never from a host value, so a whole step can be captured in a
CUDA graph (``CoCD.graphed``).
"""

from __future__ import annotations

import torch

try:
    import numpy as _np
except ImportError:  # numpy is optional: CPU evaluations then go through advance_
    _np = None

from . import ops as _ops
from .evaluation import (
    Block,
    block_losses,
    evaluates_blocks,
    n_evals,
    nonfinite_error,
    perturbed,
    points_of,
)
from .layout import as_loss
from .ops import LOAD_ERROR, unsupported  # noqa: F401  (LOAD_ERROR: part of this module's API)
from .state import CoCDState
from .validation import check_unchanged


def _bits_view(p: torch.Tensor):
    """p's elements as unsigned integers (signed for 8 bytes, as the slots hold them)."""
    size = p.element_size()
    flat = p.detach().reshape(-1).view({2: torch.int16, 4: torch.int32, 8: torch.int64}[size])
    return flat.numpy().view({2: _np.uint16, 4: _np.uint32, 8: _np.int64}[size])


class NativeEngine:
    """CoCD's step through the fused ops, on a ``CoCDState`` it does not own.

    It keeps only per-step scratch (the slots, the losses, the estimates) and the
    parameter table, rebuilt when a parameter's storage moves.
    """

    name = "native"

    def __init__(self, layout, compute_budget: int, central: bool):
        dev, B = layout.device, compute_budget
        self.layout, self.B, self.central = layout, B, central
        self._n_eval = n_evals(B, central)
        self._slots = torch.empty((B, _ops.SLOT_ROW), dtype=torch.int64, device=dev)
        self._losses = torch.empty(self._n_eval, dtype=torch.float64, device=dev)
        self._g = torch.empty(B, dtype=layout.acc_dtype, device=dev)
        self._bad = torch.zeros(1, dtype=torch.int32, device=dev)
        self._block_offsets = torch.arange(B, device=dev)
        self._is_cuda = dev.type == "cuda"
        self._ptrs: list[int] | None = None
        self._table: torch.Tensor | None = None
        self._bits: list | None = None  # CPU: integer numpy views of the parameters
        # CPU evaluations write the planned bits through numpy views (`_evaluate_on_host`)
        # rather than call advance_ once per evaluation: the same values at a third of the
        # cost. Tests switch this off to check the two paths against each other.
        self.host_evaluation = True
        # The groups' hyperparameters as the ops read them, and the values written there.
        rows = (len(layout.group_bounds), _ops.HYPER_ROW)
        self._hyper = torch.zeros(rows, dtype=torch.float64, device=dev)
        self._hyper_values: list | None = None

    def set_hyper(self, hyper) -> None:
        """Write the groups' hyperparameters to the device table, if they changed. Never
        while a CUDA graph is captured: graphed steps set them before each replay."""
        if hyper != self._hyper_values:
            _ops.hyper_table(hyper, out=self._hyper)
            self._hyper_values = list(hyper)

    def param_table(self) -> torch.Tensor:
        """The device table of parameter addresses, rebuilt only if storage moved."""
        layout = self.layout
        ptrs = [p.data_ptr() for p in layout.params]
        # The table's sizes must still hold: a storage replaced by a smaller one (even at
        # the same address) would be written past its end. The full check (dtype, device,
        # contiguity) only when something moved.
        if ptrs != self._ptrs or [p.numel() for p in layout.params] != layout.numels:
            check_unchanged(layout, contiguous=True)
            reason = unsupported(layout)
            if reason is not None:
                raise RuntimeError(f"the native engine can no longer run: {reason}")
            self._table = _ops.param_table(layout)
            self._ptrs = ptrs
            self._bits = (
                None if self._is_cuda or _np is None else [_bits_view(p) for p in layout.params]
            )
        return self._table

    def step(self, state: CoCDState, closure, hyper, nonfinite: str, share, touched=None):
        """One step. ``touched`` (a graphed step): the parameters the block lies in; the
        closure then evaluates the points by ``point_losses``, driven by the device
        counters alone (``tensor_block_losses``)."""
        ops = torch.ops.cocd_cuda
        layout, n = self.layout, self.layout.n
        table = self.param_table()
        slots, central, counters = self._slots, self.central, state.counters
        if not (self._is_cuda and torch.cuda.is_current_stream_capturing()):
            self.set_hyper(hyper)
        ops.plan_(slots, table, self._hyper, counters.tensor, n, central)

        def local():
            if touched is not None:
                return self.tensor_block_losses(state, closure, touched)
            if evaluates_blocks(closure):
                c = counters.c
                block = Block.at(layout, c, self.B, [hp.eps for hp in hyper], central)
                return block_losses(closure, block, share, layout, c)
            if not share.whole:
                self._losses.zero_()
            self._evaluate_in_place(closure, table, share.evals())
            return self._losses

        losses = share.gather(local, layout.device)
        loss = torch.empty((), dtype=layout.acc_dtype, device=layout.device)
        zero = nonfinite == "zero"
        ops.finite_difference_(self._g, loss, self._bad, losses, slots, central, zero)
        if not zero and self._bad.item():  # raise mode's one host read per step
            raise nonfinite_error(losses, self._g, central, counters.c, n, counters.t)
        self._update(state, table)
        counters.advance()
        return loss

    def _update(self, state: CoCDState, table) -> None:
        """Decay, refresh and descend, in one pass over the buffer."""
        ops, layout, k = torch.ops.cocd_cuda, self.layout, state.counters.tensor
        if state.dense:
            ops.dense_update_(layout.params, state.v, self._g, table, self._hyper, k, layout.n)
        else:
            ops.fifo_update_(
                layout.params, state.coords, state.v, self._g, table, self._hyper, k, layout.n
            )

    def tensor_block_losses(self, state: CoCDState, closure, touched) -> torch.Tensor:
        """f at the block's points, by parameter, with shapes independent of the block.

        For each parameter in ``touched`` the closure evaluates all B (or 2B) points;
        for slots outside that parameter they move its element 0, and are discarded.
        The block's coordinates come from the device counters, so a CUDA graph of this
        replays correctly for any block that lies in the same parameters; eps is read
        from the device table of hyperparameters, so a replay uses its current value.
        """
        layout, central, losses = self.layout, self.central, self._losses
        with torch.no_grad():
            acts = closure.begin_points()
            if not central:
                losses[0] = closure.unperturbed(acts)
            coords = (state.counters.tensor[0] + self._block_offsets) % layout.n
            region = losses if central else losses[1:]
            for index in touched:
                p, start = layout.params[index], layout.starts[index]
                inside = (coords >= start) & (coords < start + layout.numels[index])
                elems = torch.where(inside, coords - start, 0)
                base = p.reshape(-1)[elems]
                eps = self._hyper[layout.param_group[index], _ops.EPS_COLUMN]
                plus = perturbed(base, eps).double()  # slots outside p: any point will do
                if central:
                    minus = perturbed(base, -eps).double()
                    values = torch.stack([plus, minus], 1).reshape(-1)
                    # Each slot twice, in evaluation order (a view and a copy: no host sync).
                    elems, base, inside = (
                        t.unsqueeze(1).expand(-1, 2).reshape(-1) for t in (elems, base, inside)
                    )
                else:
                    values = plus
                f = closure.point_losses(p, elems, values, base.double(), acts)
                region.copy_(torch.where(inside, f, region))
        return losses

    def _evaluate_in_place(self, closure, table, evals: list[int]) -> None:
        """Call the closure at each point in evals; advance_ perturbs, records, restores."""
        if self._bits is not None and self.host_evaluation:
            return self._evaluate_on_host(closure, evals)
        ops, slots, losses, central = torch.ops.cocd_cuda, self._slots, self._losses, self.central
        advance = ops.advance_.default  # the resolved overload: ~0.1 us less per evaluation
        params = self.layout.params
        n_eval, dev, is_cuda = self._n_eval, self.layout.device, self._is_cuda
        if not evals:
            return
        current = -1  # the evaluation whose perturbation x holds now
        try:
            advance(losses, params, slots, table, None, -1, evals[0], central)
            current = evals[0]
            for idx, k in enumerate(evals):
                value = closure()
                if type(value) is not torch.Tensor or value.is_cuda != is_cuda or value.is_meta:
                    value = as_loss(value, dev).to(dev)
                nxt = evals[idx + 1] if idx + 1 < len(evals) else n_eval
                advance(losses, params, slots, table, value, k, nxt, central)
                current = nxt
        except BaseException:
            # Exact restore; while a CUDA graph is being captured nothing has run, and the
            # failed capture accepts no more work.
            if not (is_cuda and torch.cuda.is_current_stream_capturing()):
                advance(losses, params, slots, table, None, current, n_eval, central)
            raise

    def _evaluate_on_host(self, closure, evals: list[int]) -> None:
        """advance_'s work on CPU, in Python: each evaluation writes the raw bits plan_
        saved (no arithmetic, so the points are exactly the kernels'), and the losses are
        stored once at the end. Only for CPU parameters, whose memory numpy can see."""
        if not evals:
            return
        bits, central, dev = self._bits, self.central, self.layout.device
        rows = self._slots.tolist()  # [param, offset, saved, plus, minus, h] per slot
        values: list[float] = []
        held = -1  # the slot whose coordinate x holds perturbed now
        try:
            for j, minus_side in points_of(evals, central):
                if held >= 0 and held != j:
                    param, offset, saved = rows[held][:3]
                    bits[param][offset] = saved
                    held = -1
                if j >= 0:
                    param, offset, _, plus, minus = rows[j][:5]
                    bits[param][offset] = minus if minus_side else plus
                    held = j
                value = closure()
                if (
                    type(value) is torch.Tensor
                    and value.numel() == 1
                    and not value.is_complex()
                    and not value.is_meta
                ):
                    values.append(float(value))  # exact: every loss dtype fits a double
                else:
                    values.append(float(as_loss(value, dev)))  # raises for what is not a loss
        finally:
            if held >= 0:  # exact restore: the saved bits, never x + eps - eps
                param, offset, saved = rows[held][:3]
                bits[param][offset] = saved
        index = slice(None) if len(evals) == self._n_eval else torch.tensor(evals, dtype=torch.long)
        self._losses[index] = torch.tensor(values, dtype=torch.float64)

"""The native engine: CoCD's step through the fused cocd_cuda ops (csrc/).

Per step: ``plan_`` saves the block's coordinates and their perturbed values once,
``advance_`` runs once per evaluation (it stores the previous loss on the device,
restores the previous coordinate and perturbs the next), ``finite_difference_`` forms
the estimates, and ``dense_update_`` (one pass over x and v per param group) or
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

import importlib.util

import torch

try:
    import numpy as _np
except ImportError:  # numpy is optional: CPU evaluations then go through advance_
    _np = None

from . import _build
from .evaluation import (
    Block,
    block_losses,
    evaluates_blocks,
    n_evals,
    nonfinite_error,
    perturbed,
    slot_of,
)
from .layout import as_loss
from .state import CoCDState
from .validation import check_unchanged

_DTYPE_CODE = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}
MAX_GROUPS = 64  # kMaxGroups in csrc/kernels/cocd_kernels.h


def _register_fakes() -> None:
    """Meta implementations, so opcheck and torch.compile can trace the ops."""

    def _mutating(name: str) -> None:
        torch.library.register_fake(f"cocd_cuda::{name}")(lambda *args, **kwargs: None)

    for name in ("plan_", "advance_", "finite_difference_", "dense_update_", "fifo_update_"):
        _mutating(name)

    @torch.library.register_fake("cocd_cuda::perturb_batch")
    def _(x, index, delta):
        torch._check(index.dim() == 1, lambda: f"index must be 1-D, got {index.dim()}-D")
        torch._check(delta.shape == index.shape, lambda: "delta must match index in shape")
        return x.new_empty((index.numel(), *x.shape))


def _bits_view(p: torch.Tensor):
    """p's elements as unsigned integers (signed for 8 bytes, as the slots hold them)."""
    size = p.element_size()
    flat = p.detach().reshape(-1).view({2: torch.int16, 4: torch.int32, 8: torch.int64}[size])
    return flat.numpy().view({2: _np.uint16, 4: _np.uint32, 8: _np.int64}[size])


def _load() -> str | None:
    """Load the ops (the built extension, or one compiled on first use); why not, or None."""
    if _build.flag("COCD_NO_EXT"):
        return "COCD_NO_EXT is set"
    if importlib.util.find_spec(f"{__package__}._C") is None:
        reason = _build.compile_on_first_use()
        if reason is not None:
            return reason
    else:
        try:
            from . import _C  # noqa: F401  (registers the ops)
        except ImportError as exc:  # built, but for another torch or Python
            return (
                f"the extension cocd_cuda._C does not load ({exc}); rebuild it against the "
                f"installed torch: `{_build.BUILD_COMMAND}` from the source checkout"
            )
    _register_fakes()
    return None


LOAD_ERROR = _load()


def unsupported(layout) -> str | None:
    """Why the native engine cannot run these parameters, or None if it can."""
    if LOAD_ERROR is not None:
        return LOAD_ERROR
    device = layout.device.type
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device)
    if key is None or not torch._C._dispatch_has_kernel_for_dispatch_key("cocd_cuda::plan_", key):
        return f"the extension has no {device} kernels"
    if len(layout.group_bounds) > MAX_GROUPS:
        return f"{len(layout.group_bounds)} param groups exceed the kernels' {MAX_GROUPS}"
    for i, p in enumerate(layout.params):
        if not p.is_contiguous():
            return f"parameter {i} is not contiguous (shape {tuple(p.shape)})"
    return None


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
        self._slots = torch.empty((B, 6), dtype=torch.int64, device=dev)
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
        groups: list[list[torch.Tensor]] = [[] for _ in layout.group_bounds]
        for p, gi in zip(layout.params, layout.param_group, strict=True):
            groups[gi].append(p)
        self._group_params = groups

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
            rows = [
                [ptr, start, numel, _DTYPE_CODE[p.dtype] | (gi << 8)]
                for ptr, start, numel, p, gi in zip(
                    ptrs,
                    layout.starts,
                    layout.numels,
                    layout.params,
                    layout.param_group,
                    strict=True,
                )
            ]
            self._table = torch.tensor(rows, dtype=torch.int64).to(layout.device)
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
        ops.plan_(slots, table, counters.tensor, n, [hp.eps for hp in hyper], central)

        def local():
            if touched is not None:
                return self.tensor_block_losses(state, closure, touched, hyper)
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
        self._update(state, table, hyper)
        counters.advance()
        return loss

    def _update(self, state: CoCDState, table, hyper) -> None:
        """Decay, refresh and descend, in one pass over the buffer."""
        ops, layout, k = torch.ops.cocd_cuda, self.layout, state.counters.tensor
        if state.dense:
            for params, (start, _), hp in zip(
                self._group_params, layout.group_bounds, hyper, strict=True
            ):
                ops.dense_update_(
                    params, state.v, self._g, start, k, layout.n, hp.lr, hp.weight_decay,
                    hp.momentum,
                )  # fmt: skip
        else:
            ops.fifo_update_(
                layout.params,
                state.coords,
                state.v,
                self._g,
                table,
                k,
                layout.n,
                [hp.lr for hp in hyper],
                [hp.weight_decay for hp in hyper],
                [hp.momentum for hp in hyper],
            )

    def tensor_block_losses(self, state: CoCDState, closure, touched, hyper) -> torch.Tensor:
        """f at the block's points, by parameter, with shapes independent of the block.

        For each parameter in ``touched`` the closure evaluates all B (or 2B) points;
        for slots outside that parameter they move its element 0, and are discarded.
        The block's coordinates come from the device counters, so a CUDA graph of this
        replays correctly for any block that lies in the same parameters.
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
                eps = hyper[layout.param_group[index]].eps
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
        n_eval, dev, is_cuda = self._n_eval, self.layout.device, self._is_cuda
        if not evals:
            return
        current = -1  # the evaluation whose perturbation x holds now
        try:
            advance(losses, slots, table, None, -1, evals[0], central)
            current = evals[0]
            for idx, k in enumerate(evals):
                value = closure()
                if type(value) is not torch.Tensor or value.is_cuda != is_cuda or value.is_meta:
                    value = as_loss(value, dev).to(dev)
                nxt = evals[idx + 1] if idx + 1 < len(evals) else n_eval
                advance(losses, slots, table, value, k, nxt, central)
                current = nxt
        except BaseException:
            # Exact restore; while a CUDA graph is being captured nothing has run, and the
            # failed capture accepts no more work.
            if not (is_cuda and torch.cuda.is_current_stream_capturing()):
                advance(losses, slots, table, None, current, n_eval, central)
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
            for k in evals:
                j = slot_of(k, central)
                if held >= 0 and held != j:
                    param, offset, saved = rows[held][:3]
                    bits[param][offset] = saved
                    held = -1
                if j >= 0:
                    param, offset, _, plus, minus = rows[j][:5]
                    bits[param][offset] = minus if central and k % 2 else plus
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

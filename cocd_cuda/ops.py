"""The Python face of the cocd_cuda ops (csrc/ops.cpp): loading them, their fakes, the
kernels' ABI as the extension exports it, and the two tables the ops read.

The ops address the parameters through a parameter table (``param_table``: one int64
row per parameter tensor) and read each param group's hyperparameters from a float64
table on the parameters' device (``hyper_table``), so that a step captured in a CUDA
graph replays with the values the table holds at replay.
"""

from __future__ import annotations

import importlib.util

import torch

from . import _build


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


def _register_fakes() -> None:
    """Fake (meta) implementations that check what the real ones check about shapes and
    dtypes, so that opcheck and torch.compile trace the ops as they run."""
    lib = "cocd_cuda::"

    def rows(t, width, dtype, what):
        torch._check(
            t.dim() == 2 and t.shape[1] == width and t.dtype == dtype,
            lambda: (
                f"{what} must be a {dtype} [rows, {width}] tensor, got {t.dtype} {tuple(t.shape)}"
            ),
        )

    def acc(t, what):
        torch._check(
            t.dtype in (torch.float32, torch.float64),
            lambda: f"{what} must be float32 or float64, got {t.dtype}",
        )

    def table_of(table, params):
        rows(table, 4, torch.int64, "the parameter table")
        torch._check(
            table.shape[0] == len(params),
            lambda: f"the parameter table has {table.shape[0]} rows for {len(params)} parameters",
        )

    def counters_of(counters):
        torch._check(
            counters.dtype == torch.int64 and counters.numel() == 3,
            lambda: "counters must be an int64 tensor of 3 elements",
        )

    @torch.library.register_fake(lib + "plan_")
    def _(slots, table, hyper, counters, n, central):
        rows(slots, 6, torch.int64, "the block slots")
        rows(table, 4, torch.int64, "the parameter table")
        rows(hyper, 4, torch.float64, "the hyperparameters")
        counters_of(counters)

    @torch.library.register_fake(lib + "advance_")
    def _(losses, params, slots, table, loss, src, dst, central):
        torch._check(losses.dtype == torch.float64, lambda: "losses must be float64")
        rows(slots, 6, torch.int64, "the block slots")
        table_of(table, params)
        if loss is not None:
            torch._check(loss.numel() == 1, lambda: "the closure must return a scalar loss")

    @torch.library.register_fake(lib + "finite_difference_")
    def _(g, loss_out, bad, losses, slots, central, zero_nonfinite):
        rows(slots, 6, torch.int64, "the block slots")
        B = slots.shape[0]
        acc(g, "g")
        torch._check(g.numel() == B, lambda: f"g must have {B} elements")
        torch._check(loss_out.dtype == g.dtype and loss_out.numel() == 1, lambda: "loss_out")
        torch._check(bad.dtype == torch.int32 and bad.numel() == 1, lambda: "bad: int32 [1]")
        expected = 2 * B if central else B + 1
        torch._check(
            losses.dtype == torch.float64 and losses.numel() == expected,
            lambda: f"losses must be float64 with {expected} elements",
        )

    @torch.library.register_fake(lib + "dense_update_")
    def _(params, buffer, g, table, hyper, counters, n):
        acc(buffer, "buffer")
        torch._check(buffer.numel() == n, lambda: f"buffer must have n = {n} elements")
        torch._check(g.dtype == buffer.dtype, lambda: "g must have the buffer's dtype")
        torch._check(sum(p.numel() for p in params) == n, lambda: f"params must hold n = {n}")
        table_of(table, params)
        rows(hyper, 4, torch.float64, "the hyperparameters")
        counters_of(counters)

    @torch.library.register_fake(lib + "fifo_update_")
    def _(params, coords, vals, g, table, hyper, counters, n):
        acc(vals, "vals")
        torch._check(
            coords.dtype in (torch.int32, torch.int64) and coords.numel() == vals.numel(),
            lambda: "coords must be int32 or int64, one per ring entry",
        )
        torch._check(g.dtype == vals.dtype, lambda: "g must have the ring's dtype")
        table_of(table, params)
        rows(hyper, 4, torch.float64, "the hyperparameters")
        counters_of(counters)


LOAD_ERROR = _load()

# The kernels' ABI, read once from the extension (None without it).
ABI: dict[str, int] | None = (
    None if LOAD_ERROR else dict(zip(*torch.ops.cocd_cuda.abi(), strict=True))
)
if ABI is not None:
    DTYPE_CODE = {
        dtype: ABI[f"dtype.{str(dtype).removeprefix('torch.')}"]
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    }
    PARAM_FIELDS = ("ptr", "start", "numel", "meta")
    HYPER_FIELDS = ("lr", "weight_decay", "eps", "momentum")
    # Each row's fields in their ABI order, and the widths of the three row kinds.
    PARAM_ORDER = sorted(PARAM_FIELDS, key=lambda f: ABI[f"param_row.{f}"])
    HYPER_ORDER = sorted(HYPER_FIELDS, key=lambda f: ABI[f"hyper_row.{f}"])
    HYPER_ROW = ABI["hyper_row"]
    EPS_COLUMN = ABI["hyper_row.eps"]
    SLOT_ROW = ABI["slot_row"]
    SUM_LANES = ABI["sum_lanes"]


def unsupported(layout) -> str | None:
    """Why the native engine cannot run these parameters, or None if it can."""
    if LOAD_ERROR is not None:
        return LOAD_ERROR
    device = layout.device.type
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device)
    if key is None or not torch._C._dispatch_has_kernel_for_dispatch_key("cocd_cuda::plan_", key):
        return f"the extension has no {device} kernels"
    for i, p in enumerate(layout.params):
        if not p.is_contiguous():
            return f"parameter {i} is not contiguous (shape {tuple(p.shape)})"
    return None


def param_table(layout) -> torch.Tensor:
    """The parameter table: one int64 row per parameter tensor (where its elements are,
    its first coordinate, its size, its dtype and param group), on its device."""
    shift = ABI["param_row.group_shift"]
    table = []
    for p, start, numel, gi in zip(
        layout.params, layout.starts, layout.numels, layout.param_group, strict=True
    ):
        fields = dict(ptr=p.data_ptr(), start=start, numel=numel, meta=DTYPE_CODE[p.dtype])
        fields["meta"] |= gi << shift
        table.append([fields[f] for f in PARAM_ORDER])
    return torch.tensor(table, dtype=torch.int64).to(layout.device)


def hyper_table(hyper, device=None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The groups' hyperparameters (``validation.GroupHyper`` each) as the float64 [G, 4]
    table the ops read: a new tensor on ``device``, or written into ``out``.

    On CUDA the values go from freshly pinned host memory with a non-blocking copy, so
    the host does not wait; the caching host allocator keeps that memory until the copy
    has run. Not while a CUDA graph is being captured: the graph would replay the copy.
    """
    rows = [[getattr(hp, f) for f in HYPER_ORDER] for hp in hyper]
    target = out.device if out is not None else torch.device(device or "cpu")
    host = torch.tensor(rows, dtype=torch.float64, pin_memory=target.type == "cuda")
    if out is None:
        return host.to(target, non_blocking=True)
    torch._check(out.shape == host.shape, lambda: f"out must have shape {tuple(host.shape)}")
    return out.copy_(host, non_blocking=True)

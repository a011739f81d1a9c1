"""Scale-out over torch.distributed: which evaluations a rank does, and combining them.

Coordinate-parallel: rank r evaluates a contiguous share of the block's coordinates on
the same mini-batch. Every rank fills a zero vector with its own losses and one
all-reduce (SUM) of the 2B losses makes the vector identical everywhere: each entry has
exactly one non-zero contribution, so the sum is exact and every rank then computes
the same estimates and applies the same update, bit for bit, with no broadcast.

Data-parallel: every rank evaluates all points on its own shard of the batch; the
all-reduce sums the losses and they are divided by the world size (exact for
mean-reduced losses over equal shards, up to the order of the sum).

One more slot in the same all-reduce counts failed ranks, so a closure that raises on
any rank makes the step raise on every rank with nothing changed; a rank that never
arrives makes the others fail after ``timeout`` seconds instead of hanging.
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

from .evaluation import evals_of, n_evals

MODES = ("coordinate", "data")


class Share:
    """This rank's part of each step's evaluations, and how the parts are combined.

    The same interface as ``evaluation.Everything``, which stands for a single process.
    """

    def __init__(self, group, mode: str, B: int, central: bool, timeout: float):
        if mode not in MODES:
            raise ValueError(f"Invalid parallel: {mode!r}; use 'coordinate' or 'data'")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "process_group was given but torch.distributed is not initialised; call "
                "torch.distributed.init_process_group(...) first"
            )
        self.group, self.mode, self.timeout = group, mode, timeout
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.central = central
        if mode == "coordinate":
            self.j0 = self.rank * B // self.world
            self.j1 = (self.rank + 1) * B // self.world
            self.with_f0 = self.rank == 0
        else:
            self.j0, self.j1, self.with_f0 = 0, B, True
        self.n_eval = n_evals(B, central)
        self.whole = mode == "data"  # coordinate: other ranks' evaluations stay zeros here

    def evals(self) -> list[int]:
        """Indices of the evaluations this rank performs, in the engine's order."""
        return evals_of(self.j0, self.j1, self.central, self.with_f0)

    def gather(self, evaluate, device) -> torch.Tensor:
        """Run this rank's evaluations (zeros elsewhere) and combine them across ranks."""
        failure = None
        try:
            losses = evaluate()
        except BaseException as exc:  # every rank must still reach the all-reduce
            failure = exc
            losses = torch.zeros(self.n_eval, dtype=torch.float64, device=device)
        status = torch.tensor([0.0 if failure is None else 1.0], dtype=torch.float64)
        buf = torch.cat([losses.to(torch.float64), status.to(device)])
        work = dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group, async_op=True)
        # Held until the next collective, so that this process, not a backend thread,
        # drops the last reference to a collective's tensors: one released by a gloo
        # worker thread during interpreter shutdown can abort the process.
        self._held = (work, buf)
        try:
            work.wait(datetime.timedelta(seconds=self.timeout))
        except RuntimeError as exc:
            raise RuntimeError(
                f"CoCD rank {self.rank}: not every rank reached this step's all-reduce "
                f"within {self.timeout} s (a rank crashed or is stuck); the step did not "
                "happen on this rank"
            ) from exc
        if failure is not None:
            raise failure
        failed = int(buf[-1].item())  # one host read per step in distributed mode
        if failed:
            raise RuntimeError(
                f"CoCD: the closure raised on {failed} other rank(s); parameters and "
                "optimizer state are unchanged on every rank"
            )
        losses = buf[:-1]
        return losses / self.world if self.mode == "data" else losses

    def broadcast(self, params: list[torch.Tensor]) -> None:
        """Start every rank from rank 0's parameters (the only broadcast ever made)."""
        src = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        held = []
        with torch.no_grad():
            for p in params:
                buf = p.detach().contiguous()  # p's own storage when p is contiguous
                held.append((dist.broadcast(buf, src=src, group=self.group), buf))
                if buf.data_ptr() != p.data_ptr():
                    p.copy_(buf)
        self._held = held  # as in gather

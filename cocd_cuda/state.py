"""CoCD's state: the estimate buffer, the FIFO ring and the step counters.

``CoCD`` owns one ``CoCDState``; the engines (reference, native) are stateless and
update it in place. Adding a buffer (say, a second moment) means adding it here, to
the kernels' update and to the engines' update call.
"""

from __future__ import annotations

import torch

from .layout import ParamLayout

MAX_STEPS = 1 << 62  # the step counter t wraps here (as in the C core)


def ring_coordinates(c: int, head: int, t: int, n: int, m: int, B: int) -> torch.Tensor:
    """The FIFO ring's coordinates, slot by slot, that the counters imply.

    The ring starts as coordinates 0..m-1 and each step pushes c, c+1, ... into slots
    head, head+1, ...; so while fewer than m coordinates have been pushed (t*B < m) it
    still holds 0..m-1, and from then on slot head+k (mod m) holds c - m + k (mod n).
    """
    if t * B < m:
        return torch.arange(m)
    return (c - m + (torch.arange(m) - head) % m) % n


class StepCounters:
    """The step counters {c, head, t}, advanced once per step by every kind of step.

    ``c`` is the block pointer (the block's first coordinate), ``head`` the ring's
    oldest entry (FIFO; 0 in dense mode) and ``t`` the steps taken. They live in an
    int64 [3] device tensor that the native ops read (so a CUDA graph of a step stays
    valid as they advance), with a host copy kept alongside, so reading them never
    reads the device: an eager step advances both, a graph replay the device copy, and
    ``replayed`` then moves the host copy the same way.
    """

    def __init__(self, device: torch.device, n: int, m: int, B: int, dense: bool):
        self.n, self.m, self.B, self.dense = n, m, B, dense
        self.tensor = torch.zeros(3, dtype=torch.int64, device=device)
        self._host = (0, 0, 0)
        self._by = torch.tensor([B, 0 if dense else B, 1], device=device)
        self._wrap = torch.tensor([n, m, MAX_STEPS], device=device)

    @property
    def c(self) -> int:
        return self._host[0]

    @property
    def head(self) -> int:
        return self._host[1]

    @property
    def t(self) -> int:
        return self._host[2]

    def set(self, c: int, head: int, t: int) -> None:
        self._host = (c, head, t)
        self.tensor.copy_(torch.tensor(self._host, dtype=torch.int64))

    def next(self, c: int, head: int, t: int) -> tuple[int, int, int]:
        """The counters one step after (c, head, t): the one place of this arithmetic
        (the device copy does the same with ``_by`` and ``_wrap``)."""
        return (c + self.B) % self.n, head if self.dense else (head + self.B) % self.m, t + 1

    def advance(self) -> None:
        """One step on the device (capturable: no host read), and on the host unless
        this is a CUDA graph capture, which runs nothing now."""
        self.tensor.add_(self._by).remainder_(self._wrap)
        if not (self.tensor.is_cuda and torch.cuda.is_current_stream_capturing()):
            self._host = self.next(*self._host)

    def replayed(self) -> None:
        """A graph replay advanced the device copy by one step; follow it on the host."""
        self._host = self.next(*self._host)


class CoCDState:
    """The buffer ``v`` and, in FIFO mode, the ring ``coords``, plus the counters.

    Dense (memory_budget = n): ``v[i]`` is coordinate i's estimate. FIFO: a full ring
    of (coords[k], v[k]) pairs whose oldest entry, the next to be overwritten, is at
    ``counters.head``; the B fresh estimates of a step go to ring slots head, head+1,
    ... (mod m). The ring starts full, holding coordinates 0..m-1.
    """

    def __init__(self, layout: ParamLayout, B: int, m: int, init_grad: torch.Tensor | None):
        dev, acc = layout.device, layout.acc_dtype
        self.B, self.m, self.n = B, m, layout.n
        self.dense = m == layout.n
        self.v = torch.zeros(m, dtype=acc, device=dev)
        # int32 ring coordinates while they fit (8 bytes per ring entry with a float32
        # buffer, as in the C library), int64 beyond 2^31 coordinates.
        coord_dtype = torch.int32 if layout.n < 2**31 else torch.int64
        self.coords = None if self.dense else torch.arange(m, dtype=coord_dtype, device=dev)
        if init_grad is not None:
            self.v.copy_(init_grad)
        self.counters = StepCounters(dev, layout.n, m, B, self.dense)

    def ring_slots(self, offsets: torch.Tensor) -> torch.Tensor:
        """The ring slots the block's fresh estimates go to (FIFO)."""
        return (self.counters.head + offsets) % self.m

    def reset(self) -> None:
        self.v.zero_()
        if self.coords is not None:
            self.coords.copy_(torch.arange(self.m, device=self.coords.device))  # same dtype
        self.counters.set(0, 0, 0)

    def state_dict(self) -> dict:
        c, head, t = self.counters.c, self.counters.head, self.counters.t
        return {
            "buffer": self.v.clone(),
            "coords": None if self.coords is None else self.coords.clone(),
            "head": head,
            "fill": self.m,  # the ring starts full (coordinates 0..m-1) and stays full
            "c": c,
            "t": t,
        }

    def load(self, state: dict) -> None:
        """Commit a state that ``validation.cocd_state`` checked in full."""
        self.v.copy_(state["buffer"])
        if self.coords is not None:
            self.coords.copy_(state["coords"])
        self.counters.set(int(state["c"]), int(state["head"]), int(state["t"]))

"""``cocd_cuda.CoCD``: the public optimizer class."""

from __future__ import annotations

import operator

import torch

from . import backends
from .distributed import Share
from .graphs import GraphedStep
from .layout import ParamLayout, check_params, finite_number
from .reference import GroupHyper

_GROUP_OPTIONS = ("lr", "weight_decay", "eps", "momentum")
_OPTIMIZER_OPTIONS = (
    "compute_budget",
    "memory_budget",
    "central_difference",
    "init_grad",
    "nonfinite",
    "backend",
    "process_group",
    "parallel",
)


def _check_group(group: dict, where: str) -> GroupHyper:
    """Validate one param group's hyperparameters; the error names the bad value."""
    for key in _OPTIMIZER_OPTIONS:
        if key in group:
            raise ValueError(
                f"{key} is an optimizer-wide option of CoCD; pass it to CoCD(...), "
                f"not in a param group ({where})"
            )
    lr = finite_number("lr", group["lr"], where)
    wd = finite_number("weight_decay", group["weight_decay"], where)
    eps = finite_number("eps", group["eps"], where)
    gamma = finite_number("momentum", group["momentum"], where)
    if lr < 0:
        raise ValueError(f"Invalid lr: {lr!r} ({where}); it must be >= 0")
    if wd < 0:
        raise ValueError(f"Invalid weight_decay: {wd!r} ({where}); it must be >= 0")
    if eps <= 0:
        raise ValueError(f"Invalid eps: {eps!r} ({where}); it must be > 0")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"Invalid momentum: {gamma!r} ({where}); it must lie in [0, 1]")
    return GroupHyper(lr, wd, eps, gamma)


def _budget(name: str, value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"Invalid {name}: {value!r}; it must be an int >= 1")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"Invalid {name}: {value!r}; it must be an int >= 1") from None
    if value < 1:
        raise ValueError(f"Invalid {name}: {value!r}; it must be an int >= 1")
    return value


class CoCD(torch.optim.Optimizer):
    """Coherent Coordinate Descent: deterministic zeroth-order optimization.

    Each step decays the stored per-coordinate gradient estimates by ``momentum``,
    refreshes a cyclic block of ``compute_budget`` coordinates with finite differences
    of radius ``eps``, and descends along the whole buffer. ``step`` needs a closure
    that returns the loss; it is called under ``torch.no_grad()`` and must compute the
    same function at every call of one step (fixed mini-batch, no dropout).

    ``lr``, ``weight_decay``, ``eps`` and ``momentum`` are per param group and are read
    at every step (LR schedulers work). ``compute_budget`` (B), ``memory_budget`` (m,
    default: every coordinate), ``central_difference``, ``init_grad`` and ``nonfinite``
    (``"raise"``: a non-finite loss raises FloatingPointError and changes nothing;
    ``"zero"``: such coordinates are refreshed with 0) are optimizer-wide.
    ``backend`` is ``"auto"``, ``"reference"`` or ``"native"``; the attribute
    ``backend`` says which one runs. With ``process_group`` (torch.distributed), each
    rank evaluates a share of the block (``parallel="coordinate"``) or all points on
    its own data shard (``parallel="data"``); parameters start from rank 0's and stay
    identical on every rank. ``timeout`` bounds, in seconds, the wait for other ranks.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        init_grad: torch.Tensor | None = None,
        eps: float = 1e-1,
        compute_budget: int = 1,
        memory_budget: int | None = None,
        momentum: float = 1.0,
        central_difference: bool = True,
        *,
        nonfinite: str = "raise",
        backend: str = "auto",
        process_group=None,
        parallel: str = "coordinate",
        timeout: float = 300.0,
    ):
        defaults = dict(lr=lr, weight_decay=weight_decay, eps=eps, momentum=momentum)
        _check_group(defaults, "defaults")
        B = _budget("compute_budget", compute_budget)
        m = None if memory_budget is None else _budget("memory_budget", memory_budget)
        if not isinstance(central_difference, bool):
            raise TypeError(
                f"central_difference must be a bool, got {central_difference!r} "
                f"({type(central_difference).__name__})"
            )
        if nonfinite not in ("raise", "zero"):
            raise ValueError(f"Invalid nonfinite: {nonfinite!r}; use 'raise' or 'zero'")
        if backend not in ("auto", "reference", "native"):
            raise ValueError(f"Invalid backend: {backend!r}; use 'auto', 'reference' or 'native'")
        self._constructed = False
        super().__init__(params, defaults)
        check_params(self.param_groups)
        self._constructed = True

        layout = ParamLayout(self.param_groups)
        n = layout.n
        B = min(B, n)  # B > n refreshes every coordinate, once
        m = n if m is None else min(m, n)
        if m < B:
            raise ValueError(
                f"Invalid memory_budget: {memory_budget!r} is smaller than compute_budget "
                f"{B}; the buffer must hold at least one block (memory_budget >= "
                "compute_budget)"
            )
        init = self._check_init_grad(init_grad, m, layout) if init_grad is not None else None
        self.compute_budget = B
        self.memory_budget = m
        self.central_difference = central_difference
        self.nonfinite = nonfinite
        engine_cls = backends.select(backend, layout)
        self._engine = engine_cls(layout, B, m, central_difference, nonfinite, init)
        self.backend = self._engine.name
        if process_group is not None:
            timeout = finite_number("timeout", timeout, "CoCD(...)")
            if timeout <= 0:
                raise ValueError(f"Invalid timeout: {timeout!r}; give seconds > 0")
            share = Share(process_group, parallel, B, central_difference, timeout)
            share.broadcast(layout.params)
            self._engine.share = share

    @staticmethod
    def _check_init_grad(init_grad, m: int, layout: ParamLayout) -> torch.Tensor:
        if not isinstance(init_grad, torch.Tensor) or not init_grad.is_floating_point():
            what = init_grad.dtype if isinstance(init_grad, torch.Tensor) else type(init_grad)
            raise ValueError(
                f"init_grad must be a floating-point tensor with {m} elements (one per "
                f"buffer entry), got {what}"
            )
        if init_grad.numel() != m:
            raise ValueError(
                f"init_grad has {init_grad.numel()} elements; expected exactly {m} (one "
                "per buffer entry: entry k is the initial estimate of coordinate k)"
            )
        # A copy, never an alias: the caller's tensor must not change under us.
        init = init_grad.detach().reshape(-1).to(layout.device, layout.acc_dtype, copy=True)
        if not bool(torch.isfinite(init).all()):
            raise ValueError("init_grad contains NaN or infinity; pass finite estimates")
        return init

    # ------------------------------------------------------------ torch.optim API
    def add_param_group(self, param_group: dict) -> None:
        """Param groups are given at construction; adding one later is not supported."""
        if getattr(self, "_constructed", False):
            raise RuntimeError(
                "CoCD fixes its coordinates at construction (the buffer and the cyclic "
                "block are laid out over them); create a new CoCD over all parameters "
                "instead of calling add_param_group"
            )
        super().add_param_group(param_group)
        _check_group(self.param_groups[-1], f"param group {len(self.param_groups) - 1}")

    @torch.no_grad()
    def step(self, closure=None) -> torch.Tensor:
        """Perform one CoCD step and return the loss estimate as a 0-dim tensor.

        Forward differences return f(x); central differences return the mean of
        (f(x + eps e_i) + f(x - eps e_i)) / 2 over the block, an O(eps^2) estimate of
        f(x) that costs no extra evaluation.
        """
        if closure is None:
            raise TypeError(
                "CoCD.step needs a closure that returns the loss, e.g. "
                "opt.step(lambda: loss_fn(model(x), y)): CoCD evaluates the loss itself, "
                "at 2B perturbed points. Frameworks that run backward() and then call "
                "step() without a closure (Hugging Face Trainer, PyTorch Lightning's "
                "automatic optimization) cannot drive it that way: write a loop that "
                "calls opt.step(closure), or use Lightning's manual optimization"
            )
        return self._engine.step(closure, self._hyperparameters())

    def graphed(self, closure) -> GraphedStep:
        """A callable that takes one step of ``closure`` per call, replayed from CUDA graphs.

        ``step = opt.graphed(closure)``, then ``loss = step()`` once per step. Steps are
        captured in CUDA graphs when first needed and replayed after that, without host
        reads. A plain closure gives one graph of its 2B evaluations; a layered or
        batched ``ModelObjective`` gives one graph per set of tensors a block can lie
        in, each evaluating the points by block. Results agree with
        ``opt.step(closure)`` up to rounding. It needs the native backend and
        ``nonfinite="zero"``, and a closure made of CUDA tensor ops that reads its
        batch from the same tensors at every call (refill them in place). Changed
        hyperparameters, moved parameters or a new ``set_batch`` batch trigger new
        captures. On CPU it runs the same step without a graph. See ``GraphedStep``.
        """
        return GraphedStep(self, closure)

    def _hyperparameters(self) -> list[GroupHyper]:
        """Each param group's hyperparameters, validated, as they are now."""
        return [_check_group(g, f"param group {i}") for i, g in enumerate(self.param_groups)]

    def reset(self) -> None:
        """Zero the buffer and set the block pointer and step counter to 0."""
        self._engine.reset()

    @property
    def step_count(self) -> int:
        """Steps taken since construction or the last ``reset``."""
        return self._engine.t

    def state_dict(self) -> dict:
        """torch.optim layout: ``param_groups`` as usual, the CoCD state under ``state``."""
        out = super().state_dict()
        out["state"] = {
            **self._engine.state(),
            "n": self._engine.layout.n,
            "compute_budget": self.compute_budget,
            "memory_budget": self.memory_budget,
            "central_difference": self.central_difference,
            "nonfinite": self.nonfinite,
        }
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume from ``state_dict()``: the continued run is bit for bit the unbroken one."""
        state = state_dict.get("state", {})
        missing = [k for k in ("buffer", "c", "t", "head", "n") if k not in state]
        if missing:
            raise ValueError(f"not a CoCD state_dict: 'state' lacks {missing}")
        expected = {
            "n": self._engine.layout.n,
            "compute_budget": self.compute_budget,
            "memory_budget": self.memory_budget,
            "central_difference": self.central_difference,
        }
        for key, value in expected.items():
            if state[key] != value:
                raise ValueError(
                    f"state_dict has {key}={state[key]!r} but this optimizer has "
                    f"{key}={value!r}; construct CoCD with the saved options to resume"
                )
        buffer = state["buffer"]
        if tuple(buffer.shape) != (self.memory_budget,):
            raise ValueError(
                f"state_dict buffer has shape {tuple(buffer.shape)}, expected "
                f"({self.memory_budget},)"
            )
        c, head = int(state["c"]), int(state["head"])
        if not (0 <= c < self._engine.layout.n and 0 <= head < self.memory_budget):
            raise ValueError(f"state_dict has an out-of-range pointer c={c} or head={head}")
        super().load_state_dict({**state_dict, "state": {}})
        for i, group in enumerate(self.param_groups):
            _check_group(group, f"param group {i} of the loaded state_dict")
        nonfinite = state.get("nonfinite", self.nonfinite)
        if nonfinite not in ("raise", "zero"):
            raise ValueError(f"state_dict has an invalid nonfinite={nonfinite!r}")
        self._engine.load(state)
        self.nonfinite = self._engine.nonfinite = nonfinite

"""``cocd_cuda.CoCD``: the public optimizer class."""

from __future__ import annotations

import torch

from . import backends, closures, validation
from .distributed import Share
from .evaluation import Everything
from .graphs import GraphedStep
from .layout import ParamLayout
from .state import CoCDState
from .validation import GROUP_OPTIONS, GroupHyper, check_params, cocd_group, finite_number


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

    @torch.inference_mode(False)  # a CoCD built under inference_mode steps outside it
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
        validation.store_floats(defaults, GROUP_OPTIONS, _values(cocd_group(defaults, "defaults")))
        B = validation.integer("compute_budget", compute_budget)
        m = None if memory_budget is None else validation.integer("memory_budget", memory_budget)
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
        self._warned_backward = False

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
        init = None
        if init_grad is not None:
            init = validation.check_init_grad(init_grad, m, layout.device, layout.acc_dtype)
        self.compute_budget = B
        self.memory_budget = m
        self.central_difference = central_difference
        self.nonfinite = nonfinite
        engine_cls = backends.select(backend, layout)
        self._state = CoCDState(layout, B, m, init)
        self._engine = engine_cls(layout, B, central_difference)
        self.backend = self._engine.name
        if process_group is None:
            self._share = Everything(B, central_difference)
        else:
            timeout = finite_number("timeout", timeout, "CoCD(...)")
            if timeout <= 0:
                raise ValueError(f"Invalid timeout: {timeout!r}; give seconds > 0")
            self._share = Share(process_group, parallel, B, central_difference, timeout)
            self._share.broadcast(layout.params)

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
        self._check_group(len(self.param_groups) - 1)

    @torch.no_grad()
    def step(self, closure=None, *, objective=None) -> torch.Tensor:
        """Perform one CoCD step and return the loss estimate as a 0-dim tensor.

        Forward differences return f(x); central differences return the mean of
        (f(x + eps e_i) + f(x - eps e_i)) / 2 over the block, an O(eps^2) estimate of
        f(x) that costs no extra evaluation.

        Closures written for gradient-based optimizers run as they are (see
        ``cocd_cuda.closures``): one with a ``backward`` parameter gets
        ``backward=False``; ``backward()`` calls inside are skipped, with a warning
        once. ``objective`` (for frameworks that pass keyword arguments through to
        ``step``) is what CoCD evaluates; ``closure`` is then called once per step,
        before the evaluations, for the framework's hooks.
        """
        once, closure = closures.split(closure, objective)
        if closure is None:
            raise TypeError(
                "CoCD.step needs a closure that returns the loss, e.g. "
                "opt.step(lambda: loss_fn(model(x), y)): CoCD evaluates the loss itself, "
                "at 2B perturbed points. Frameworks that run backward() and then call "
                "step() without a closure (Hugging Face Trainer, PyTorch Lightning's "
                "automatic optimization) cannot drive it that way: write a loop that "
                "calls opt.step(closure), or use Lightning's manual optimization"
            )
        with closures.skipping_backward() as called:
            if once is not None:
                once()
            loss = self._take_step(closure)
        if called[0] and not self._warned_backward:
            self._warned_backward = True
            closures.warn_backward(stacklevel=2)
        return loss

    def graphed(self, closure) -> GraphedStep:
        """A callable that takes one step of ``closure`` per call, replayed from CUDA graphs.

        ``step = opt.graphed(closure)``, then ``loss = step()`` once per step. Steps are
        captured in CUDA graphs when first needed and replayed after that, without host
        reads. A plain closure gives one graph of its 2B evaluations; a layered or
        batched (or graph) ``ModelObjective`` gives one graph per set of tensors a block can lie
        in, each evaluating the points by block. Results agree with
        ``opt.step(closure)`` up to rounding. It needs the native backend and
        ``nonfinite="zero"``, and a closure made of CUDA tensor ops that reads its
        batch from the same tensors at every call (refill them in place). Moved
        parameters or a new ``set_batch`` batch trigger new captures; changed
        hyperparameters (LR schedulers) do not, as the kernels read them from a device
        tensor. On CPU it runs the same step without a graph. See ``GraphedStep``.
        """
        return GraphedStep(CapturableStep(self), closure)

    def _take_step(self, closure, touched=None) -> torch.Tensor:
        """One step of the engine on the state: the one call every kind of step makes
        (``touched``: a graphed step's parameters, see ``GraphedStep``)."""
        hyper = self._hyperparameters()
        if touched is None:
            return self._engine.step(self._state, closure, hyper, self.nonfinite, self._share)
        return self._engine.step(self._state, closure, hyper, self.nonfinite, self._share, touched)

    def _hyperparameters(self) -> list[GroupHyper]:
        """Each param group's hyperparameters, validated, as they are now."""
        return [self._check_group(i) for i in range(len(self.param_groups))]

    def _check_group(self, index: int) -> GroupHyper:
        """Param group ``index`` checked, its values stored back as plain floats."""
        group = self.param_groups[index]
        hp = cocd_group(group, f"param group {index}")
        validation.store_floats(group, GROUP_OPTIONS, _values(hp))
        return hp

    def reset(self) -> None:
        """Zero the buffer and set the block pointer and step counter to 0."""
        self._state.reset()

    @property
    def step_count(self) -> int:
        """Steps taken since construction or the last ``reset``."""
        return self._state.counters.t

    def state_dict(self) -> dict:
        """torch.optim layout: ``param_groups`` as usual, the CoCD state under ``state``."""
        out = super().state_dict()
        out["state"] = {
            **self._state.state_dict(),
            "n": self._state.n,
            "compute_budget": self.compute_budget,
            "memory_budget": self.memory_budget,
            "central_difference": self.central_difference,
            "nonfinite": self.nonfinite,
        }
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume from ``state_dict()``: the continued run is bit for bit the unbroken one.

        The whole state dict is checked first (``validation.cocd_state``); on any error
        nothing has changed.
        """
        hyper, state = validation.cocd_state(state_dict, self)
        super().load_state_dict({**state_dict, "state": {}})
        for group, hp in zip(self.param_groups, hyper, strict=True):
            validation.store_floats(group, GROUP_OPTIONS, _values(hp))
        self._state.load(state)
        self.nonfinite = state["nonfinite"]


def _values(hp: GroupHyper) -> tuple[float, float, float, float]:
    return (hp.lr, hp.weight_decay, hp.eps, hp.momentum)


class CapturableStep:
    """A ``CoCD``'s step as CUDA graphs of it need it: the interface ``GraphedStep`` uses.

    ``step(closure, touched)`` takes one step (``touched``: evaluate the block's points
    by parameter, with shapes that do not depend on the block, so a graph of it
    replays for every block in those parameters); ``evaluate`` runs only that
    evaluation (to warm up); ``replayed`` records that a graph replay took a step.
    """

    def __init__(self, opt: CoCD):
        self._opt = opt
        self.layout = opt._engine.layout
        self.B = opt.compute_budget

    def problem(self) -> str | None:
        """Why this optimizer's steps cannot be captured, or None."""
        opt = self._opt
        if opt.backend != "native":
            return (
                "CoCD.graphed needs the native backend, but this CoCD runs the "
                f"{opt.backend} backend; construct it with backend='native' (and build the "
                "extension if that fails)"
            )
        if opt.nonfinite != "zero":
            return (
                "CoCD.graphed needs nonfinite='zero': raising on a non-finite loss reads a "
                "flag on the host each step, which a graph cannot do; construct CoCD(..., "
                "nonfinite='zero')"
            )
        if not isinstance(opt._share, Everything):
            return (
                "CoCD.graphed does not run over a process_group (the share's collectives "
                "are not captured); call step() instead"
            )
        return None

    def block_pointer(self) -> int:
        """The next step's first coordinate (known on the host: no device read)."""
        return self._opt._state.counters.c

    def captured_for(self) -> tuple:
        """What a graph bakes in besides the counters and hyperparameters (the parameter
        table, rebuilt here when a storage moved, never during a capture). Also writes
        the hyperparameters to the device table the graphs read, so changing them (an
        LR scheduler) needs no recapture."""
        opt = self._opt
        table = opt._engine.param_table()
        opt._engine.set_hyper(opt._hyperparameters())
        return (table,)

    def step(self, closure, touched: tuple[int, ...] | None = None) -> torch.Tensor:
        self._opt._opt_called = True  # what LR schedulers look for (they wrap opt.step)
        return self._opt._take_step(closure, touched)

    def evaluate(self, closure, touched: tuple[int, ...]) -> torch.Tensor:
        """The block's losses as ``step(closure, touched)`` computes them; no state changes."""
        opt = self._opt
        return opt._engine.tensor_block_losses(opt._state, closure, touched, opt._hyperparameters())

    def replayed(self) -> None:
        self._opt._opt_called = True
        self._opt._state.counters.replayed()

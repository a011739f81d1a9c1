"""Random-direction zeroth-order peers of CoCD: ``SPSA``, ``ZOSGD`` and ``MeZO``.

The optimizers the paper compares CoCD against, with CoCD's closure API. Each step draws
``num_directions`` (q) random directions ``d`` and forms the two-point estimate

    g = (1/q) * sum_k (f(x + eps d_k) - f(x - eps d_k)) / (2 eps) * d_k

from ``2q`` evaluations of the closure (the same budget as CoCD with ``compute_budget = q``),
then descends with decoupled weight decay like CoCD: ``x <- x (1 - lr wd) - lr g``.

- ``SPSA``: Rademacher directions (each entry +1 or -1).
- ``ZOSGD``: Gaussian directions, ``d ~ N(0, I)`` (random gradient estimation).
- ``MeZO``: ZO-SGD that never stores a direction: each one is regenerated from its seed
  whenever it is needed and applied to the parameters in place.

BCCD is ``cocd_cuda.CoCD(momentum=0)``; the first-order oracle is ``torch.optim.SGD``.

Common behaviour
----------------
- ``step(closure)`` calls the closure ``2q`` times under ``torch.no_grad()``: for each
  direction at ``x + eps d`` then at ``x - eps d``, every evaluation at the same base point.
  It returns the mean of ``(f(x + eps d) + f(x - eps d)) / 2`` over the directions, an
  O(eps^2) estimate of ``f(x)``, as a 0-dim tensor on the parameters' device (float32, or
  float64 when a parameter is float64). ``evaluations`` counts the evaluations so far
  (``2q`` per completed step), ``step_count`` the steps.
- Deterministic given ``seed``: a CPU generator seeded with ``seed`` draws one 63-bit seed
  per direction and step; the direction's entries come from the optimizer's own
  ``torch.Generator`` on the parameters' device, reseeded per chunk of at most
  ``chunk_size`` entries of one tensor (so a direction can be regenerated piece by piece).
  ``seed=None`` draws the seed from torch's global generator (``torch.manual_seed`` makes
  that reproducible too). ZOSGD and MeZO draw the same directions from the same seed, so
  with equal settings they take the same steps (bit for bit on CPU).
- Directions, projections and the estimate are float32 (float64 with float64
  parameters), whatever the parameter dtype; a perturbed value is ``x + eps * d`` formed
  in that dtype and rounded once to the parameter dtype.
- ``lr`` and ``weight_decay`` are per param group and read at every step (LR schedulers
  work); ``eps``, ``num_directions``, ``seed`` and ``chunk_size`` are optimizer-wide (one
  scalar difference is formed per direction across all groups).
- Faults: if the closure raises, or a loss is not finite (``FloatingPointError``), the
  parameters are restored bit for bit, the step counters and the seed generator are left
  as before the step, and the error propagates.
"""

from __future__ import annotations

import torch

from . import validation
from .layout import as_loss
from .validation import finite_number

__all__ = ["SPSA", "ZOSGD", "MeZO"]

_MASK63 = (1 << 63) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # odd 64-bit constant: distinct, well-spread chunk seeds


def _chunk_seed(direction_seed: int, chunk: int) -> int:
    """The generator seed of one chunk of one direction (chunks counted across tensors)."""
    return (direction_seed + (chunk + 1) * _GOLDEN) & _MASK63


class _RandomDirectionZO(torch.optim.Optimizer):
    """Shared machinery: validation, direction seeds, chunked direction generation."""

    _distribution = "gaussian"  # or "rademacher"

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        eps: float = 1e-3,
        num_directions: int = 1,
        weight_decay: float = 0.0,
        seed: int | None = None,
        *,
        chunk_size: int = 1 << 16,
    ):
        name = type(self).__name__
        defaults = dict(lr=lr, weight_decay=weight_decay)
        hyper = self._check_group(defaults, "defaults")
        validation.store_floats(defaults, validation.BASELINE_OPTIONS, hyper)
        eps = finite_number("eps", eps, "optimizer")
        if eps <= 0:
            raise ValueError(f"Invalid eps: {eps!r}; it must be > 0")
        self.eps = eps
        self.num_directions = validation.integer("num_directions", num_directions)
        self.chunk_size = validation.integer("chunk_size", chunk_size)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        self.seed = validation.integer("seed", seed, minimum=0)
        super().__init__(params, defaults)
        validation.check_params(self.param_groups, name)
        params = [p for g in self.param_groups for p in g["params"]]
        self._params = params
        self.device = params[0].device
        wide = any(p.dtype == torch.float64 for p in params)
        self.acc_dtype = torch.float64 if wide else torch.float32
        self._seeds = torch.Generator().manual_seed(self.seed)  # host: one seed per direction
        self._gen = torch.Generator(device=self.device)  # device: the directions' entries
        self.evaluations = 0
        self._t = 0

    # ------------------------------------------------------------------ options
    @staticmethod
    def _check_group(group: dict, where: str) -> tuple[float, float]:
        return validation.baseline_group(group, where)

    def add_param_group(self, param_group: dict) -> None:
        if getattr(self, "_params", None) is not None:
            raise RuntimeError(
                f"{type(self).__name__} fixes its parameters at construction; create a new "
                "optimizer over all parameters instead of calling add_param_group"
            )
        super().add_param_group(param_group)
        self._group_hyper(len(self.param_groups) - 1)

    def _group_hyper(self, index: int) -> tuple[float, float]:
        """Param group ``index`` checked, its values stored back as plain floats."""
        group = self.param_groups[index]
        hyper = self._check_group(group, f"param group {index}")
        validation.store_floats(group, validation.BASELINE_OPTIONS, hyper)
        return hyper

    @property
    def evaluations_per_step(self) -> int:
        """Closure calls per step: two per direction."""
        return 2 * self.num_directions

    @property
    def step_count(self) -> int:
        return self._t

    # ------------------------------------------------------------------ directions
    def _chunks(self):
        """(param, group index, flat start, length, global chunk index), in the fixed order."""
        j = 0
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                for start in range(0, p.numel(), self.chunk_size):
                    yield p, gi, start, min(self.chunk_size, p.numel() - start), j
                    j += 1

    def _draw(self, direction_seed: int, chunk: int, length: int, out=None) -> torch.Tensor:
        """One chunk of one direction, regenerated from its seed (into ``out`` if given)."""
        self._gen.manual_seed(_chunk_seed(direction_seed, chunk))
        kw = dict(generator=self._gen, device=self.device, dtype=self.acc_dtype, out=out)
        if self._distribution == "rademacher":
            return torch.randint(0, 2, (length,), **kw).mul_(2).sub_(1)
        return torch.randn(length, **kw)

    def _evaluate(self, closure) -> torch.Tensor:
        return as_loss(closure(), self.device).to(self.device, torch.float64)

    def _finish(self, f_plus: list, f_minus: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Projections (f+ - f-)/(2 eps) per direction and the returned loss; one sync."""
        fp, fm = torch.stack(f_plus), torch.stack(f_minus)
        if not bool(torch.isfinite(fp).all() & torch.isfinite(fm).all()):
            raise FloatingPointError(
                f"{type(self).__name__}: the closure returned a non-finite loss "
                f"(f(x+eps d) = {fp.tolist()}, f(x-eps d) = {fm.tolist()}); parameters "
                "restored, step not taken"
            )
        proj = ((fp - fm) / (2.0 * self.eps)).to(self.acc_dtype)
        loss = ((fp + fm) * 0.5).mean().to(self.acc_dtype)
        return proj, loss

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        out = super().state_dict()
        out["state"] = {
            "step": self._t,
            "evaluations": self.evaluations,
            "seed": self.seed,
            "seed_generator": self._seeds.get_state(),
            "num_directions": self.num_directions,
            "eps": self.eps,
            "chunk_size": self.chunk_size,
        }
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume from ``state_dict()``: the continued run repeats the unbroken one."""
        hyper, state = validation.baseline_state(state_dict, self)  # changes nothing
        super().load_state_dict({**state_dict, "state": {}})
        for group, values in zip(self.param_groups, hyper, strict=True):
            validation.store_floats(group, validation.BASELINE_OPTIONS, values)
        self.eps, self.seed = state["eps"], state["seed"]
        self._seeds.set_state(state["seed_generator"])
        self._t, self.evaluations = state["step"], state["evaluations"]

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure=None) -> torch.Tensor:
        """One step: 2q evaluations, the averaged estimate, the decoupled update."""
        if closure is None:
            raise TypeError(
                f"{type(self).__name__}.step needs a closure that returns the loss, e.g. "
                "opt.step(lambda: loss_fn(model(x), y))"
            )
        hyper = [self._group_hyper(i) for i in range(len(self.param_groups))]
        saved = self._seeds.get_state()
        seeds = torch.randint(
            0, _MASK63, (self.num_directions,), generator=self._seeds, dtype=torch.int64
        ).tolist()
        try:
            loss = self._step(closure, seeds, hyper)
        except BaseException:
            self._seeds.set_state(saved)
            raise
        self._t += 1
        self.evaluations += self.evaluations_per_step
        return loss

    def _step(self, closure, seeds: list[int], hyper: list[tuple[float, float]]) -> torch.Tensor:
        raise NotImplementedError


class _StoredDirection(_RandomDirectionZO):
    """The textbook form: the saved point, the direction and the estimate are stored.

    Three parameter-sized buffers, allocated once at construction: the saved parameters
    ``x0`` (parameter dtype), the current direction ``d`` and the running estimate ``g``
    (float32, or float64). Each direction is drawn once per step, into ``d``; the
    parameters are restored from ``x0`` after the evaluations, exactly.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        eps: float = 1e-3,
        num_directions: int = 1,
        weight_decay: float = 0.0,
        seed: int | None = None,
        *,
        chunk_size: int = 1 << 16,
    ):
        super().__init__(params, lr, eps, num_directions, weight_decay, seed, chunk_size=chunk_size)
        acc = self.acc_dtype
        self._x0 = [torch.empty(p.numel(), dtype=p.dtype, device=p.device) for p in self._params]
        self._d = [torch.empty(p.numel(), dtype=acc, device=p.device) for p in self._params]
        self._g = [torch.zeros(p.numel(), dtype=acc, device=p.device) for p in self._params]
        index = {id(p): i for i, p in enumerate(self._params)}
        self._index = index
        # each chunk of the direction buffer, in the generation order
        self._slots = [
            (self._d[index[id(p)]][start : start + length], j, length)
            for p, _, start, length, j in self._chunks()
        ]

    def _write_all(self, flats: list[torch.Tensor]) -> None:
        """Copy flat values into the parameters (rounded once to their dtype)."""
        views = [f.view(p.shape) for f, p in zip(flats, self._params, strict=True)]
        torch._foreach_copy_(self._params, views)

    def _step(self, closure, seeds, hyper):
        params, x0s, ds, gs = self._params, self._x0, self._d, self._g
        acc, c = self.acc_dtype, self.eps
        torch._foreach_copy_(x0s, [p.reshape(-1) for p in params])
        torch._foreach_zero_(gs)
        base = [x0 if x0.dtype == acc else x0.to(acc) for x0 in x0s]
        f_plus, f_minus = [], []
        try:
            for s in seeds:
                for out, j, length in self._slots:
                    self._draw(s, j, length, out=out)
                cd = torch._foreach_mul(ds, c)
                self._write_all(torch._foreach_add(base, cd))  # round(x0 + eps d)
                f_plus.append(self._evaluate(closure))
                self._write_all(torch._foreach_sub(base, cd))  # round(x0 - eps d)
                f_minus.append(self._evaluate(closure))
                # d is overwritten by the next direction: add its share now (on the device)
                proj = ((f_plus[-1] - f_minus[-1]) / (2.0 * c)).to(acc)
                torch._foreach_add_(gs, torch._foreach_mul(ds, proj))
        finally:
            self._write_all(x0s)
        _, loss = self._finish(f_plus, f_minus)
        q = len(seeds)
        new = []
        for group, (lr, wd) in zip(self.param_groups, hyper, strict=True):
            for p in group["params"]:
                i = self._index[id(p)]
                new.append(base[i] * (1.0 - lr * wd) - (lr / q) * gs[i])
        self._write_all(new)
        return loss


class SPSA(_StoredDirection):
    """Simultaneous perturbation stochastic approximation with Rademacher directions.

    ``g = (1/q) sum_k (f(x + eps d_k) - f(x - eps d_k)) / (2 eps) * d_k``, each entry of
    ``d_k`` +1 or -1 with equal probability; ``2q`` evaluations per step (q =
    ``num_directions``). Arguments ``lr, eps, num_directions, weight_decay, seed`` (and
    ``chunk_size``, see the module docstring); update ``x <- x (1 - lr wd) - lr g``.
    Keeps three parameter-sized buffers (saved point, direction, estimate), allocated once.
    """

    _distribution = "rademacher"


class ZOSGD(_StoredDirection):
    """ZO-SGD (random gradient estimation) with Gaussian directions ``d ~ N(0, I)``.

    As ``SPSA`` with Gaussian directions: ``2q`` evaluations per step, the estimate
    averaged over the q = ``num_directions`` directions, ``x <- x (1 - lr wd) - lr g``.
    Keeps three parameter-sized buffers (saved point, direction, estimate), allocated once.
    ``MeZO`` with the same seed takes the same steps without storing the direction.
    """

    _distribution = "gaussian"


class MeZO(_RandomDirectionZO):
    """Memory-efficient ZO-SGD: Gaussian directions regenerated from their seeds, in place.

    Same estimator and update as ``ZOSGD`` (and with the same ``seed``, the same steps), but
    no direction and no estimate is ever stored: each direction is regenerated from its
    seed, one chunk of at most ``chunk_size`` entries of one tensor at a time, each time it
    is needed (perturb +, perturb -, update). The only tensors a step allocates are such
    chunks and 0-dim losses: nothing parameter-sized, whatever the model.

    Restoring the parameters after the two evaluations of a direction:

    - ``exact_restore=True`` (default): bit for bit. Rounding makes in-place perturbation
      lossy: in float32, ``(x + eps z) - eps z`` differs from ``x`` in about 5-25% of the
      entries for typical weights, and the chain ``x + eps z - 2 eps z + eps z`` of the
      original MeZO in about half of them; the lost low bits cannot be regenerated from the
      seed (the map ``x -> round(x + eps z)`` is not one-to-one). So MeZO keeps one saved
      copy of the parameters (parameter dtype), allocated once at construction and refilled
      in place each step: the perturbed values are written as ``round(x0 + eps z)`` and
      ``round(x0 - eps z)`` and the parameters are restored with a copy from it. This is
      the one parameter-sized buffer (the textbook ZO-SGD keeps three); no parameter-sized
      tensor is allocated per step.
    - ``exact_restore=False``: the original MeZO, no parameter-sized memory at all. The
      parameters are moved in place to ``x + eps z``, then ``- 2 eps z``, then ``+ eps z``
      (each rounded once to the parameter dtype), so they return to ``x`` only to within a
      few units in the last place per step.

    The update is formed chunk by chunk in float32 (float64) and rounded once:
    ``x <- x (1 - lr wd) - (lr/q) sum_k proj_k z_k``. A parameter that is not contiguous
    (e.g. channels-last) is processed through a temporary contiguous copy of that tensor.
    """

    _distribution = "gaussian"

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        eps: float = 1e-3,
        num_directions: int = 1,
        weight_decay: float = 0.0,
        seed: int | None = None,
        *,
        exact_restore: bool = True,
        chunk_size: int = 1 << 16,
    ):
        super().__init__(params, lr, eps, num_directions, weight_decay, seed, chunk_size=chunk_size)
        if not isinstance(exact_restore, bool):
            raise TypeError(f"exact_restore must be a bool, got {exact_restore!r}")
        self.exact_restore = exact_restore
        self._backup = (
            [torch.empty(p.numel(), dtype=p.dtype, device=p.device) for p in self._params]
            if exact_restore
            else None
        )
        self._index = {id(p): i for i, p in enumerate(self._params)}

    def _tensors(self):
        """Per parameter: (param, group index, a flat view or contiguous copy, write-back)."""
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.is_contiguous():
                    yield p, gi, p.view(-1), False
                else:
                    yield p, gi, p.reshape(-1).clone(), True

    def _apply(self, fn) -> None:
        """Call fn(param chunk, saved chunk or None, group index, length, chunk index)."""
        j = 0
        for p, gi, flat, write_back in self._tensors():
            b = self._backup[self._index[id(p)]] if self._backup is not None else None
            for start in range(0, flat.numel(), self.chunk_size):
                length = min(self.chunk_size, flat.numel() - start)
                sl = slice(start, start + length)
                fn(flat[sl], None if b is None else b[sl], gi, length, j)
                j += 1
            if write_back:
                p.copy_(flat.view(p.shape))

    def _perturb(self, s: int, scale: float) -> None:
        """Exact mode: x = round(x0 + scale z). In place mode: x = round(x + scale z)."""
        acc = self.acc_dtype

        def fn(x, b, gi, length, j):
            z = self._draw(s, j, length)
            x.copy_((x if b is None else b).to(acc) + scale * z)

        self._apply(fn)

    def _restore(self) -> None:
        for p, b in zip(self._params, self._backup, strict=True):
            p.copy_(b.view(p.shape))

    def _step(self, closure, seeds, hyper):
        c, acc = self.eps, self.acc_dtype
        exact = self.exact_restore
        if exact:
            for p, b in zip(self._params, self._backup, strict=True):
                b.copy_(p.reshape(-1))
        f_plus, f_minus = [], []
        shift = 0.0  # in-place mode: the multiple of eps*z currently applied
        try:
            for s in seeds:
                # exact mode writes round(x0 +- eps z) from the saved copy: no restore needed
                # between directions, one after the last
                self._perturb(s, c)
                shift = c
                f_plus.append(self._evaluate(closure))
                self._perturb(s, -c if exact else -2.0 * c)
                shift = -c
                f_minus.append(self._evaluate(closure))
                if not exact:
                    self._perturb(s, c)
                shift = 0.0
        finally:
            if exact:
                self._restore()
            elif shift != 0.0:  # the closure raised mid-direction: undo as well as we can
                self._perturb(seeds[len(f_minus)], -shift)
        proj, loss = self._finish(f_plus, f_minus)
        q = len(seeds)

        def update(x, b, gi, length, j):
            lr, wd = hyper[gi]
            est = torch.zeros(length, dtype=acc, device=self.device)
            for k, s in enumerate(seeds):
                est.add_(self._draw(s, j, length).mul_(proj[k]))
            x.copy_(x.to(acc) * (1.0 - lr * wd) - (lr / q) * est)

        self._apply(update)
        return loss


# ---------------------------------------------------------------------------------
# Hybrid coordinate descent (Hsiao and Dutta, arXiv 2408.01374)


def _losses_at(closure, p: torch.Tensor, elems: torch.Tensor, values: torch.Tensor):
    """f at K points that each set element elems[k] of p to values[k], as float64 [K].

    All points share the current base point. A ``ModelObjective`` that can vectorise p
    evaluates them in one batched call; any other closure is called once per point
    (perturb in place, call, restore exactly).
    """
    from .objective import ModelObjective

    flat = p.detach().view(-1)
    if isinstance(closure, ModelObjective) and closure.vectorises(p):
        base = flat[elems].to(torch.float64)
        acts = closure.begin_points()
        return closure.point_losses(p, elems, values.to(torch.float64), base, acts)
    out = torch.empty(elems.numel(), dtype=torch.float64, device=p.device)
    for k, e in enumerate(elems.tolist()):
        saved = flat[e].clone()
        try:
            flat[e] = values[k]
            out[k] = as_loss(closure(), p.device).to(torch.float64)
        finally:
            flat[e] = saved
    return out


class HybridCD(torch.optim.Optimizer):
    """Hybrid coordinate descent: a gradient step or a coordinate line search per coordinate.

    Jacobi coordinate descent (Hsiao and Dutta, arXiv 2408.01374): every coordinate is
    updated at once from the same point x. Per coordinate i, with g_i = df/dx_i:

    - ``|g_i| > threshold``: a gradient step, ``x*_i = x_i - lr g_i``;
    - otherwise a line search along coordinate i alone: for s = threshold, threshold/2,
      ..., threshold/2^(tries-1), evaluate f at ``x_i + s`` and ``x_i - s``; the first s
      at which one of them is below f(x) gives ``x*_i`` (the lower of the two); if no s
      does, ``x*_i = x_i``;

    then ``x <- x + alpha (x* - x)``. The paper takes alpha = 1/(number of samples)
    and lr = 1.

    ``gradient="exact"`` takes g from autograd (parameters must require grad; a
    ``ModelObjective`` closure is run with grad enabled), ``gradient="zeroth"`` from
    central differences of radius ``eps`` (2 evaluations per coordinate). Line-search
    points are evaluated in one batched call per tensor and halving when the closure
    is a ``ModelObjective`` that vectorises the tensor, else one closure call each.
    ``step(closure)`` returns f(x) before the step. ``evaluations`` counts function
    evaluations (f(x), difference and line-search points), ``gradients`` backward passes.
    """

    def __init__(
        self,
        params,
        threshold: float = 1e-3,
        alpha: float = 0.1,
        lr: float = 1.0,
        gradient: str = "exact",
        eps: float = 1e-3,
        tries: int = 10,
    ):
        for name, value in (("threshold", threshold), ("alpha", alpha), ("lr", lr)):
            v = finite_number(name, value, "HybridCD")
            if v < 0 or (name != "lr" and v == 0):
                raise ValueError(f"Invalid {name}: {value!r}; it must be > 0")
        eps = finite_number("eps", eps, "HybridCD")
        if eps <= 0:
            raise ValueError(f"Invalid eps: {eps!r}; it must be > 0")
        if gradient not in ("exact", "zeroth"):
            raise ValueError(f"Invalid gradient: {gradient!r}; use 'exact' or 'zeroth'")
        self.tries = validation.integer("tries", tries)
        self.gradient, self.eps = gradient, eps
        super().__init__(params, dict(threshold=threshold, alpha=alpha, lr=lr))
        for i, p in enumerate(q for g in self.param_groups for q in g["params"]):
            if not p.is_floating_point() or not p.is_contiguous():
                raise ValueError(
                    f"HybridCD: parameter {i} must be a contiguous floating-point tensor "
                    f"(got dtype {p.dtype}, contiguous={p.is_contiguous()})"
                )
            if gradient == "exact" and not p.requires_grad:
                raise ValueError(
                    f"HybridCD(gradient='exact'): parameter {i} does not require grad; "
                    "call requires_grad_() on it or use gradient='zeroth'"
                )
        self.evaluations = 0
        self.gradients = 0

    def _exact(self, closure, params):
        from .objective import ModelObjective

        with torch.enable_grad():
            if isinstance(closure, ModelObjective):
                loss = closure.loss_fn(closure.model(closure.inputs), closure.targets)
            else:
                loss = closure()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        self.gradients += 1
        self.evaluations += 1
        f0 = loss.detach().to(torch.float64).reshape(())
        return f0, [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]

    def _zeroth(self, closure, params):
        f0 = as_loss(closure(), params[0].device).to(torch.float64)
        self.evaluations += 1
        grads = []
        for p in params:
            x = p.detach().reshape(-1)
            elems = torch.arange(x.numel(), device=p.device)
            plus, minus = x + self.eps, x - self.eps  # rounded to p's dtype
            f = _losses_at(closure, p, elems.repeat(2), torch.cat([plus, minus]))
            self.evaluations += 2 * x.numel()
            h = (plus.to(torch.float64) - minus.to(torch.float64)).clamp_min(1e-300)
            grads.append(((f[: x.numel()] - f[x.numel() :]) / h).to(p.dtype).view_as(p))
        return f0, grads

    @torch.no_grad()
    def step(self, closure=None) -> torch.Tensor:
        """One Jacobi sweep over every coordinate; returns f(x) before it."""
        if closure is None:
            raise TypeError("HybridCD.step needs a closure that returns the loss")
        groups = [(g, p) for g in self.param_groups for p in g["params"]]
        params = [p for _, p in groups]
        f0, grads = (self._exact if self.gradient == "exact" else self._zeroth)(closure, params)
        if not bool(torch.isfinite(f0)):
            raise FloatingPointError(f"HybridCD: the loss at x is {float(f0)}; step not taken")
        moves = []
        for (group, p), g in zip(groups, grads, strict=True):
            x, g = p.detach().reshape(-1), g.reshape(-1)
            thr = group["threshold"]
            move = torch.where(g.abs() > thr, -group["lr"] * g, torch.zeros_like(g))
            todo = torch.nonzero(g.abs() <= thr).flatten()
            s = thr
            for _ in range(self.tries):
                if todo.numel() == 0:
                    break
                k = todo.numel()
                values = torch.cat([x[todo] + s, x[todo] - s])
                f = _losses_at(closure, p, todo.repeat(2), values)
                self.evaluations += 2 * k
                fp, fm = f[:k], f[k:]
                best = torch.minimum(fp, fm)
                done = best < f0
                step_s = torch.where(fp <= fm, values[:k], values[k:]) - x[todo]
                move[todo[done]] = step_s[done].to(move.dtype)
                todo = todo[~done]
                s /= 2
            moves.append((p, group["alpha"], move))
        for p, alpha, move in moves:  # Jacobi: every move was found from the same x
            p.view(-1).add_(alpha * move)
        return f0.to(params[0].dtype if params[0].dtype == torch.float64 else torch.float32)


__all__ += ["HybridCD"]


# ---------------------------------------------------------------------------------
# Greedy Coordinate Gradient (Zou et al. 2023), for discrete coordinates


class GCG:
    """Greedy Coordinate Gradient: minimise G(x) = loss(E[x]) over token sequences x.

    ``embedding`` E is the [V, d] embedding matrix; ``loss_fn`` maps a batch of embedded
    sequences [K, L, d] to K losses (it must be differentiable for the gradient). Each
    ``step``:

    1. the gradient of G with respect to the embedded sequence gives, at each position
       i, a direction -g_i;
    2. every vocabulary embedding is ranked by cosine similarity to -g_i and the
       ``top_k`` best are kept (a zero embedding, or a position with g_i = 0, has no
       defined cosine and proposes nothing);
    3. every single-position swap among these (positions x top_k sequences) is
       evaluated, in vectorised calls of at most ``batch_size`` sequences;
    4. x becomes the best of them, even when it is worse than x (as in the original).

    ``tokens`` is the current sequence (a LongTensor [L]), ``loss`` its G value;
    ``evaluations`` counts evaluated sequences (one per candidate, one per gradient
    forward), ``gradients`` backward passes.
    """

    def __init__(self, embedding, loss_fn, tokens, top_k: int = 256, batch_size: int = 1024):
        if not isinstance(embedding, torch.Tensor) or embedding.dim() != 2:
            raise ValueError("embedding must be a [vocabulary, dim] tensor")
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=embedding.device)
        if tokens.dim() != 1 or tokens.numel() == 0:
            raise ValueError(
                f"tokens must be a non-empty 1-D sequence, got shape {tuple(tokens.shape)}"
            )
        V = embedding.shape[0]
        if bool((tokens < 0).any() | (tokens >= V).any()):
            raise ValueError(f"tokens must lie in [0, {V}), got {tokens.tolist()}")
        self.E = embedding.detach()
        self.loss_fn = loss_fn
        self.top_k = min(validation.integer("top_k", top_k), V)
        self.batch_size = validation.integer("batch_size", batch_size)
        self.tokens = tokens.clone()
        self.evaluations = 0
        self.gradients = 0
        norms = self.E.norm(dim=1)
        self._unit = self.E / norms.clamp_min(1e-30)[:, None]
        self._defined = norms > 0  # tokens whose cosine similarity is defined
        self.loss = float(self.evaluate(self.tokens[None])[0])

    @torch.no_grad()
    def evaluate(self, sequences: torch.Tensor) -> torch.Tensor:
        """G for each row of sequences [K, L], batch_size rows per call, as float64 [K]."""
        out = [
            self.loss_fn(self.E[sequences[s : s + self.batch_size]]).detach().double()
            for s in range(0, sequences.shape[0], self.batch_size)
        ]
        self.evaluations += sequences.shape[0]
        return torch.cat(out)

    def candidates(self) -> torch.Tensor:
        """The single-position swaps proposed by the gradient, as rows [K, L]."""
        e = self.E[self.tokens].clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.loss_fn(e[None]).sum(), [e])
        self.evaluations += 1
        self.gradients += 1
        rows = []
        for i in range(self.tokens.numel()):
            gnorm = g[i].norm()
            if gnorm == 0:  # no direction: cosine undefined for every token
                continue
            cos = self._unit @ (-g[i] / gnorm)
            cos = cos.masked_fill(~self._defined, -torch.inf)
            k = min(self.top_k, int(self._defined.sum()))
            swap = self.tokens.repeat(k, 1)
            swap[:, i] = cos.topk(k).indices
            rows.append(swap)
        return torch.cat(rows) if rows else self.tokens[None][:0]

    def step(self) -> float:
        """One GCG iteration; returns the new G(x)."""
        cand = self.candidates()
        if cand.shape[0] == 0:
            return self.loss  # a zero gradient everywhere: nothing to propose
        losses = self.evaluate(cand)
        best = int(torch.argmin(losses))
        self.tokens, self.loss = cand[best].clone(), float(losses[best])
        return self.loss


__all__ += ["GCG"]

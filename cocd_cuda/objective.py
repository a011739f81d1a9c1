"""``ModelObjective``: a closure that evaluates CoCD's perturbed points fast and exactly.

A CoCD step needs f at 2B points that differ from x in one coordinate each. Called
as a plain closure, a ``ModelObjective`` computes f(x) once. ``CoCD.step`` recognises
it and asks for all of a step's points at once (``evaluate_block``), through one of:

- ``"batched"``: the points that perturb one parameter tensor become a batch of
  perturbed copies of that tensor, evaluated in one vectorised call
  (``torch.func.vmap`` over ``functional_call``), chunked to a memory cap;
- ``"layered"``: for an ``nn.Sequential`` of supported layers, the activations are
  computed once per step; the output of the layer that holds a coordinate moves by an
  exact rank-one change (a weight moves one output channel by delta times its input,
  a bias moves one channel by delta), and only the later layers run, on the stacked
  perturbed activations;
- ``"graph"``: the same idea for any model ``torch.export`` can capture (residual
  additions, concatenations, attention, functional calls): only the operations
  downstream of the perturbed parameter run again (``graph_eval``);
- ``"sequential"``: the plain closure path (perturb in place, call, restore);
- ``"auto"``: layered where the model allows, else graph, else batched.

Every strategy computes f at exactly the points the sequential path uses (no Taylor
expansion); results agree with it up to floating-point rounding.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from .evaluation import Block, is_sync_error, n_evals, points
from .graph_eval import Base, GraphEvaluator

STRATEGIES = ("auto", "batched", "graph", "layered", "sequential")

# Layers the layered strategy runs as they are: no parameters, row-independent.
_PASSTHROUGH = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Identity,
    nn.Flatten,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
LAYERED_SUPPORT = (
    "nn.Sequential (nested ones are flattened) of nn.Linear, nn.Conv2d (groups=1, zero "
    "padding), nn.BatchNorm1d/2d, nn.Dropout in eval mode, activations "
    "(ReLU, ReLU6, LeakyReLU, ELU, GELU, SiLU, Tanh, Sigmoid, Softplus, Hardtanh), "
    "Identity, Flatten and pooling (Max/Avg 1d/2d, AdaptiveAvg 1d/2d, AdaptiveMax2d)"
)


def default_memory_cap(device: torch.device) -> int:
    """Bytes the batched strategies may use: a quarter of what is free on the device."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(free // 4, 64 << 20)
    try:
        with open("/proc/meminfo") as fh:
            avail = next(int(line.split()[1]) * 1024 for line in fh if "MemAvailable" in line)
    except (OSError, StopIteration):
        avail = 4 << 30
    return int(min(max(avail // 8, 256 << 20), 4 << 30))


def _flatten(model: nn.Module) -> list[nn.Module] | None:
    if not isinstance(model, nn.Sequential):
        return None
    out: list[nn.Module] = []
    for m in model:
        inner = _flatten(m) if isinstance(m, nn.Sequential) else [m]
        if inner is None:
            return None
        out += inner
    return out


def _layered_problem(layers: list[nn.Module] | None) -> str | None:
    """Why the layered strategy cannot run this model, or None."""
    if layers is None:
        return "the model is not an nn.Sequential"
    for i, m in enumerate(layers):
        kind = type(m).__name__
        if isinstance(m, (nn.Linear, *_NORMS, *_PASSTHROUGH)):  # norms: either mode
            continue
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.padding_mode != "zeros":
                return f"layer {i} ({kind}) has groups={m.groups}, padding_mode={m.padding_mode!r}"
            continue
        if isinstance(m, nn.Dropout):
            if m.training and m.p > 0:
                return f"layer {i} (Dropout) is random in train mode"
            continue
        return f"layer {i} ({kind}) is not supported"
    return None


class ModelObjective:
    """``f(x) = loss_fn(output(model(inputs)), targets)``, callable with no arguments.

    Use it as the closure of ``CoCD.step`` (or of any optimizer). Change the
    mini-batch between steps with ``set_batch``. ``inputs`` is a tensor, a dict of
    keyword arguments (``model(**inputs)``, e.g. ``input_ids`` and ``attention_mask``)
    or a tuple of positional ones. ``output`` picks what the loss takes from the model's
    output: a name (``"logits"``: a key or attribute) or a function. With ``targets``
    None the loss is ``loss_fn(output(...))``. The loss is computed once at
    construction, so a loss that cannot take the model's output fails here.
    ``memory_cap`` bounds, in bytes, what one vectorised evaluation may allocate
    (default: a quarter of free memory). ``loss_fn`` must reduce to a scalar (mean or
    sum) and be vmappable, as the built-in losses are. A ``torch.compile``d model is
    called as it is; its original module serves the layered and batched strategies.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn,
        inputs,
        targets: torch.Tensor | None = None,
        strategy: str = "auto",
        memory_cap: int | None = None,
        *,
        output=None,
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"Invalid strategy: {strategy!r}; use one of {STRATEGIES}")
        if memory_cap is not None and (not isinstance(memory_cap, int) or memory_cap <= 0):
            raise ValueError(f"Invalid memory_cap: {memory_cap!r}; give a positive byte count")
        if output is not None and not (isinstance(output, str) or callable(output)):
            raise TypeError(
                f"output must be a name (e.g. 'logits') or a function of the model's output, "
                f"got {type(output).__name__}"
            )
        self.model = model
        self._net = getattr(model, "_orig_mod", model)  # a torch.compile'd model's module
        self.loss_fn = loss_fn
        self.output = output
        self.set_batch(inputs, targets)
        self._check_loss()
        self.memory_cap = memory_cap or default_memory_cap(_first_tensor(inputs).device)
        self._names = {id(p): name for name, p in self._net.named_parameters()}
        one_tensor = isinstance(inputs, torch.Tensor)
        self._layers = _flatten(self._net) if one_tensor else None
        self._owner: dict[int, tuple[int, str]] = {}
        for i, layer in enumerate(self._layers or []):
            for pname, p in layer.named_parameters(recurse=False):
                self._owner[id(p)] = (i, pname)
        problem = _layered_problem(self._layers) if one_tensor else "the inputs are not one tensor"
        if strategy == "layered" and problem is not None:
            raise ValueError(f"strategy='layered' cannot run this model: {problem}")
        self._graph, graph_problem = None, None
        if strategy == "graph" or (strategy == "auto" and problem is not None):
            self._graph, graph_problem = GraphEvaluator.build(self._net, inputs)
        if strategy == "graph" and graph_problem is not None:
            raise ValueError(f"strategy='graph' cannot run this model: {graph_problem}")
        if strategy == "auto":
            strategy = "layered" if problem is None else "graph" if self._graph else "batched"
            if strategy == "batched":
                warnings.warn(
                    f"ModelObjective: using the batched strategy (layered: {problem}; graph: "
                    f"{graph_problem}; layered supports {LAYERED_SUPPORT})",
                    stacklevel=2,
                )
        self.strategy = strategy
        self._loss_vmappable = True

    def set_batch(self, inputs, targets: torch.Tensor | None = None) -> None:
        """Use this mini-batch from the next evaluation on."""
        if _first_tensor(inputs) is None:
            raise TypeError(
                f"inputs must be a tensor, a dict of keyword arguments or a tuple of "
                f"positional ones holding at least one tensor, got {type(inputs).__name__}"
            )
        self.inputs, self.targets = inputs, targets

    def __call__(self) -> torch.Tensor:
        with torch.no_grad():
            return self._loss(_call(self.model, self.inputs))

    @property
    def by_block(self) -> bool:
        """Whether CoCD hands this objective whole blocks (``evaluation.BlockEvaluator``)."""
        return self.strategy != "sequential"

    def _loss(self, out) -> torch.Tensor:
        """The loss of one model output: ``output`` selects, ``loss_fn`` reduces."""
        if isinstance(self.output, str):
            out = out[self.output] if isinstance(out, dict) else getattr(out, self.output)
        elif self.output is not None:
            out = self.output(out)
        return self.loss_fn(out) if self.targets is None else self.loss_fn(out, self.targets)

    def _check_loss(self) -> None:
        """Compute the loss once, so a loss that cannot take the output fails now.

        In eval mode, so that the check changes no running statistics.
        """
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            with torch.no_grad():
                out = _call(self.model, self.inputs)
        finally:
            for m, mode in modes:
                m.training = mode
        with torch.no_grad():
            try:
                value = self._loss(out)
            except Exception as exc:
                raise TypeError(
                    f"ModelObjective: the loss cannot take the model's output "
                    f"({type(exc).__name__}: {exc}). The model returns {_describe(out)}; "
                    "pass output='logits' (a key or attribute) or output=lambda o: ... to "
                    "give the loss the tensor it expects"
                ) from exc
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ValueError(
                f"ModelObjective: the loss must be a scalar tensor, got {_describe(value)}; "
                "reduce it (mean or sum) in loss_fn"
            )

    # ------------------------------------------------------------------ block
    def evaluate_block(self, block: Block) -> torch.Tensor:
        """f at every point of the step, in the engine's order, as float64 [E]."""
        B = block.base.numel()
        dev = block.base.device
        losses = torch.empty(n_evals(B, block.central), dtype=torch.float64, device=dev)
        with torch.no_grad():
            acts = self.begin_points()
            if not block.central:
                losses[0] = self.unperturbed(acts)
            for run in block.runs:
                j0, j1 = run.slot, run.slot + run.length
                elems = torch.arange(run.offset, run.offset + run.length, device=dev)
                base = block.base[j0:j1]
                if block.central:
                    values = torch.stack([block.plus[j0:j1], block.minus[j0:j1]], 1).reshape(-1)
                    elems, base = elems.repeat_interleave(2), base.repeat_interleave(2)
                else:
                    values = block.plus[j0:j1]
                offsets = range(run.offset, run.offset + run.length)
                if block.central:
                    offsets = [e for e in offsets for _ in (0, 1)]
                p = block.params[run.param]
                losses[points(j0, j1, block.central)] = self._run_losses(
                    p, elems, list(offsets), values, base, acts
                )
        return losses

    def _run_losses(self, p, elems, offsets, values, base, acts) -> torch.Tensor:
        """f at K points that each set element elems[k] of p to values[k]."""
        if self.vectorises(p):
            try:
                return self.point_losses(p, elems, values, base, acts)
            except RuntimeError as exc:  # an op without a vmap rule: never a wrong answer
                if self.strategy == "layered" and id(p) in self._owner:
                    raise
                warnings.warn(
                    f"ModelObjective: batched evaluation failed ({exc}); using the sequential "
                    "strategy from now on",
                    stacklevel=4,
                )
                self.strategy = "sequential"
        return self._sequential(p, offsets, values)

    # ------------------------------------------------- device-driven points (graphs)
    def vectorises(self, p: torch.Tensor) -> bool:
        """Whether points that move p are evaluated by the layered or batched strategy."""
        if self.strategy == "layered" and id(p) in self._owner:
            return True
        if self.strategy == "graph":  # a parameter the graph does not read: sequential
            return id(p) in self._names and bool(self._graph.placeholders(p))
        return self.strategy in ("batched", "layered") and id(p) in self._names

    def begin_points(self) -> list[torch.Tensor] | Base | None:
        """Per-step work shared by every point: the activations of the current parameters."""
        if self.strategy == "graph":
            if self._graph.stale(self.inputs):  # new input shapes, modes or dtypes
                self._graph, problem = GraphEvaluator.build(self._net, self.inputs)
                if problem is not None:
                    warnings.warn(
                        f"ModelObjective: using the batched strategy from now on ({problem})",
                        stacklevel=3,
                    )
                    self.strategy = "batched"
                    return None
            return self._graph.base(self.inputs)
        return self._activations() if self.strategy == "layered" else None

    def unperturbed(self, acts: list[torch.Tensor] | Base | None) -> torch.Tensor:
        """f(x), from the activations when there are some."""
        if isinstance(acts, Base):
            f0 = self._loss(self._graph.output(acts))
        else:
            f0 = self._loss(acts[-1]) if acts is not None else self()
        return f0.detach().reshape(())

    def point_losses(self, p, elems, values, base, acts) -> torch.Tensor:
        """f at K points that each set element elems[k] of p (now base[k]) to values[k].

        Device tensors in, float64 [K] out; the work depends on p and K alone, never on
        the values, so a CUDA graph can replay it for any block. Needs ``vectorises(p)``.
        """
        owner = self._owner.get(id(p))
        if self.strategy == "layered" and owner is not None:
            return self._chunked(
                lambda sl: self._layered(owner, elems[sl], values[sl] - base[sl], acts),
                elems.numel(),
                self._bytes_from(owner[0], acts) + 8,
            )
        if self.strategy == "graph":
            return self._chunked(
                lambda sl: self._graph.losses(p, elems[sl], values[sl], base[sl], acts, self._loss),
                elems.numel(),
                self._graph.bytes_per_point(p, acts),
            )
        per_point = p.numel() * p.element_size() + self._forward_bytes()
        return self._chunked(
            lambda sl: self._batched(p, elems[sl], values[sl]), elems.numel(), per_point
        )

    def _chunked(self, fn, K: int, per_point_bytes: int) -> torch.Tensor:
        chunk = max(1, min(K, self.memory_cap // max(per_point_bytes, 1)))
        parts = [fn(slice(s, min(s + chunk, K))) for s in range(0, K, chunk)]
        return torch.cat(parts).to(torch.float64)

    def _per_point_loss(self, outputs: torch.Tensor) -> torch.Tensor:
        """loss_fn of each leading slice of outputs against the targets."""
        if self._loss_vmappable:
            try:
                return vmap(self._loss)(outputs)
            except RuntimeError as exc:
                if is_sync_error(exc):  # CoCD.graphed's check
                    raise
                self._loss_vmappable = False
        return torch.stack([self._loss(o) for o in outputs])

    # ------------------------------------------------------------- strategies
    def _sequential(self, p, offsets: list[int], values) -> torch.Tensor:
        """Perturb in place, call, restore exactly: the plain closure path."""
        out = torch.empty(len(offsets), dtype=torch.float64, device=values.device)
        for k, e in enumerate(offsets):
            index = _unravel(e, p.shape)
            original = p[index].clone()
            try:
                p[index] = values[k].to(p.dtype)
                out[k] = self().detach().reshape(())
            finally:
                p[index] = original
        return out

    def _batched(self, p, elems, values) -> torch.Tensor:
        K = elems.numel()
        copies = p.detach().reshape(1, -1).repeat(K, 1)
        copies[torch.arange(K, device=p.device), elems] = values.to(p.dtype)
        copies = copies.view(K, *p.shape)
        name = self._names[id(p)]

        args, kwargs = _arguments(self.inputs)

        def f(w):
            return self._loss(functional_call(self._net, {name: w}, args, kwargs))

        return vmap(f)(copies)

    def _activations(self) -> list[torch.Tensor]:
        """acts[i] is the output of layer i; acts[-1] the model's output."""
        acts, a = [], self.inputs
        for layer in self._layers:
            # An in-place layer would overwrite the activation kept for the one before.
            a = layer(a.clone() if getattr(layer, "inplace", False) else a)
            acts.append(a)
        return acts

    def _bytes_from(self, layer: int, acts: list[torch.Tensor]) -> int:
        return sum(a.numel() * a.element_size() for a in acts[layer:])

    def _forward_bytes(self) -> int:
        """Activation bytes of one forward pass (measured once per batch shape)."""
        key = _shapes(self.inputs)
        if getattr(self, "_fwd_key", None) != key:
            total = 0

            def hook(_m, _i, out):
                nonlocal total
                if isinstance(out, torch.Tensor):
                    total += out.numel() * out.element_size()

            leaves = [m for m in self._net.modules() if not list(m.children())]
            handles = [m.register_forward_hook(hook) for m in leaves]
            try:
                self()
            finally:
                for h in handles:
                    h.remove()
            self._fwd_key, self._fwd_bytes = key, total
        return self._fwd_bytes

    def _layered(self, owner, elems, delta, acts) -> torch.Tensor:
        """Losses for K points in layer owner[0]: exact rank-one change, then the rest.

        The change stays in one output channel (or feature) of the perturbed layer and
        of every channel-wise layer after it, so only that slice is carried, as
        ``new`` [K, N, width, ...] at feature offset ``start`` [K] of dim 1. The next
        mixing layer (Linear, Conv2d) gets its exact contribution from the slice alone;
        only the layers after it run on the full stacked activations.
        """
        i, pname = owner
        layer, layers = self._layers[i], self._layers
        inp = self.inputs if i == 0 else acts[i - 1]
        out = acts[i]
        K, N = elems.numel(), out.shape[0]
        d = delta.to(out.dtype)
        if isinstance(layer, nn.Linear):
            if out.dim() != 2:
                return self._rank_one_full(layer, pname, inp, out, elems, d, i)
            start = elems // layer.in_features if pname == "weight" else elems
            change = (
                d[:, None] * inp[:, elems % layer.in_features].T
                if pname == "weight"
                else d[:, None]
            )
        elif isinstance(layer, nn.Conv2d):
            start = elems // layer.weight[0].numel() if pname == "weight" else elems
            change = (
                _conv_patch(layer, inp, out, elems) * d[:, None, None, None]
                if pname == "weight"
                else d[:, None, None, None]
            )
        else:  # batch norm: y = xhat * weight + bias; xhat does not depend on either
            start = elems
            expand = (slice(None), None) + (None,) * (out.dim() - 2)
            change = d[expand]
            if pname == "weight":
                if _batch_statistics(layer):
                    xhat = F.batch_norm(inp, None, None, training=True, eps=layer.eps)
                else:
                    xhat = F.batch_norm(
                        inp, layer.running_mean, layer.running_var, training=False, eps=layer.eps
                    )
                change = change * xhat[:, elems].transpose(0, 1)
        new = (out[:, start].transpose(0, 1) + change).unsqueeze(2)  # [K, N, 1, ...]
        width = 1
        for j in range(i + 1, len(layers)):
            lay, below = layers[j], acts[j - 1]
            if (
                isinstance(lay, nn.Flatten)
                and below.dim() > 2
                and lay.start_dim == 1
                and (lay.end_dim in (-1, below.dim() - 1))
            ):
                inner = below[0, 0].numel()
                new, start, width = new.reshape(K, N, width * inner), start * inner, width * inner
            elif _channelwise(lay, below):
                new = _apply_channelwise(lay, new, start, width)
            elif isinstance(lay, nn.Linear) and below.dim() == 2:
                idx = start[:, None] + torch.arange(width, device=start.device)
                step = (new - _gather(below, idx)).reshape(K, N, width)
                full = acts[j].unsqueeze(0) + torch.bmm(step, lay.weight[:, idx].permute(1, 2, 0))
                return self._run_rest(full, j + 1)
            elif isinstance(lay, nn.Conv2d) and width == 1:
                step = (new - _gather(below, start[:, None])).squeeze(2).transpose(0, 1)
                o, kh, kw = lay.out_channels, *lay.kernel_size
                w = lay.weight[:, start].transpose(0, 1).reshape(K * o, 1, kh, kw)
                extra = F.conv2d(step, w, None, lay.stride, lay.padding, lay.dilation, groups=K)
                extra = extra.view(N, K, o, *extra.shape[-2:]).transpose(0, 1)
                return self._run_rest(acts[j].unsqueeze(0) + extra, j + 1)
            else:
                return self._run_rest(_scatter(below, new, start, width), j)
        return self._run_rest(_scatter(acts[-1], new, start, width), len(layers))

    def _run_rest(self, full: torch.Tensor, first: int) -> torch.Tensor:
        """Run layers first.. on the stacked [K, N, ...] activations; loss per point."""
        K, N = full.shape[:2]
        a = full.reshape(K * N, *full.shape[2:])
        for later in self._layers[first:]:
            if isinstance(later, _NORMS) and _batch_statistics(later):
                # each point is its own mini-batch of N: its own statistics
                a = _normalise_points(later, a.reshape(K, N, *a.shape[1:]), None, None)
                a = a.reshape(K * N, *a.shape[2:])
            else:
                a = later(a)
        return self._per_point_loss(a.reshape(K, N, *a.shape[1:]))

    def _rank_one_full(self, layer, pname, inp, out, elems, d, i) -> torch.Tensor:
        """Linear layer on inputs with extra leading dims: materialise its K outputs."""
        K, fan_in = elems.numel(), layer.in_features
        outs = out.unsqueeze(0).repeat(K, *([1] * out.dim()))
        rows = outs.view(K, -1, layer.out_features)
        ar = torch.arange(K, device=out.device)
        if pname == "weight":
            x = inp.reshape(-1, fan_in)
            rows[ar, :, elems // fan_in] += d[:, None] * x[:, elems % fan_in].T
        else:
            rows[ar, :, elems] += d[:, None]
        return self._run_rest(outs, i + 1)


# Layers that act on each channel (dim 1) on its own, so a change confined to some
# channels stays confined to them.
_POOLS = tuple(t for t in _PASSTHROUGH if t.__name__.endswith(("Pool1d", "Pool2d")))
_ELEMENTWISE = (*(t for t in _PASSTHROUGH if t not in _POOLS and t is not nn.Flatten), nn.Dropout)


def _channelwise(layer: nn.Module, below: torch.Tensor) -> bool:
    if isinstance(layer, (*_ELEMENTWISE, *_NORMS)):
        return True
    return isinstance(layer, _POOLS) and below.dim() >= 3


def _apply_channelwise(layer, new: torch.Tensor, start: torch.Tensor, width: int):
    """``layer`` on the changed slice new [K, N, width, *spatial] at channels start.."""
    if isinstance(layer, _ELEMENTWISE):
        return layer(new)
    K, N = new.shape[:2]
    if isinstance(layer, _POOLS):
        pooled = layer(new.reshape(K * N, width, *new.shape[3:]))
        return pooled.reshape(K, N, width, *pooled.shape[2:])
    idx = start[:, None] + torch.arange(width, device=start.device)  # batch norm
    shape = (K, 1, width) + (1,) * (new.dim() - 3)
    if _batch_statistics(layer):  # the slice's channels hold all of their statistics
        w, b = (layer.weight[idx], layer.bias[idx]) if layer.affine else (None, None)
        return _normalise_points(layer, new, w, b)
    scale = torch.rsqrt(layer.running_var[idx] + layer.eps) * layer.weight[idx]
    shift = layer.bias[idx] - layer.running_mean[idx] * scale
    return new * scale.view(shape) + shift.view(shape)


def _batch_statistics(layer: nn.Module) -> bool:
    """Whether a batch norm normalises with the mini-batch's statistics (as PyTorch decides)."""
    return layer.training or layer.running_mean is None


def _normalise_points(layer, x: torch.Tensor, weight, bias) -> torch.Tensor:
    """Batch norm of x [K, N, C, ...] with each point k's own statistics over N and space.

    Nothing is written to the running statistics: the unperturbed forward of each step
    (``_activations``) updates them once, as one training step would.
    weight, bias: [K, C] (a slice of channels per point) or None for the layer's own.
    """
    dims = (1, *range(3, x.dim()))
    var, mean = torch.var_mean(x, dim=dims, unbiased=False, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + layer.eps)
    if not layer.affine:
        return y
    if weight is None:
        weight, bias = layer.weight.expand(x.shape[0], -1), layer.bias.expand(x.shape[0], -1)
    shape = (x.shape[0], 1, x.shape[2]) + (1,) * (x.dim() - 3)
    return y * weight.reshape(shape) + bias.reshape(shape)


def _gather(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """a[:, idx[k]] for each k, as [K, N, width, ...]."""
    return a[:, idx].transpose(0, 1)


def _scatter(a: torch.Tensor, new: torch.Tensor, start: torch.Tensor, width: int):
    """K copies of a [N, C, ...] with channels start[k].. replaced by new[k]."""
    K = new.shape[0]
    full = a.unsqueeze(0).repeat(K, *([1] * a.dim()))
    idx = start[:, None] + torch.arange(width, device=start.device)
    full[torch.arange(K, device=a.device)[:, None], :, idx] = new.transpose(1, 2)
    return full


def _conv_patch(layer: nn.Conv2d, inp, out, elems) -> torch.Tensor:
    """For weight element elems[k] = (o, c, a, b): the input that multiplies it, [K, N, Ho, Wo]."""
    rest = elems % layer.weight[0].numel()
    kh, kw = layer.kernel_size
    ci, rest = rest // (kh * kw), rest % (kh * kw)
    a, b = rest // kw, rest % kw
    padded = F.pad(inp, layer._reversed_padding_repeated_twice)
    (sh, sw), (dh, dw) = layer.stride, layer.dilation
    ho, wo = out.shape[-2:]
    rows = a[:, None] * dh + sh * torch.arange(ho, device=out.device)
    cols = b[:, None] * dw + sw * torch.arange(wo, device=out.device)
    return padded[:, ci[:, None, None], rows[:, :, None], cols[:, None, :]].transpose(0, 1)


def _arguments(inputs) -> tuple[tuple, dict]:
    """The model's (args, kwargs) for these inputs."""
    if isinstance(inputs, dict):
        return (), inputs
    return (tuple(inputs), {}) if isinstance(inputs, (tuple, list)) else ((inputs,), {})


def _call(model, inputs):
    args, kwargs = _arguments(inputs)
    return model(*args, **kwargs)


def _first_tensor(inputs) -> torch.Tensor | None:
    args, kwargs = _arguments(inputs)
    return next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)


def _shapes(inputs) -> tuple:
    args, kwargs = _arguments(inputs)
    return tuple(getattr(a, "shape", None) for a in (*args, *kwargs.values()))


def _describe(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, dict):  # including Hugging Face's ModelOutput
        return f"a {type(out).__name__} with fields {list(out.keys())}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} items"
    return f"a {type(out).__name__}"


def _unravel(offset: int, shape) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        offset, r = divmod(offset, size)
        index.append(r)
    return tuple(reversed(index))

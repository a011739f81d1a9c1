"""The ``"graph"`` strategy of ``ModelObjective``: layered evaluation over the model's graph.

The model is captured once as a graph of ATen operations (``torch.export``, re-captured
when the input shapes or the modules' modes or dtypes change). Each evaluation call
runs the graph once on the current parameters and keeps every node's value (the base
activations; never reused across calls, so a step always sees the parameters as they
are now). For the K points that move one parameter tensor, only the nodes downstream
of that parameter run again, on stacked [K, ...] values (``torch.func.vmap``, with the
unchanged inputs broadcast); every other node keeps its base value.

Where a parameter enters an operation, ``RULES`` may give the exact change of that
operation's output directly (a weight element moves one output feature or channel by
delta times its input: linear, addmm, conv2d, layer and batch norm; an embedding
element replaces one value in the rows that look it up). Elsewhere the parameter
itself is stacked (K copies, one element changed in each) and the operation runs
batched. Every point is the model's value at exactly the perturbed parameters, up to
floating-point rounding.

Supported: any model ``torch.export`` captures (non-strict) whose graph holds only
deterministic, non-mutating operations after functionalisation (in-place operations
in ``forward``, such as ``relu(inplace=True)`` or ``+=``, are rewritten out of place
by the capture). Dropout and batch norm are supported in eval mode only; random
operations and operations whose output shape depends on values downstream of a
parameter are not.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.func import vmap
from torch.nn import functional as F
from torch.utils import _pytree as pytree

from .evaluation import is_sync_error

aten = torch.ops.aten
_TAGS = torch.Tag


# ---------------------------------------------------------------- op rules
# An entry says, for one ATen operation: what makes a call of it unsupported
# (``check``); per argument name, how the exact change of its output is formed when
# that argument is the perturbed parameter (``enter``); and how it runs on stacked
# inputs when vmap would be slow (``through``). Operations without an entry are
# supported when their schema is pure and deterministic; they pass a change on by
# running under vmap on the stacked values.


@dataclass(frozen=True)
class Rule:
    check: Callable[[dict], str | None] | None = None
    enter: dict[str, Callable] | None = None
    through: Callable | None = None


def _bind(op, args, kwargs) -> dict:
    """The call's arguments by schema name, defaults filled in."""
    bound = {}
    for i, a in enumerate(op._schema.arguments):
        if i < len(args):
            bound[a.name] = args[i]
        elif a.name in kwargs:
            bound[a.name] = kwargs[a.name]
        else:
            bound[a.name] = a.default_value if a.has_default_value() else None
    return bound


def _stack(out: torch.Tensor, K: int) -> torch.Tensor:
    return out.unsqueeze(0).repeat(K, *([1] * out.dim()))


def _linear_enter(b, out, name, elems, values, base, batched):
    """linear(input, weight, bias): weight[o, i] moves feature o by delta * input[..., i]."""
    x, w = b["input"], b["weight"]
    if batched.get("weight") or batched.get("bias"):
        return None
    K, ar = elems.numel(), torch.arange(elems.numel(), device=elems.device)
    d = (values - base).to(out.dtype)
    if batched.get("input"):  # the input moves too (a tied weight): rerun, then add
        outs, xk = F.linear(x, w, b["bias"]), x.reshape(K, -1, w.shape[1])
    else:
        outs, xk = _stack(out, K), x.reshape(1, -1, w.shape[1]).expand(K, -1, -1)
    rows = outs.view(K, -1, w.shape[0])
    if name == "weight":
        o, i = elems // w.shape[1], elems % w.shape[1]
        rows[ar, :, o] += d[:, None] * xk[ar, :, i]
    else:
        rows[ar, :, elems] += d[:, None]
    return outs


def _addmm_enter(b, out, name, elems, values, base, batched):
    """addmm(self, mat1, mat2) = self + mat1 @ mat2 (Conv1D layers): mat2[i, o], bias self[o]."""
    if any(batched.values()) or b["beta"] != 1 or b["alpha"] != 1:
        return None
    if name == "mat1" or (name == "self" and b["self"].dim() != 1):
        return None
    K, ar = elems.numel(), torch.arange(elems.numel(), device=elems.device)
    d = (values - base).to(out.dtype)
    outs = _stack(out, K)
    if name == "mat2":
        nf = b["mat2"].shape[1]
        o, i = elems % nf, elems // nf
        outs[ar, :, o] += d[:, None] * b["mat1"][:, i].T
    else:
        outs[ar, :, elems] += d[:, None]
    return outs


def _conv2d_enter(b, out, name, elems, values, base, batched):
    """conv2d: weight[o, c, a, b] moves channel o by delta times the input patch it sees."""
    x, w = b["input"], b["weight"]
    if any(batched.values()) or b["groups"] != 1 or x.dim() != 4:
        return None
    K, ar = elems.numel(), torch.arange(elems.numel(), device=elems.device)
    d = (values - base).to(out.dtype)
    outs = _stack(out, K)
    if name == "bias":
        outs[ar, :, elems] += d[:, None, None, None]
        return outs
    per_out = w[0].numel()
    kh, kw = w.shape[-2:]
    o, rest = elems // per_out, elems % per_out
    ci, rest = rest // (kh * kw), rest % (kh * kw)
    a, bb = rest // kw, rest % kw
    (sh, sw), (ph, pw), (dh, dw) = (_pair(b[k]) for k in ("stride", "padding", "dilation"))
    padded = F.pad(x, (pw, pw, ph, ph))
    ho, wo = out.shape[-2:]
    rows = a[:, None] * dh + sh * torch.arange(ho, device=x.device)
    cols = bb[:, None] * dw + sw * torch.arange(wo, device=x.device)
    patch = padded[:, ci[:, None, None], rows[:, :, None], cols[:, None, :]].transpose(0, 1)
    outs[ar, :, o] += d[:, None, None, None] * patch
    return outs


def _pair(v) -> tuple[int, int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _embedding_enter(b, out, name, elems, values, base, batched):
    """embedding(weight, indices): weight[r, c] is the value c of every row that looks up r."""
    if name != "weight" or any(batched.values()):
        return None
    w, idx = b["weight"], b["indices"].reshape(-1)
    K, ar = elems.numel(), torch.arange(elems.numel(), device=elems.device)
    outs = _stack(out, K)
    rows = outs.view(K, -1, w.shape[1])
    r, c = elems // w.shape[1], elems % w.shape[1]
    hit = idx[None, :] == r[:, None]
    rows[ar, :, c] = torch.where(hit, values.to(out.dtype)[:, None], rows[ar, :, c])
    return outs


def _layer_norm_enter(b, out, name, elems, values, base, batched):
    """layer_norm: weight[e] moves feature e by delta * xhat[..., e]; bias[e] by delta."""
    if any(batched.values()):
        return None
    L = b[name].numel()
    K, ar = elems.numel(), torch.arange(elems.numel(), device=elems.device)
    d = (values - base).to(out.dtype)
    outs = _stack(out, K)
    rows = outs.view(K, -1, L)
    if name == "weight":
        xhat = aten.layer_norm(b["input"], b["normalized_shape"], None, None, b["eps"])
        rows[ar, :, elems] += d[:, None] * xhat.reshape(-1, L)[:, elems].T
    else:
        rows[ar, :, elems] += d[:, None]
    return outs


def _batch_norm_enter(b, out, name, elems, values, base, batched):
    """Eval-mode batch_norm: weight[c] moves channel c by delta * xhat[:, c]; bias by delta."""
    if any(batched.values()) or name not in ("weight", "bias"):
        return None
    K, ar = elems.numel(), torch.arange(elems.numel(), device=elems.device)
    d = (values - base).to(out.dtype).view(K, 1, *([1] * (out.dim() - 2)))
    outs = _stack(out, K)
    if name == "weight":
        xhat = F.batch_norm(
            b["input"], b["running_mean"], b["running_var"], training=False, eps=b["eps"]
        )
        d = d * xhat[:, elems].transpose(0, 1)
    outs[ar, :, elems] += d
    return outs


def _attention_through(b, batched, K):
    """scaled_dot_product_attention on stacked inputs: the K points as more batch rows.

    (Its CPU kernel has no vmap rule; vmap would loop over the points.)
    """
    q = b["query"]
    if q.dim() - batched["query"] != 4 or any(
        batched.get(k) for k in b if k not in ("query", "key", "value", "attn_mask")
    ):
        return None
    N = (q.shape[1:] if batched["query"] else q.shape)[0]

    def rows(name):
        x = b[name]
        if x is None:
            return None
        x = x if batched.get(name) else x.unsqueeze(0).expand(K, *x.shape)
        if name == "attn_mask":
            x = torch.broadcast_to(x, (K, *qk[:-1], x.shape[-1]))
        return x.reshape(K * N, *x.shape[2:])

    qk = (N, *(q.shape[2:] if batched["query"] else q.shape[1:]))
    extra = {k: v for k, v in b.items() if k not in ("query", "key", "value", "attn_mask")}
    out = aten.scaled_dot_product_attention(
        rows("query"), rows("key"), rows("value"), rows("attn_mask"), **extra
    )
    return out.reshape(K, N, *out.shape[1:])


def _no_training(b) -> str | None:
    if b["training"]:
        return "normalises with batch statistics (train mode); use model.eval()"
    return None


def _no_dropout(b) -> str | None:
    if b.get("train", False) and b["p"] > 0:
        return "is random (dropout in train mode); use model.eval()"
    return None


def _no_attention_dropout(b) -> str | None:
    return "is random (attention dropout)" if b["dropout_p"] > 0 else None


RULES: dict = {
    aten.linear.default: Rule(enter={"weight": _linear_enter, "bias": _linear_enter}),
    aten.addmm.default: Rule(enter={"self": _addmm_enter, "mat2": _addmm_enter}),
    aten.conv2d.default: Rule(enter={"weight": _conv2d_enter, "bias": _conv2d_enter}),
    aten.embedding.default: Rule(enter={"weight": _embedding_enter}),
    aten.layer_norm.default: Rule(enter={"weight": _layer_norm_enter, "bias": _layer_norm_enter}),
    aten.batch_norm.default: Rule(
        check=_no_training, enter={"weight": _batch_norm_enter, "bias": _batch_norm_enter}
    ),
    aten._native_batch_norm_legit_no_training.default: Rule(),
    aten.dropout.default: Rule(check=_no_dropout),
    aten.scaled_dot_product_attention.default: Rule(
        check=_no_attention_dropout, through=_attention_through
    ),
}
# Checks on metadata only: their (empty) result never depends on a parameter.
_STATIC = {aten._assert_tensor_metadata.default, aten.sym_size.int}
# Pure, but the output's shape may depend on values: only off the parameters' paths.
_VALUE_SHAPED = (_TAGS.dynamic_output_shape, _TAGS.data_dependent_output)


def _op_problem(node: fx.Node) -> str | None:
    """Why this call cannot run in the graph strategy, or None."""
    op = node.target
    if op is operator.getitem:
        return None
    if not isinstance(op, torch._ops.OpOverload):
        return f"the call {getattr(op, '__name__', op)!r} is not an ATen operation"
    rule = RULES.get(op)
    if rule is not None:
        if rule.check is None:
            return None
        problem = rule.check(_bind(op, node.args, node.kwargs))
        return f"{op} {problem}" if problem else None
    if op in _STATIC:
        return None
    if op._schema.is_mutable:
        return f"{op} mutates its input"
    if _TAGS.nondeterministic_seeded in op.tags:
        return f"{op} is random"
    return None


# ---------------------------------------------------------------- the evaluator
@dataclass
class Base:
    """One evaluation call's base activations: every node's value, and the outputs."""

    env: dict
    outputs: list


class _Ref:
    """A node inside a call's arguments, while they are flattened."""

    __slots__ = ("node",)

    def __init__(self, node: fx.Node):
        self.node = node


def _capture(net: nn.Module, args, kwargs):
    """The exported, functional program of net at these inputs, or the reason there is none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(net, tuple(args), dict(kwargs), strict=False)
            if any(
                isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable
                for n in ep.graph.nodes
            ):
                ep = ep.run_decompositions({})  # functionalise: in-place ops out of place
    except Exception as exc:  # any failure to capture means: not this strategy
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"torch.export cannot capture the model ({type(exc).__name__}: {first[:160]})"
    return ep, None


class GraphEvaluator:
    """The captured graph of one model, and the per-parameter evaluation on it."""

    def __init__(self, net: nn.Module, ep, key):
        self.net, self.ep, self.key = net, ep, key
        self.graph = ep.graph
        self.nodes = list(self.graph.nodes)
        sig = ep.graph_signature
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        self._inputs = {  # placeholder node: (kind, target)
            node: (spec.kind.name, spec.target)
            for node, spec in zip(placeholders, sig.input_specs, strict=True)
        }
        self._out_spec = ep.call_spec.out_spec
        self._vmappable_loss = True

    # ------------------------------------------------------------ capture
    @classmethod
    def build(cls, net: nn.Module, inputs):
        """(evaluator, None), or (None, the one-line reason this model cannot use it)."""
        args, kwargs = _arguments(inputs)
        ep, problem = _capture(net, args, kwargs)
        if ep is None:
            return None, problem
        sig = ep.graph_signature
        if sig.buffers_to_mutate or sig.user_inputs_to_mutate:
            return None, "the model changes its buffers or inputs when it runs (train mode?)"
        kinds = {s.kind.name for s in sig.input_specs}
        if not kinds <= {"PARAMETER", "BUFFER", "CONSTANT_TENSOR", "USER_INPUT"}:
            return None, f"the captured program has inputs of kinds {sorted(kinds)}"
        self = cls(net, ep, _key(net, inputs))
        problem = self._problem()
        return (None, problem) if problem else (self, None)

    def _problem(self) -> str | None:
        params = {id(p) for p in self.net.parameters()}
        moving = set()  # nodes downstream of some parameter
        for node, (kind, target) in self._inputs.items():
            if kind == "PARAMETER" and id(self._tensor(kind, target)) in params:
                moving.add(node)
        for node in self.nodes:
            if node.op == "get_attr":
                return f"the captured graph reads the attribute {node.target!r}"
            if node.op != "call_function":
                continue
            problem = _op_problem(node)
            if problem:
                return problem
            if any(a in moving for a in node.all_input_nodes):
                moving.add(node)
                op = node.target
                if isinstance(op, torch._ops.OpOverload) and any(
                    t in op.tags for t in _VALUE_SHAPED
                ):
                    return f"{op} (output shape depends on values) follows a parameter"
        return None

    def stale(self, inputs) -> bool:
        """Whether the graph was captured for other input shapes, module modes or dtypes."""
        return self.key != _key(self.net, inputs)

    def _tensor(self, kind: str, target: str):
        """The model's tensor behind a graph input, as it is now (never a stored copy)."""
        if kind == "PARAMETER":
            return self.net.get_parameter(target)
        if kind == "BUFFER":
            return self.net.get_buffer(target)
        owner, _, name = target.rpartition(".")  # a plain tensor attribute, perhaps reassigned
        try:
            value = getattr(self.net.get_submodule(owner), name)
        except AttributeError:
            value = None
        return value if isinstance(value, torch.Tensor) else self.ep.constants[target]

    def placeholders(self, p: torch.Tensor) -> list[fx.Node]:
        """The graph inputs that read parameter p (several if it is tied)."""
        return [
            n
            for n, (kind, t) in self._inputs.items()
            if kind == "PARAMETER" and self._tensor(kind, t) is p
        ]

    # ------------------------------------------------------------ evaluation
    def base(self, inputs) -> Base:
        """Run the graph once on the current parameters; keep every node's value."""
        args, kwargs = _arguments(inputs)
        user = iter(pytree.tree_leaves((tuple(args), dict(kwargs))))
        env: dict = {}
        for node in self.nodes:
            if node.op == "placeholder":
                kind, target = self._inputs[node]
                env[node] = next(user) if kind == "USER_INPUT" else self._tensor(kind, target)
            elif node.op == "call_function":
                a, k = fx.node.map_arg((node.args, node.kwargs), lambda n: env[n])
                env[node] = node.target(*a, **k)
            elif node.op == "output":
                outputs = list(fx.node.map_arg(node.args[0], lambda n: env[n]))
        return Base(env, outputs)

    def output(self, base: Base):
        """The model's output (as the model returns it) from the base activations."""
        return pytree.tree_unflatten(base.outputs, self._out_spec)

    def bytes_per_point(self, p: torch.Tensor, base: Base) -> int:
        """Memory one point needs: the values downstream of p, and a copy of p."""
        moving = set(self.placeholders(p))
        total = p.numel() * p.element_size()
        for node in self.nodes:
            if node.op == "call_function" and any(a in moving for a in node.all_input_nodes):
                moving.add(node)
                for t in pytree.tree_leaves(base.env[node]):
                    if isinstance(t, torch.Tensor):
                        total += t.numel() * t.element_size()
        return total

    def losses(self, p, elems, values, base_values, base: Base, loss) -> torch.Tensor:
        """loss at K points that each set element elems[k] of p to values[k], as [K].

        Downstream of p every node runs on stacked values (``moved`` maps such nodes to
        [K, ...] tensors); all other nodes keep their base values.
        """
        K = elems.numel()
        sources = set(self.placeholders(p))
        moved: dict = {}
        stacked = None  # K copies of p, made only when some operation needs them
        for node in self.nodes:
            if node.op != "call_function":
                continue
            inputs = node.all_input_nodes
            from_p = [a for a in inputs if a in sources]
            if not from_p and not any(a in moved for a in inputs):
                continue
            if node.target in _STATIC:
                continue
            out = None
            if len(from_p) == 1 and isinstance(node.target, torch._ops.OpOverload):
                out = self._enter(node, from_p[0], base, moved, elems, values, base_values)
            if out is None:
                if from_p and stacked is None:
                    stacked = p.detach().reshape(1, -1).repeat(K, 1)
                    stacked[torch.arange(K, device=p.device), elems] = values.to(p.dtype)
                    stacked = stacked.view(K, *p.shape)
                lookup = dict(moved)
                for s in from_p:
                    lookup[s] = stacked
                out = self._through(node, base, lookup, K)
                if out is None:
                    out = _batched_call(node, base.env, lookup)
            moved[node] = out
        out_node = self.nodes[-1]
        flat = fx.node.map_arg(out_node.args[0], lambda n: _Ref(n))
        leaves, dims = [], []
        for leaf in flat:
            if isinstance(leaf, _Ref) and leaf.node in moved:
                leaves.append(moved[leaf.node])
                dims.append(0)
            elif isinstance(leaf, _Ref) and leaf.node in sources:
                raise RuntimeError("the model returns a parameter: use the batched strategy")
            else:
                leaves.append(base.env[leaf.node] if isinstance(leaf, _Ref) else leaf)
                dims.append(None)
        if 0 not in dims:  # p does not reach the output: every point is f(x)
            f0 = loss(pytree.tree_unflatten(leaves, self._out_spec))
            return f0.reshape(()).expand(K)
        return self._per_point(loss, leaves, dims, K)

    def _enter(self, node, source, base, moved, elems, values, base_values):
        """The exact [K, ...] output of node when source (parameter p) moves, or None."""
        rule = RULES.get(node.target)
        if rule is None or rule.enter is None:
            return None
        names = [n for n, v in _bind(node.target, node.args, node.kwargs).items() if v is source]
        bound = _bound_values(node, base, moved)
        if len(names) != 1 or names[0] not in rule.enter or bound is None:
            return None
        b, batched = bound
        return rule.enter[names[0]](
            b, base.env[node], names[0], elems, values, base_values, batched
        )

    def _through(self, node, base, moved, K):
        """node on stacked inputs by its rule's own batching, or None (then: vmap)."""
        rule = RULES.get(node.target)
        if rule is None or rule.through is None:
            return None
        bound = _bound_values(node, base, moved)
        return None if bound is None else rule.through(*bound, K)

    def _per_point(self, loss, leaves, dims, K) -> torch.Tensor:
        def one(*ls):
            return loss(pytree.tree_unflatten(list(ls), self._out_spec))

        if self._vmappable_loss:
            try:
                return vmap(one, in_dims=tuple(dims))(*leaves)
            except RuntimeError as exc:
                if is_sync_error(exc):  # CoCD.graphed's check
                    raise
                self._vmappable_loss = False
        return torch.stack(
            [
                one(*(x[k] if d == 0 else x for x, d in zip(leaves, dims, strict=True)))
                for k in range(K)
            ]
        )


def _bound_values(node: fx.Node, base: Base, moved: dict):
    """(arguments by name with their values, which of them are stacked), or None when a
    list argument holds nodes (the rules take tensors, not lists of them)."""
    b = _bind(node.target, node.args, node.kwargs)
    batched = {}
    for name, v in b.items():
        if isinstance(v, fx.Node):
            batched[name] = v in moved
            b[name] = moved[v] if v in moved else base.env[v]
        elif isinstance(v, (list, tuple)) and any(isinstance(x, fx.Node) for x in v):
            return None
    return b, batched


def _batched_call(node: fx.Node, env: dict, moved: dict):
    """node's operation on stacked inputs (dim 0 of each moved one), others broadcast."""
    refs = fx.node.map_arg((node.args, node.kwargs), lambda n: _Ref(n))
    leaves, spec = pytree.tree_flatten(refs)
    values, dims = [], []
    for leaf in leaves:
        if isinstance(leaf, _Ref):
            inside = leaf.node in moved
            values.append(moved[leaf.node] if inside else env[leaf.node])
            dims.append(0 if inside else None)
        else:
            values.append(leaf)
            dims.append(None)

    def call(*vs):
        a, k = pytree.tree_unflatten(list(vs), spec)
        return node.target(*a, **k)

    return vmap(call, in_dims=tuple(dims))(*values)


def _arguments(inputs) -> tuple[tuple, dict]:
    if isinstance(inputs, dict):
        return (), inputs
    return (tuple(inputs), {}) if isinstance(inputs, (tuple, list)) else ((inputs,), {})


def _key(net: nn.Module, inputs) -> tuple:
    """What the captured graph depends on besides parameter values."""
    args, kwargs = _arguments(inputs)
    leaves, spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
    shapes = tuple(
        (tuple(t.shape), t.dtype, t.device) if isinstance(t, torch.Tensor) else ("value", repr(t))
        for t in leaves
    )
    modes = tuple(m.training for m in net.modules())
    kinds = tuple((t.dtype, t.device) for t in (*net.parameters(), *net.buffers()))
    return (str(spec), shapes, modes, kinds)

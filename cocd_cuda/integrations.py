"""CoCD in the training frameworks people already use.

- PyTorch Lightning: ``cocd_training_step(module, objective)`` inside ``training_step``,
  with manual optimization (``self.automatic_optimization = False``). Automatic
  optimization runs ``training_step`` and ``backward()`` at each of a step's
  evaluations; CoCD skips those backward calls and warns once.
- Hugging Face: ``CoCDTrainer``, a ``transformers.Trainer`` whose ``training_step``
  takes the CoCD step. When the loss is the model's own (the Trainer's default
  ``compute_loss``), a ``ModelObjective`` evaluates it (the batched strategy: one
  vectorised call per tensor of the block); otherwise a closure calls
  ``compute_loss`` (no backward).
- skorch: ``CoCDNetMixin``, put before ``NeuralNet``/``NeuralNetClassifier``/... in
  the bases, whose ``train_step`` takes the CoCD step the same way.

Each one evaluates the model in eval mode during the step (dropout off): the
closure must compute one function at every call of a step. Each framework is
imported only when its helper is used.
"""

from __future__ import annotations

import contextlib
import functools

import torch

from .objective import ModelObjective
from .optimizer import CoCD

# CoCDTrainer comes from the module __getattr__ (transformers is imported on first use).
__all__ = ["CoCDNetMixin", "CoCDTrainer", "cocd_training_step", "eval_mode"]  # noqa: F822


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """``module`` in eval mode inside (dropout off), its previous mode restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _the_cocd(optimizer, where: str) -> CoCD:
    inner = optimizer
    while inner is not None and not isinstance(inner, CoCD):
        # Wrappers: accelerate's AcceleratedOptimizer (.optimizer), CoCDTrainer's (.cocd)
        inner = getattr(inner, "optimizer", None) or getattr(inner, "cocd", None)
    if not isinstance(inner, CoCD):
        raise TypeError(f"{where} needs a cocd_cuda.CoCD optimizer, got {type(optimizer).__name__}")
    return inner


# ------------------------------------------------------------------ Lightning
def cocd_training_step(module, objective) -> torch.Tensor:
    """One CoCD step from a LightningModule's ``training_step``; returns the loss estimate.

    ``objective`` is what CoCD evaluates: a ``ModelObjective`` (its fast block path is
    kept) or a closure returning the loss. The module needs manual optimization
    (``self.automatic_optimization = False``) and one CoCD from
    ``configure_optimizers``. Lightning's hooks run once per step.
    """
    if module.automatic_optimization:
        raise RuntimeError(
            "cocd_training_step needs manual optimization: set "
            "self.automatic_optimization = False in the LightningModule's __init__"
        )
    optimizer = module.optimizers()
    if isinstance(optimizer, (list, tuple)):
        raise TypeError(
            f"cocd_training_step needs exactly one optimizer, configure_optimizers gave "
            f"{len(optimizer)}"
        )
    _the_cocd(optimizer, "cocd_training_step")
    with eval_mode(module):
        return optimizer.step(objective=objective)


# ---------------------------------------------------------------- Hugging Face
class _SteppedInTrainingStep(torch.optim.Optimizer):
    """The CoCD as the Trainer's loop sees it.

    ``CoCDTrainer.training_step`` takes the step; the loop's bare ``step()`` after it
    does nothing. Everything else (param groups for the LR scheduler, state_dict for
    checkpoints) is the CoCD's.
    """

    def __init__(self, cocd: CoCD):  # no Optimizer.__init__: the state is cocd's
        self.cocd = cocd

    param_groups = property(lambda self: self.cocd.param_groups)
    defaults = property(lambda self: self.cocd.defaults)
    state = property(lambda self: self.cocd.state)

    def step(self, closure=None):
        return None if closure is None else self.cocd.step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.cocd.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return self.cocd.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.cocd.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return repr(self.cocd)


def _identity(loss):
    return loss


def _model_loss(outputs):
    """The loss a Hugging Face model returns, as ``Trainer.compute_loss`` reads it."""
    return outputs["loss"] if isinstance(outputs, dict) else outputs[0]


@functools.cache
def _trainer_class():
    import transformers

    class CoCDTrainer(transformers.Trainer):
        """A ``transformers.Trainer`` that trains with CoCD.

        Pass ``optimizers=(CoCD(model.parameters(), ...), None)``, or nothing for a
        CoCD with ``args.learning_rate`` and ``args.weight_decay``. Each training step
        is one CoCD step on the batch, in eval mode; the loss is the Trainer's
        ``compute_loss``. While that is the Trainer's own (the model's loss, no label
        smoothing, no ``compute_loss_func``, one process), a ``ModelObjective`` over
        the model evaluates the step's points in vectorised calls; a subclass that
        overrides ``compute_loss`` gets a closure calling it at every point.
        Gradient accumulation does not apply (CoCD takes no gradients):
        ``gradient_accumulation_steps`` must be 1.
        """

        _cocd_objective = None  # the ModelObjective of the fast path, built on first use

        def _fast_objective(self, model, inputs: dict, num_items_in_batch):
            """A ModelObjective computing what compute_loss would, or None."""
            default = type(self).compute_loss is transformers.Trainer.compute_loss
            if not (
                default
                and self.label_smoother is None
                and self.compute_loss_func is None
                and self.accelerator.num_processes == 1  # no cross-process loss scaling
                and all(name in inputs for name in self.label_names)  # the model's loss
            ):
                return None
            inputs = dict(inputs)
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
                inputs["num_items_in_batch"] = num_items_in_batch
            obj = self._cocd_objective
            if obj is None or obj.model is not model:
                obj = self._cocd_objective = ModelObjective(
                    model, _identity, inputs, strategy="batched", output=_model_loss
                )
            else:
                obj.set_batch(inputs)
            return obj

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                model = self.model if model is None else model
                params = [p for p in model.parameters() if p.requires_grad]
                self.optimizer = CoCD(
                    params, lr=self.args.learning_rate, weight_decay=self.args.weight_decay
                )
            if not isinstance(self.optimizer, _SteppedInTrainingStep):
                self.optimizer = _SteppedInTrainingStep(_the_cocd(self.optimizer, "CoCDTrainer"))
            return self.optimizer

        @property
        def cocd(self) -> CoCD:
            """The CoCD behind the Trainer's optimizer wrappers."""
            return _the_cocd(self.optimizer, "CoCDTrainer")

        def training_step(self, model, inputs, num_items_in_batch=None):
            if self.args.gradient_accumulation_steps != 1:
                raise ValueError(
                    f"CoCDTrainer: gradient_accumulation_steps="
                    f"{self.args.gradient_accumulation_steps}; CoCD takes one step per "
                    "batch, so set it to 1 (use a larger per-device batch instead)"
                )
            inputs = self._prepare_inputs(inputs)
            cocd = self.cocd
            objective = self._fast_objective(model, inputs, num_items_in_batch)

            def closure():
                with self.compute_loss_context_manager():
                    # A copy: compute_loss may pop the labels out of the dict it gets.
                    return self.compute_loss(
                        model, dict(inputs), num_items_in_batch=num_items_in_batch
                    )

            with eval_mode(model):
                loss = cocd.step(closure if objective is None else objective)
            return loss.detach().to(self.args.device, torch.float32)

    return CoCDTrainer


# ---------------------------------------------------------------------- skorch
class CoCDNetMixin:
    """skorch: ``class Net(CoCDNetMixin, NeuralNetClassifier)``, with ``optimizer=CoCD``.

    Each batch is one CoCD step whose closure is the net's forward and ``get_loss``,
    in eval mode, without backward. The step's ``y_pred`` is the prediction before
    the step.
    """

    def train_step(self, batch, **fit_params):
        from skorch.dataset import unpack_data

        Xi, yi = unpack_data(batch)
        optimizers = [getattr(self, name + "_") for name in self._optimizers]
        if len(optimizers) != 1:
            raise TypeError(f"CoCDNetMixin needs exactly one optimizer, got {len(optimizers)}")
        cocd = _the_cocd(optimizers[0], "CoCDNetMixin")
        self._set_training(False)
        try:
            with torch.no_grad():
                y_pred = self.infer(Xi, **fit_params)

            def closure():
                return self.get_loss(self.infer(Xi, **fit_params), yi, X=Xi, training=True)

            loss = cocd.step(closure)
        finally:
            self._set_training(True)
        return {"loss": loss, "y_pred": y_pred}


def __getattr__(name: str):
    if name == "CoCDTrainer":  # built on first use: transformers is imported only then
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

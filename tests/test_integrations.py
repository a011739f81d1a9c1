"""CoCD in PyTorch Lightning, the Hugging Face Trainer and skorch, against the real
packages, on tiny models built from configs (nothing is downloaded).

Each framework run is compared with the same steps taken by a plain loop: the
framework must neither change the trajectory nor lose the fast evaluation path.
"""

import warnings

import lightning.pytorch as pl
import pytest
import torch
from skorch import NeuralNetClassifier
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from cocd_cuda import CoCD, ModelObjective
from cocd_cuda.closures import BACKWARD_WARNING
from cocd_cuda.integrations import CoCDNetMixin, cocd_training_step

STEPS, B, LR = 3, 6, 0.05


def data(n=32):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    return x, y


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def plain_run(objective=False):
    """STEPS CoCD steps on the whole data set, in a plain loop: the expected result."""
    net = mlp()
    x, y = data()
    opt = CoCD(net.parameters(), lr=LR, compute_budget=B)
    closure = ModelObjective(net, F.cross_entropy, x, y) if objective else None
    for _ in range(STEPS):
        opt.step(closure or (lambda: F.cross_entropy(net(x), y)))
    return [p.detach().clone() for p in net.parameters()]


def assert_same(params, expected):
    for p, q in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=1e-6, atol=1e-7)
    assert not torch.equal(expected[0], mlp()[0].weight)  # the steps moved something


def backward_warnings(caught):
    return [w for w in caught if str(w.message) == BACKWARD_WARNING]


# ------------------------------------------------------------------ Lightning
class CountingObjective(ModelObjective):
    blocks = calls = 0

    def evaluate_block(self, block):
        CountingObjective.blocks += 1
        return super().evaluate_block(block)

    def __call__(self):
        CountingObjective.calls += 1
        return super().__call__()


class ManualModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.net = mlp()
        self.objective = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.objective is None:
            self.objective = CountingObjective(self.net, F.cross_entropy, x, y)
        else:
            self.objective.set_batch(x, y)
        loss = cocd_training_step(self, self.objective)
        self.log("train_loss", loss)

    def configure_optimizers(self):
        return CoCD(self.parameters(), lr=LR, compute_budget=B)


class AutomaticModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = mlp()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return CoCD(self.parameters(), lr=LR, compute_budget=B)


def fit(module):
    x, y = data()
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))  # one batch: every step
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, loader)
    return caught


def test_lightning_manual_keeps_the_block_path():
    CountingObjective.blocks = CountingObjective.calls = 0
    module = ManualModule()
    caught = fit(module)
    assert_same(list(module.net.parameters()), plain_run(objective=True))
    assert CountingObjective.blocks == STEPS  # one block evaluation per step
    assert CountingObjective.calls == 0  # never evaluated point by point
    assert backward_warnings(caught) == []
    assert module.net.training  # eval mode only during the step


def test_lightning_manual_needs_manual_optimization():
    class Auto(ManualModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = True

    with pytest.raises(RuntimeError, match=r"self\.automatic_optimization = False"):
        fit(Auto())


def test_lightning_automatic_skips_backward_and_warns_once():
    module = AutomaticModule()
    caught = fit(module)
    assert_same(list(module.net.parameters()), plain_run())
    assert len(backward_warnings(caught)) == 1
    assert all(p.grad is None for p in module.parameters())  # no backward pass ran


# ---------------------------------------------------------------- Hugging Face
def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=8, bos_token_id=0,
        eos_token_id=0, resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5,
    )  # fmt: skip
    torch.manual_seed(0)
    return GPT2LMHeadModel(config)


def token_batch():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 16, (4, 8), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def hf_args(tmp_path, **kw):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=4,
        learning_rate=LR, lr_scheduler_type="constant", report_to=[], save_strategy="no",
        logging_steps=1, use_cpu=True, disable_tqdm=True, **kw,
    )  # fmt: skip


def test_hf_trainer_matches_the_plain_loop(tmp_path):
    from cocd_cuda.integrations import CoCDTrainer

    batch = token_batch()
    rows = [{k: v[i] for k, v in batch.items()} for i in range(4)]
    model = tiny_gpt2()
    opt = CoCD(model.parameters(), lr=LR, compute_budget=B)
    trainer = CoCDTrainer(
        model=model, args=hf_args(tmp_path), train_dataset=rows, optimizers=(opt, None)
    )
    trainer.train()

    twin = tiny_gpt2().eval()  # dropout (p=0.5 here) off, as CoCDTrainer steps
    twin_opt = CoCD(twin.parameters(), lr=LR, compute_budget=B)
    # The Trainer divides the summed token losses by the number of labels in the batch
    # (num_items_in_batch, 32 here: 4 rows of 8); the batch's row order does not matter.
    losses = []
    for _ in range(STEPS):
        with torch.no_grad():
            loss = twin_opt.step(lambda: twin(**batch, num_items_in_batch=32).loss)
        losses.append(float(loss))
    assert opt.step_count == STEPS
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert p.grad is None
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert logged == pytest.approx(losses, rel=1e-4)
    assert model.training  # eval mode only during the step


def hf_train(tmp_path, cls):
    """Train tiny_gpt2 with ``cls``; (its parameters, model forward calls per step)."""
    rows = [{k: v[i] for k, v in token_batch().items()} for i in range(4)]
    model = tiny_gpt2()
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    opt = CoCD(model.parameters(), lr=LR, compute_budget=B)
    trainer = cls(model=model, args=hf_args(tmp_path), train_dataset=rows, optimizers=(opt, None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's vmap fallback notice for attention
        trainer.train()
    assert opt.step_count == STEPS
    return trainer, [p.detach().clone() for p in model.parameters()], calls[0]


def test_hf_trainer_keeps_the_fast_path(tmp_path):
    """The Trainer's own loss goes through a ModelObjective: one vectorised model call
    per tensor a block touches (at most 2 here), not one per evaluation (2B); a
    subclass with its own compute_loss gets the closure, with the same result."""
    from cocd_cuda.integrations import CoCDTrainer

    class OwnLoss(CoCDTrainer):
        def compute_loss(self, model, inputs, **kw):
            return super().compute_loss(model, inputs, **kw)

    fast, fast_params, fast_calls = hf_train(tmp_path / "fast", CoCDTrainer)
    assert fast._cocd_objective.strategy == "batched"
    assert fast_calls <= 1 + 2 * STEPS  # 1: the objective's check at construction
    slow, slow_params, slow_calls = hf_train(tmp_path / "closure", OwnLoss)
    assert slow._cocd_objective is None
    assert slow_calls == 2 * B * STEPS
    for p, q in zip(fast_params, slow_params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_hf_trainer_builds_its_cocd_and_refuses_accumulation(tmp_path):
    from cocd_cuda.integrations import CoCDTrainer

    rows = [{k: v[i] for k, v in token_batch().items()} for i in range(4)]
    trainer = CoCDTrainer(model=tiny_gpt2(), args=hf_args(tmp_path), train_dataset=rows)
    trainer.train()
    assert trainer.cocd.step_count == STEPS
    assert trainer.cocd.param_groups[0]["lr"] == LR
    acc = CoCDTrainer(
        model=tiny_gpt2(),
        args=hf_args(tmp_path, gradient_accumulation_steps=2),
        train_dataset=rows,
    )
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2"):
        acc.train()


def test_model_objective_on_a_hf_model():
    model = tiny_gpt2().eval()
    batch = token_batch()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}

    def lm_loss(logits, ids):  # next-token prediction, as the model's own loss
        return F.cross_entropy(logits[:, :-1].reshape(-1, 16), ids[:, 1:].reshape(-1))

    with pytest.raises(TypeError, match="output='logits'"):
        ModelObjective(model, nn.CrossEntropyLoss(), inputs, batch["input_ids"])
    obj = ModelObjective(
        model, lm_loss, inputs, batch["input_ids"], output="logits", strategy="batched"
    )
    with torch.no_grad():
        torch.testing.assert_close(obj(), model(**batch).loss)


# ---------------------------------------------------------------------- skorch
class CoCDNet(CoCDNetMixin, NeuralNetClassifier):
    pass


def skorch_net(cls):
    return cls(
        mlp(), criterion=nn.CrossEntropyLoss, optimizer=CoCD, optimizer__compute_budget=B,
        lr=LR, max_epochs=STEPS, batch_size=32, train_split=None, verbose=0,
    )  # fmt: skip


@pytest.mark.parametrize("cls", [CoCDNet, NeuralNetClassifier], ids=["mixin", "plain"])
def test_skorch(cls):
    x, y = data()
    net = skorch_net(cls)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.fit(x.numpy(), y.numpy())
    assert_same(list(net.module_.parameters()), plain_run())
    # Without the mixin skorch's closure calls backward(): skipped, and said once.
    assert len(backward_warnings(caught)) == (0 if cls is CoCDNet else 1)
    assert net.optimizer_.step_count == STEPS
    assert net.history[-1, "train_loss"] < net.history[0, "train_loss"]

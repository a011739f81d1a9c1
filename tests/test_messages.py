"""Errors that say what went wrong and what to change."""

import pytest
import torch

from cocd_cuda import CoCD


def test_step_without_closure_names_the_frameworks_and_the_fix(backend):
    opt = CoCD([torch.zeros(3)], backend=backend)
    with pytest.raises(TypeError) as info:
        opt.step()
    msg = str(info.value)
    assert "Hugging Face Trainer" in msg and "automatic optimization" in msg
    assert "opt.step(closure)" in msg and "manual optimization" in msg


def test_nonfinite_loss_hint_mentions_train_mode_dropout_and_batches(backend):
    x = torch.zeros(4)
    calls = []

    def closure():  # as if a changing batch or dropout sent one evaluation off
        calls.append(1)
        return torch.tensor(float("inf") if len(calls) == 2 else 1.0)

    opt = CoCD([x], compute_budget=2, backend=backend)
    with pytest.raises(FloatingPointError) as info:
        opt.step(closure)
    msg = str(info.value)
    assert "train mode (dropout)" in msg and "model.eval()" in msg
    assert "batch drawn inside the closure" in msg
    assert torch.equal(x, torch.zeros(4)) and opt.step_count == 0

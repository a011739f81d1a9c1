"""Shared fixtures: seeded generators, the device list and the backends to test."""

import os
import random

import pytest
import torch

from benchmarks import data
from cocd_cuda import backends

SHARED_DATA, _ = data.resolve_data_dir(None)  # ../shared/data, or $COCD_DATA
needs_sarcos = pytest.mark.skipif(
    SHARED_DATA is None
    or not os.path.isfile(os.path.join(SHARED_DATA, "sarcos", data.SARCOS_TEST)),
    reason="the shared data folder (../shared/data) is absent",
)
needs_mnist = pytest.mark.skipif(
    SHARED_DATA is None or not os.path.isdir(os.path.join(SHARED_DATA, "mnist")),
    reason="the shared data folder (../shared/data) is absent",
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Benchmarks under test set torch's thread count; the next test gets it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=backends.available())
def backend(request):
    return request.param


def same(x, y) -> bool:
    """Bit-for-bit equality of nested state dicts and tensors (dtype, shape and bits)."""
    if isinstance(x, torch.Tensor):
        return (
            isinstance(y, torch.Tensor)
            and x.dtype == y.dtype
            and x.shape == y.shape
            and torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8))
        )
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(map(same, x, y))
    return type(x) is type(y) and x == y


def snapshot(opt, params) -> tuple:
    """Copies of the parameters and of the optimizer's whole state (its state_dict)."""
    return [p.detach().clone() for p in params], opt.state_dict()["state"]


def assert_same_state(opt, params, snap) -> None:
    """Parameters and optimizer state equal ``snap`` bit for bit."""
    xs, state = snap
    assert len(xs) == len(params)
    for p, x in zip(params, xs, strict=True):
        assert same(p.detach(), x)
    assert same(opt.state_dict()["state"], state)

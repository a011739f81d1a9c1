"""Shared fixtures: seeded generators, the device list and the backends to test."""

import random

import pytest
import torch

from cocd_cuda import backends

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=backends.available())
def backend(request):
    return request.param

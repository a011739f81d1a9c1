"""``python -m cocd_cuda``: what this installation can run, and with which versions."""

from __future__ import annotations

import os
import platform

import torch

from . import __version__, ops


def _kernels(key: str) -> bool:
    return ops.LOAD_ERROR is None and torch._C._dispatch_has_kernel_for_dispatch_key(
        "cocd_cuda::plan_", key
    )


def _openmp_threads() -> str:
    """omp_get_max_threads() as torch reports it (the CPU kernels share torch's OpenMP)."""
    for line in torch.__config__.parallel_info().splitlines():
        if "omp_get_max_threads()" in line:
            return line.split(":")[-1].strip()
    return "not used by this torch build"


def report() -> str:
    """One line per fact: versions, the native backend per device, threads."""
    cuda = torch.cuda.is_available()
    lines = [
        f"cocd_cuda {__version__} ({os.path.dirname(os.path.abspath(__file__))})",
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"CUDA build: {torch.version.cuda or 'no'}",
        f"native backend: {'yes' if ops.LOAD_ERROR is None else 'no: ' + ops.LOAD_ERROR}",
        f"native CPU kernels: {'yes' if _kernels('CPU') else 'no'}",
        f"native CUDA kernels: {'yes' if _kernels('CUDA') else 'no'}",
        f"GPU: {torch.cuda.get_device_name() if cuda else 'none visible'}",
        f"CPU threads: torch {torch.get_num_threads()}, OpenMP {_openmp_threads()}",
    ]
    if ops.LOAD_ERROR is not None:
        lines.append('CoCD(backend="auto") runs the pure-PyTorch reference here.')
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())

"""Which engine runs behind ``CoCD``: the native kernels or the pure-PyTorch reference."""

from __future__ import annotations

import warnings

from . import native, ops
from .layout import ParamLayout
from .reference import ReferenceEngine


def select(backend: str, layout: ParamLayout) -> type:
    """The engine class for ``backend`` ("auto", "reference" or "native")."""
    if backend == "reference":
        return ReferenceEngine
    reason = ops.unsupported(layout)
    if reason is None:
        return native.NativeEngine
    if backend == "native":
        raise RuntimeError(f"the native backend cannot run here: {reason}")
    warnings.warn(f"cocd_cuda: running the reference implementation: {reason}", stacklevel=3)
    return ReferenceEngine


def available() -> list[str]:
    """The engine names that can run here."""
    return ["reference"] + ([] if ops.LOAD_ERROR else ["native"])

"""Which engine runs behind ``CoCD``: the pure-PyTorch reference or the native kernels."""

from __future__ import annotations

from .layout import ParamLayout
from .reference import ReferenceEngine

BUILD_HINT = (
    "build it with `pip install --no-build-isolation -e .` from a source checkout "
    "(see the README's Install section)"
)


def select(backend: str, layout: ParamLayout) -> type:
    """The engine class for ``backend`` ("auto", "reference" or "native")."""
    if backend == "reference":
        return ReferenceEngine
    if backend == "native":
        raise RuntimeError(f"the native backend is not available in this build; {BUILD_HINT}")
    return ReferenceEngine


def available() -> list[str]:
    """The engine names that can run here."""
    return ["reference"]

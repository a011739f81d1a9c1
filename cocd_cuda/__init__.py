"""cocd_cuda: Coherent Coordinate Descent (CoCD), a deterministic zeroth-order optimizer."""

from .optimizer import CoCD

__version__ = "0.1.0"
__all__ = ["CoCD", "__version__"]

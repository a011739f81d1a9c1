"""cocd_cuda: Coherent Coordinate Descent (CoCD), a deterministic zeroth-order optimizer."""

from . import baselines
from .objective import ModelObjective
from .optimizer import CoCD

__version__ = "0.1.0"
__all__ = ["CoCD", "ModelObjective", "__version__", "baselines"]

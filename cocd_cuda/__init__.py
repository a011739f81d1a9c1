"""cocd_cuda: Coherent Coordinate Descent (CoCD), a deterministic zeroth-order optimizer."""

from . import baselines
from .minimize import OptimizeResult, minimize
from .objective import ModelObjective
from .optimizer import CoCD

__version__ = "0.1.0"
__all__ = ["CoCD", "ModelObjective", "OptimizeResult", "__version__", "baselines", "minimize"]

"""Pure-PyTorch reference losses: the CPU fallback and the test oracle."""
from .dsc import dsc
from .focal_bce import focal_bce
from .ghmc import ghmc
from .softmax_focal import softmax_focal

__all__ = ["dsc", "focal_bce", "ghmc", "softmax_focal"]

"""Pure-PyTorch reference losses: the CPU fallback and the test oracle."""
from .asl import asl
from .dice import dice_loss
from .dsc import dsc
from .focal_bce import focal_bce
from .ghmc import ghmc
from .softmax_focal import softmax_focal

__all__ = ["asl", "dice_loss", "dsc", "focal_bce", "ghmc", "softmax_focal"]

"""Pure-PyTorch reference losses: the CPU fallback and the test oracle."""
from .asl import asl
from .dice import dice_loss
from .focal_bce import focal_bce
from .ghmc import ghmc

__all__ = ["asl", "dice_loss", "focal_bce", "ghmc"]

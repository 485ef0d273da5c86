"""Pure-PyTorch reference losses: the CPU fallback and the test oracle."""
from .asl import asl
from .focal_bce import focal_bce
from .ghmc import ghmc

__all__ = ["asl", "focal_bce", "ghmc"]

"""Pure-PyTorch reference losses: the CPU fallback and the test oracle."""
from .focal_bce import focal_bce
from .ghmc import ghmc

__all__ = ["focal_bce", "ghmc"]

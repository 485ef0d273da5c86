"""torch.library wiring: autograd for every fused op, one module per loss."""
from . import asl, dice, focal_bce, ghmc  # noqa: F401

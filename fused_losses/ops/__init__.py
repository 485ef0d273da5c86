"""torch.library wiring: autograd for every fused op, one module per loss."""
from . import asl, dice, dsc, focal_bce, ghmc, softmax_focal  # noqa: F401

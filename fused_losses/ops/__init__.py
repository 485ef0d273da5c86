"""torch.library wiring: autograd for every fused op, one module per loss."""
from . import focal_bce, ghmc  # noqa: F401
from . import dsc, softmax_focal  # noqa: F401

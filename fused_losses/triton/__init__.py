"""Triton kernels, one module per loss. Importing this needs ``triton``."""
import triton  # noqa: F401  (fail here, with ImportError, when triton is absent)

from . import focal_bce, ghmc  # noqa: F401  (registers the fused_losses::*_triton_* ops)
from . import dsc, softmax_focal  # noqa: F401

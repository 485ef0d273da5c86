"""Triton kernels, one module per loss. Importing this needs ``triton``."""
import triton  # noqa: F401  (fail here, with ImportError, when triton is absent)

from . import focal_bce  # noqa: F401  (registers fused_losses::focal_bce_triton_*)

"""Triton kernels, one module per loss. Importing this needs ``triton``."""
import triton  # noqa: F401  (fail here, with ImportError, when triton is absent)

# Importing each module registers its fused_losses::<loss>_triton_* ops.
from . import asl, dice, dsc, focal_bce, ghmc, softmax_focal  # noqa: F401

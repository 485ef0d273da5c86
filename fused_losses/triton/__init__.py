"""Triton kernels, one module per loss. Importing this needs ``triton``."""
import importlib

import triton  # noqa: F401  (fail here, with ImportError, when triton is absent)

from ..spec import SPECS

# Importing each loss's module registers its fused_losses::<stem>_triton_* ops.
for _spec in SPECS:
    importlib.import_module(f"{__name__}.{_spec.stem}")

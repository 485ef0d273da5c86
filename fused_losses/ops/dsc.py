"""dsc: autograd for the fused self-adjusting DSC ops and the per-backend call.

Ops (namespace ``fused_losses``): ``dsc_triton_fwd/bwd`` (Triton, in
``fused_losses.triton.dsc``) and, with the C++ extension, ``dsc_fwd/bwd``
(``csrc/``), in the (loss, grad, scale) protocol of ``_fused.py``.
"""
from __future__ import annotations

import torch

from .. import _backend, reference
from .._layout import backward_fake, row_outputs
from ._fused import needs_input_grad, register_fused_autograd

_FWD_OPS = {}


def _fwd_fake(input, target, alpha, smooth, reduction, compute_grad):
    return row_outputs(input, target, reduction, compute_grad)


def _register() -> None:
    ops = torch.ops.fused_losses
    if _backend._TRITON_PROBLEM is None:
        _FWD_OPS["triton"] = register_fused_autograd(
            "fused_losses::dsc_triton_fwd", ops.dsc_triton_bwd, 0)
    if _backend._EXT_PROBLEM is None and hasattr(ops, "dsc_fwd"):
        torch.library.register_fake("fused_losses::dsc_fwd", _fwd_fake)
        torch.library.register_fake("fused_losses::dsc_bwd", backward_fake)
        _FWD_OPS["cpu"] = _FWD_OPS["cuda"] = register_fused_autograd(
            "fused_losses::dsc_fwd", ops.dsc_bwd, 0)


_register()


def has_backend(backend: str) -> bool:
    """Whether this installation has self-adjusting DSC kernels for ``backend``."""
    return backend == "torch" or backend in _FWD_OPS


def dsc(input, target, *, backend: str, alpha: float, smooth: float,
        reduction: str) -> torch.Tensor:
    """Run the self-adjusting DSC on a resolved ``backend`` (arguments validated)."""
    if backend == "torch":
        return reference.dsc(input, target, alpha=alpha, smooth=smooth, reduction=reduction)
    loss, _, _ = _FWD_OPS[backend](input, target, alpha, smooth, reduction,
                                   needs_input_grad(input))
    return loss

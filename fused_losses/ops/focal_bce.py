"""focal_bce: autograd for the fused ops and the per-backend call.

Ops (namespace ``fused_losses``): ``focal_bce_triton_fwd/bwd`` (Triton,
registered in ``fused_losses.triton.focal_bce``) and, when the C++ extension
is built, ``focal_bce_fwd/bwd`` (CPU and CUDA kernels from ``csrc/``).
"""
from __future__ import annotations

import torch

from .. import _backend, reference
from .._layout import backward_fake, fused_outputs
from ._fused import needs_input_grad, register_fused_autograd

_FWD_OPS = {}


def _register() -> None:
    ops = torch.ops.fused_losses
    if _backend._TRITON_PROBLEM is None:
        _FWD_OPS["triton"] = register_fused_autograd(
            "fused_losses::focal_bce_triton_fwd", ops.focal_bce_triton_bwd, 3)
    if _backend._EXT_PROBLEM is None:
        torch.library.register_fake("fused_losses::focal_bce_fwd", _fwd_fake)
        torch.library.register_fake("fused_losses::focal_bce_bwd", backward_fake)
        _FWD_OPS["cpu"] = _FWD_OPS["cuda"] = register_fused_autograd(
            "fused_losses::focal_bce_fwd", ops.focal_bce_bwd, 3)


def _fwd_fake(input, target, alpha, pos_weight, weight, gamma, alpha_value, label_smoothing,
              ignore_index, reduction, compute_grad):
    return fused_outputs(input, reduction, compute_grad)



_register()


def focal_bce(input, target, *, backend: str, gamma: float, alpha, pos_weight, weight,
              label_smoothing: float, ignore_index, reduction: str) -> torch.Tensor:
    """Run focal BCE on a resolved ``backend``; arguments are already validated."""
    if backend == "torch":
        return reference.focal_bce(
            input, target, gamma=gamma, alpha=alpha, pos_weight=pos_weight, weight=weight,
            label_smoothing=label_smoothing, ignore_index=ignore_index, reduction=reduction)
    alpha_tensor = alpha if isinstance(alpha, torch.Tensor) else None
    alpha_value = None if alpha is None or alpha_tensor is not None else float(alpha)
    loss, _, _ = _FWD_OPS[backend](
        input, target, alpha_tensor, pos_weight, weight, gamma, alpha_value,
        label_smoothing, ignore_index, reduction, needs_input_grad(input))
    return loss

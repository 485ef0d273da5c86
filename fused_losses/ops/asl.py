"""asl: autograd for the fused asymmetric-loss ops and the per-backend call.

Ops (namespace ``fused_losses``): ``asl_triton_fwd/bwd`` (Triton, registered
in ``fused_losses.triton.asl``) and, when the C++ extension has them,
``asl_fwd/bwd`` (CPU and CUDA kernels from ``csrc/``). Both follow the
(loss, grad, scale) protocol of ``_fused.py``; ``scale`` is always 1 (ASL has
no ignored elements, so a mean's divisor is known on the host).
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
            "fused_losses::asl_triton_fwd", ops.asl_triton_bwd, 1)
    # hasattr: an extension built before ASL existed simply lacks these ops.
    if _backend._EXT_PROBLEM is None and hasattr(ops, "asl_fwd"):
        torch.library.register_fake("fused_losses::asl_fwd", _fwd_fake)
        torch.library.register_fake("fused_losses::asl_bwd", backward_fake)
        _FWD_OPS["cpu"] = _FWD_OPS["cuda"] = register_fused_autograd(
            "fused_losses::asl_fwd", ops.asl_bwd, 1)


def _fwd_fake(input, target, weight, gamma_pos, gamma_neg, clip, eps, detach_focal_weight,
              reduction, compute_grad):
    return fused_outputs(input, reduction, compute_grad)


_register()


def has_backend(backend: str) -> bool:
    """Whether ``backend`` has ASL kernels in this installation."""
    return backend == "torch" or backend in _FWD_OPS


def asl(input, target, *, backend: str, gamma_pos: float, gamma_neg: float, clip: float,
        eps: float, detach_focal_weight: bool, weight, reduction: str) -> torch.Tensor:
    """Run ASL on a resolved ``backend``; arguments are already validated."""
    if backend == "torch":
        return reference.asl(input, target, gamma_pos=gamma_pos, gamma_neg=gamma_neg,
                             clip=clip, eps=eps, detach_focal_weight=detach_focal_weight,
                             weight=weight, reduction=reduction)
    loss, _, _ = _FWD_OPS[backend](
        input, target, weight, gamma_pos, gamma_neg, clip, eps, detach_focal_weight,
        reduction, needs_input_grad(input))
    return loss

"""softmax_focal: autograd for the fused ops and the per-backend call.

Ops (namespace ``fused_losses``): ``softmax_focal_triton_fwd/bwd`` (Triton, in
``fused_losses.triton.softmax_focal``) and, with the C++ extension,
``softmax_focal_fwd/bwd`` (``csrc/``), in the (loss, grad, scale) protocol of
``_fused.py``.
"""
from __future__ import annotations

import torch

from .. import _backend, reference
from .._layout import backward_fake, row_outputs
from ._fused import needs_input_grad, register_fused_autograd

_FOCAL_OPS = {}


def _focal_fake(input, target, alpha, gamma, ignore_index, label_smoothing, reduction,
                compute_grad):
    return row_outputs(input, target, reduction, compute_grad)


def _register() -> None:
    ops = torch.ops.fused_losses
    if _backend._TRITON_PROBLEM is None:
        _FOCAL_OPS["triton"] = register_fused_autograd(
            "fused_losses::softmax_focal_triton_fwd", ops.softmax_focal_triton_bwd, 1)
    if _backend._EXT_PROBLEM is None and hasattr(ops, "softmax_focal_fwd"):
        torch.library.register_fake("fused_losses::softmax_focal_fwd", _focal_fake)
        torch.library.register_fake("fused_losses::softmax_focal_bwd", backward_fake)
        _FOCAL_OPS["cpu"] = _FOCAL_OPS["cuda"] = register_fused_autograd(
            "fused_losses::softmax_focal_fwd", ops.softmax_focal_bwd, 1)


_register()


def has_backend(backend: str) -> bool:
    """Whether this installation has softmax focal kernels for ``backend``."""
    return backend == "torch" or backend in _FOCAL_OPS


def softmax_focal(input, target, *, backend: str, gamma: float, alpha, ignore_index,
                  label_smoothing: float, reduction: str) -> torch.Tensor:
    """Run the softmax focal loss on a resolved ``backend`` (arguments validated)."""
    if backend == "torch":
        return reference.softmax_focal(input, target, gamma=gamma, alpha=alpha,
                                       ignore_index=ignore_index,
                                       label_smoothing=label_smoothing, reduction=reduction)
    loss, _, _ = _FOCAL_OPS[backend](input, target, alpha, gamma, ignore_index,
                                     label_smoothing, reduction, needs_input_grad(input))
    return loss


"""ghmc: the three passes per backend, the distributed histogram sum, autograd.

Ops (namespace ``fused_losses``): ``ghmc_triton_hist/weights/fwd/bwd``
(Triton, in ``fused_losses.triton.ghmc``) and, with the C++ extension,
``ghmc_hist/weights/fwd/bwd`` (``csrc/``). Only ``*_fwd`` is differentiable;
the histogram and the weights are constants of the step.
"""
from __future__ import annotations

import torch

from .. import _backend, reference
from .._layout import backward_fake, fused_outputs
from ._fused import needs_input_grad, register_fused_autograd

_OPS = {}


def _register() -> None:
    ops = torch.ops.fused_losses
    if _backend._TRITON_PROBLEM is None:
        _OPS["triton"] = (ops.ghmc_triton_hist, ops.ghmc_triton_weights, register_fused_autograd(
            "fused_losses::ghmc_triton_fwd", ops.ghmc_triton_bwd, 2))
    if _backend._EXT_PROBLEM is None and hasattr(ops, "ghmc_fwd"):
        torch.library.register_fake("fused_losses::ghmc_hist", _hist_fake)
        torch.library.register_fake("fused_losses::ghmc_weights", _weights_fake)
        torch.library.register_fake("fused_losses::ghmc_fwd", _fwd_fake)
        torch.library.register_fake("fused_losses::ghmc_bwd", backward_fake)
        _OPS["cpu"] = _OPS["cuda"] = (ops.ghmc_hist, ops.ghmc_weights, register_fused_autograd(
            "fused_losses::ghmc_fwd", ops.ghmc_bwd, 2))


def _hist_fake(input, target, label_weight, bins):
    return input.new_empty(bins + 1, dtype=torch.int64)


def _weights_fake(hist, acc_sum, momentum, mean):
    return hist.new_empty(hist.numel() - 1, dtype=torch.float32)


def _fwd_fake(input, target, label_weight, weights, bins, reduction, compute_grad):
    return fused_outputs(input, reduction, compute_grad)



_register()


def has_backend(backend: str) -> bool:
    """Whether this installation has GHM-C kernels for ``backend``."""
    return backend == "torch" or backend in _OPS


def ghmc(input, target, *, backend: str, bins: int, momentum: float, acc_sum, label_weight,
         reduction: str, process_group) -> torch.Tensor:
    """Run GHM-C on a resolved ``backend``; arguments are already validated."""
    if backend == "torch":
        return reference.ghmc(input, target, bins=bins, momentum=momentum, acc_sum=acc_sum,
                              label_weight=label_weight, reduction=reduction,
                              process_group=process_group)
    hist_op, weights_op, fwd_op = _OPS[backend]
    hist = hist_op(input, target, label_weight, bins)
    if process_group is not None:
        torch.distributed.all_reduce(hist, group=process_group)
    weights = weights_op(hist, acc_sum if momentum > 0 else None, momentum, reduction == "mean")
    loss, _, _ = fwd_op(input, target, label_weight, weights, bins, reduction,
                        needs_input_grad(input))
    return loss

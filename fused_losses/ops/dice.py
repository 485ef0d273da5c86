"""dice: autograd for the fused ops and the per-backend call.

Ops (namespace ``fused_losses``): ``dice_triton_fwd/bwd`` (Triton, registered
in ``fused_losses.triton.dice``) and, with the C++ extension, ``dice_fwd/bwd``
(CPU and CUDA kernels from ``csrc/``).

Protocol (unlike focal_bce's (loss, grad, scale)): the gradient depends on
full-batch per-class sums, so it cannot be written during the forward pass.

- ``*_fwd(input, target, smooth, alpha, square_denominator, reduction)`` ->
  ``(loss, sums)``: loss ``[]`` or ``[C]``, fp32 ``sums[3, C]`` =
  (Σ p̃·t, Σ p̃ᵏ, Σ tᵏ), non-differentiable;
- ``*_bwd(grad_output, input, target, sums, smooth, alpha, square_denominator,
  reduction)`` -> d loss/d input, one elementwise pass.
"""
from __future__ import annotations

import torch

from .. import _backend, reference
from .._layout import backward_fake, dice_outputs
from ._fused import attach_autograd

_FWD_OPS = {}


def register_sums_autograd(fwd_op: str, bwd_op):
    """Attach autograd to ``fwd_op``: save (input, target, sums), call ``bwd_op``.
    Returns the caller to use (``_fused.attach_autograd``)."""

    def setup_context(ctx, inputs, output):
        input, target, *scalars = inputs
        ctx.scalars = scalars
        _, sums = output
        ctx.mark_non_differentiable(sums)
        ctx.set_materialize_grads(False)
        # References, not copies: the backward recomputes p̃ from x.
        ctx.save_for_backward(input, target, sums)

    def backward(ctx, grad_loss, _grad_sums):
        if grad_loss is None:
            return (None,) * (2 + len(ctx.scalars))
        input, target, sums = ctx.saved_tensors
        grad_input = bwd_op(grad_loss, input, target, sums, *ctx.scalars)
        return (grad_input,) + (None,) * (1 + len(ctx.scalars))

    return attach_autograd(fwd_op, setup_context, backward)


def _register() -> None:
    ops = torch.ops.fused_losses
    if _backend._TRITON_PROBLEM is None:
        _FWD_OPS["triton"] = register_sums_autograd("fused_losses::dice_triton_fwd",
                                                    ops.dice_triton_bwd)
    if _backend._EXT_PROBLEM is None and hasattr(ops, "dice_fwd"):
        torch.library.register_fake("fused_losses::dice_fwd", _fwd_fake)
        torch.library.register_fake("fused_losses::dice_bwd", backward_fake)
        _FWD_OPS["cpu"] = _FWD_OPS["cuda"] = register_sums_autograd("fused_losses::dice_fwd",
                                                                    ops.dice_bwd)


def _fwd_fake(input, target, smooth, alpha, square_denominator, reduction):
    return dice_outputs(input, reduction)


_register()


def has_backend(backend: str) -> bool:
    """Whether this installation has dice kernels for ``backend``."""
    return backend == "torch" or backend in _FWD_OPS


def dice_loss(input, target, *, backend: str, smooth: float, alpha: float,
              square_denominator: bool, reduction: str) -> torch.Tensor:
    """Run the dice loss on a resolved ``backend``; arguments are already validated."""
    if backend == "torch":
        return reference.dice_loss(input, target, smooth=smooth, alpha=alpha,
                                   square_denominator=square_denominator, reduction=reduction)
    # Contiguous here, outside the op: a strided (e.g. transposed [N, C, S]) input
    # copied inside the Triton op made inductor's scheduler fail (KeyError in
    # compute_ancestors, H100 run of test_dice_cuda's spatial compile test).
    loss, _ = _FWD_OPS[backend](input.contiguous(), target.contiguous(), smooth, alpha,
                                square_denominator, reduction)
    return loss


"""Autograd wiring shared by fused ops that follow the (loss, grad, scale) protocol.

A fused forward op returns ``(loss, grad, scale)``. For ``mean``/``sum`` the
forward already computed ``grad`` = d(loss)/d(input) up to the factor
``scale``; the backward is one multiply. For ``none`` it saves its inputs and
the backward calls the loss's one-pass backward op.
"""
from __future__ import annotations

import contextlib

import torch

from .. import _backend

# Positional layout of every fused forward op:
# (input, target, *tensor_options, *scalar_options, reduction, compute_grad)


def register_fused_autograd(fwd_op: str, bwd_op, n_tensor_options: int):
    """Attach autograd to the op named ``fwd_op``; ``bwd_op(grad_out, input, target, *options)``.

    Returns the callable the loss should use (see ``attach_autograd``).
    """

    def setup_context(ctx, inputs, output):
        input, target = inputs[0], inputs[1]
        tensors = inputs[2:2 + n_tensor_options]
        ctx.scalars = inputs[2 + n_tensor_options:-2]
        ctx.reduction = inputs[-2]
        ctx.n_inputs = len(inputs)
        _, grad, scale = output
        ctx.mark_non_differentiable(grad, scale)
        # Otherwise autograd hands backward a zero-filled N×C tensor for the
        # unused `grad` output: an extra full-size allocation and fill.
        ctx.set_materialize_grads(False)
        if ctx.reduction == "none":
            ctx.save_for_backward(input, target, *tensors)
        else:
            ctx.save_for_backward(grad, scale)

    def backward(ctx, grad_loss, _grad_grad, _grad_scale):
        if grad_loss is None:  # possible without materialized grads
            return (None,) * ctx.n_inputs
        if ctx.reduction == "none":
            input, target, *tensors = ctx.saved_tensors
            grad_input = bwd_op(grad_loss, input, target, *tensors, *ctx.scalars)
        else:
            grad, scale = ctx.saved_tensors
            grad_input = _scale_saved_grad(grad, grad_loss, scale)
        return (grad_input,) + (None,) * (ctx.n_inputs - 1)

    return attach_autograd(fwd_op, setup_context, backward)


def attach_autograd(fwd_op: str, setup_context, backward):
    """``torch.library.register_autograd`` on the op named ``fwd_op``, and the
    callable a loss should use to run it.

    The callable is the op itself under ``torch.compile`` or without grad, and
    in eager an ``autograd.Function`` with the same setup_context and backward.
    Both paths run the same op and the same backward; the eager one skips about
    60 µs per forward+backward step of torch.library's generic autograd glue (it
    re-reads the op schema on every call; measured on the project's 2-core CPU
    machine, see docs/development.md, Integrations), which matters for GPU calls of ~100 µs.
    """
    op = getattr(torch.ops.fused_losses, fwd_op.split("::")[1]).default
    torch.library.register_autograd(fwd_op, backward, setup_context=setup_context)

    class EagerFused(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            # Straight to the kernel: below autograd, the op skips the Python
            # autograd kernel register_autograd installed (it would only
            # redispatch, since grad mode is off here), ~20 µs of a call.
            with _below_autograd():
                output = op(*inputs)
            setup_context(ctx, inputs, output)
            return output

        @staticmethod
        def backward(ctx, *grads):
            return backward(ctx, *grads)

    def call(*inputs):
        if torch.compiler.is_compiling() or not torch.is_grad_enabled():
            return op(*inputs)
        return EagerFused.apply(*inputs)

    return call


# Dispatch below the Autograd keys (a C++ guard torch itself uses around its
# kernels); a no-op context where a torch build lacks it.
_below_autograd = getattr(torch._C, "_AutoDispatchBelowAutograd", contextlib.nullcontext)


def _scale_saved_grad(grad: torch.Tensor, grad_output: torch.Tensor,
                      scale: torch.Tensor) -> torch.Tensor:
    """The forward's gradient times ``grad_output·scale``, in place when running eagerly.

    In place keeps the peak at one gradient-sized tensor. It is safe: the
    buffer is private to this node, autograd frees it after this backward, and
    a second backward (``retain_graph=True``) fails autograd's version-counter
    check on ``saved_tensors`` instead of scaling twice. Traced code (fake or
    functional tensors under torch.compile) gets the out-of-place product.

    A factor of exactly 1 (a plain ``loss.backward()`` of a loss whose forward
    already divided by its mean) skips the pass, which is exact (x·1 changes
    no bit): on the CPU by reading the host scalars (no sync there); on a GPU
    inside the shared scale kernel, which forms the fp32 factor from the two
    one-element tensors on the device and returns at once (one launch, no host
    sync, so CUDA graphs capture it): the C++ CUDA kernel when built, else the
    Triton one.
    """
    if type(grad) is not torch.Tensor:
        return grad * (grad_output * scale)
    if grad.device.type == "cpu":
        # Host scalars: the exact product of two fp32 values, in a Python float.
        # Where it is not exactly 1 but rounds to an fp32 1, the multiply below
        # is by 1 and changes no bit either.
        if (grad_output.numel() == 1 and scale.numel() == 1
                and grad_output.item() * scale.item() == 1.0):
            return _written(grad)
        return grad.mul_(grad_output * scale)
    if (grad.device.type == "cuda" and grad.is_contiguous() and grad_output.numel() == 1
            and grad_output.dtype in _SCALE_DTYPES and scale.numel() == 1):
        grad_output, scale = grad_output.reshape(()), scale.reshape(())
        if _backend._EXT_HAS_CUDA:
            torch.ops.fused_losses.scale_grad_(grad, grad_output, scale)
            return _written(grad)
        if _backend._TRITON_PROBLEM is None:
            from ..triton._scale import scale_grad_
            return _written(scale_grad_(grad, grad_output, scale))
    return grad.mul_(grad_output * scale)


_SCALE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _written(grad: torch.Tensor) -> torch.Tensor:
    """Count a skipped or custom-kernel scaling as a write: the returned buffer
    may become ``.grad`` itself, so a second backward through a retained graph
    must fail autograd's version check rather than scale it in place."""
    torch.autograd.graph.increment_version(grad)
    return grad


def needs_input_grad(input: torch.Tensor) -> bool:
    """Whether the forward should write the gradient (skipped under no_grad)."""
    return input.requires_grad and torch.is_grad_enabled()

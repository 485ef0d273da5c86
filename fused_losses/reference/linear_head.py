"""The linear heads in plain PyTorch, chunked: the oracle and the ``backend="torch"`` path.

``loss(input @ weight.T + bias, target)`` for an elementwise loss (focal BCE,
ASL), with the chunk loop of ``fused_losses._linear_chunks`` and each chunk's
loss and gradient from the loss's reference function through autograd. The
``[N, C]`` logits are never built, here either: only one chunk's logits and
its autograd graph are alive at a time.

Shapes: input ``[N, H]``, weight ``[C, H]``, bias ``[C]``; the loss is ``[]``.
"""
from __future__ import annotations

import torch

from .. import _linear_chunks


def chunk_loss(loss_fn, values: dict, class_operands: tuple):
    """A ``ChunkLoss`` from a reference loss ``loss_fn(input, target, **values,
    reduction="sum")``: the chunk's summed loss and, through autograd, its
    gradient. ``class_operands`` name the tensors of ``values`` that are per
    class (``[C]``) and follow a chunk's columns."""
    def run(logits, target, cols, need_grad):
        kwargs = dict(values)
        for name in class_operands:
            value = kwargs.get(name)
            if (isinstance(value, torch.Tensor) and cols is not None and value.dim()
                    and value.shape[-1] != 1):
                kwargs[name] = value[..., cols]
        if not need_grad:
            return loss_fn(logits, target, **kwargs, reduction="sum"), None
        with torch.enable_grad():
            z = logits.detach().requires_grad_()
            loss = loss_fn(z, target, **kwargs, reduction="sum")
            (grad,) = torch.autograd.grad(loss, z)
        return loss.detach(), grad
    return run


class LinearHead(torch.autograd.Function):
    """Autograd of the chunk loop: the forward computes every gradient, the
    backward scales them by ``grad_output``."""

    @staticmethod
    def forward(ctx, input, weight, bias, targets, run_chunk, chunks, factor, needs):
        loss, gx, gw, gb = _linear_chunks.run(input, weight, bias, targets, run_chunk,
                                              chunks, factor, needs)
        ctx.save_for_backward(gx, gw, gb)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grads = tuple(g * grad_output.to(g.dtype) if need else None
                      for g, need in zip(ctx.saved_tensors, ctx.needs_input_grad[:3]))
        return grads + (None,) * 5


def linear_head(loss_fn, input, weight, bias, targets, values: dict, class_operands: tuple,
                chunks, factor: float, needs: tuple):
    """The reference linear head's loss (differentiable in input, weight and bias;
    ``needs`` says which of them get a gradient)."""
    run_chunk = chunk_loss(loss_fn, values, class_operands)
    return LinearHead.apply(input, weight, bias, targets, run_chunk, chunks, factor, needs)

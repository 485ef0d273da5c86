"""The fused linear heads as one registered op, ``fused_losses::linear_head``.

The op runs the whole chunk loop (``fused_losses._linear_chunks``) with each
chunk's loss and logits gradient from a fused elementwise kernel of the loss
(``<stem>_fwd`` of the C++ extension or ``<stem>_triton_fwd``), and returns
``(loss, grad_input, grad_weight, grad_bias)``. Being one op with a fake
kernel, ``torch.compile(fullgraph=True)`` traces it without a graph break; its
autograd only scales the three saved gradients by ``grad_output`` (the shared
device-side "skip when 1" kernel on a GPU), so the backward adds no pass over
the N×C logits, which never exist.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .. import _linear_chunks
from .._linear_targets import Targets
from ._fused import _scale_saved_grad, attach_autograd


def _kernel(stem: str, kernel: str):
    name = f"{stem}_triton_fwd" if kernel == "triton" else f"{stem}_fwd"
    return getattr(torch.ops.fused_losses, name)


def fused_chunk_loss(stem: str, kernel: str, operands, options):
    """A ``ChunkLoss`` running the loss's fused forward with ``reduction="sum"``:
    it writes the chunk's unscaled gradient in the same pass as its loss."""
    fwd = _kernel(stem, kernel)

    def run(logits, target, cols, need_grad):
        ops_k = [class_slice(o, cols) for o in operands]
        loss, grad, _ = fwd(logits, target, *ops_k, options, "sum", need_grad)
        return loss, (grad if need_grad else None)
    return run


def class_slice(operand, cols):
    """A per-class operand (``[C]``) restricted to a chunk's columns; a scalar
    one (``[]`` or ``[1]``) or a row chunk (``cols`` None) is unchanged."""
    if operand is None or cols is None or operand.dim() == 0 or operand.shape[-1] == 1:
        return operand
    return operand[..., cols]


@torch.library.custom_op("fused_losses::linear_head", mutates_args=())
def linear_head(input: Tensor, weight: Tensor, bias: Optional[Tensor], dense: Optional[Tensor],
                rows: Optional[Tensor], cols: Optional[Tensor], values: Optional[Tensor],
                operands: List[Optional[Tensor]], stem: str, kernel: str, options: List[float],
                by_rows: bool, chunk: int, factor: float, need_input: bool,
                need_weight: bool, need_bias: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    length = input.shape[0] if by_rows else weight.shape[0]
    chunks = _linear_chunks.Plan(by_rows, chunk, max(1, -(-length // chunk)))
    run_chunk = fused_chunk_loss(stem, kernel, operands, options)
    return _linear_chunks.run(input, weight, bias, Targets(dense, rows, cols, values), run_chunk,
                              chunks, factor, (need_input, need_weight, need_bias))


@linear_head.register_fake
def _(input, weight, bias, dense, rows, cols, values, operands, stem, kernel, options, by_rows,
      chunk, factor, need_input, need_weight, need_bias):
    def grad_like(t, need):
        return t.new_empty(t.shape if need else (0,))
    return (input.new_empty(()), grad_like(input, need_input), grad_like(weight, need_weight),
            input.new_empty((0,)) if bias is None else grad_like(bias, need_bias))


def _setup_context(ctx, inputs, output):
    grads = output[1:]
    ctx.mark_non_differentiable(*grads)
    ctx.set_materialize_grads(False)
    ctx.needs = inputs[-3:]
    ctx.n_inputs = len(inputs)
    ctx.save_for_backward(*grads)


def _backward(ctx, grad_loss, *_):
    out = [None] * ctx.n_inputs
    if grad_loss is None:
        return tuple(out)
    one = torch.ones((), dtype=torch.float32, device=grad_loss.device)
    for slot, (grad, need) in enumerate(zip(ctx.saved_tensors, ctx.needs)):
        if need:
            out[slot] = _scale_saved_grad(grad, grad_loss, one)
    return tuple(out)


call = attach_autograd("fused_losses::linear_head", _setup_context, _backward)

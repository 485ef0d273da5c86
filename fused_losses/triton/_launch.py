"""Host-side launch of the Triton kernels, shared by the losses' ops.

Two kernel shapes cover the (loss, grad, scale) losses; each has one kernel
whose forward and backward share a body, told apart by the BACKWARD constexpr:

- elementwise (focal_bce, asl, ghmc), one BLOCK-element tile per program:
  ``kernel(*pointers, out, grad, psum, pcnt, gout, numel, *sizes, grad_scale,
  REDUCE=, WRITE_GRAD=, BACKWARD=, **flags)``, epilogue ``_reduce.write_tile``;
- rows (softmax_focal, dsc), one class-index row per program:
  ``kernel(*pointers, rows, w, grad, gout, *sizes, grad_scale, WRITE_GRAD=,
  WRITE_W=, BACKWARD=, **flags)``.

The slots a mode never touches get a tensor of the call as a placeholder: a
pointer the kernel only reads (the input) where it reads, and the written
output where it writes, so that torch.compile's mutation analysis of the
kernel never mistakes an input for a mutated tensor.
"""
from __future__ import annotations

import torch
import triton
from torch.library import wrap_triton

from .._layout import as_rows, contiguous_target, fused_outputs, row_outputs, rows_cols
from ._reduce import launch_sum_partials, launch_sum_rows

BLOCK = 1024     # elements per program of the elementwise kernels
NUM_WARPS = 4


def broadcast_operands(input, target, *operands):
    """``(pointers, sizes, flags)`` common to the elementwise kernels.

    pointers: the input, the target, then each operand addressed as broadcast
    to [R, C] (the target stands in for an absent one, which its HAS_* flag
    keeps unread); sizes: C, 1/C, then the (row, column) strides of each
    operand; flags: SMALL_C, BLOCK and num_warps.
    """
    rows, cols = rows_cols(input.shape)
    t = contiguous_target(target)
    pointers, strides = [input.contiguous(), t], []
    for operand in operands:
        view, stride_r, stride_c = as_rows(operand, input.shape, rows, cols)
        pointers.append(t if view is None else view)
        strides += [stride_r, stride_c]
    sizes = (max(cols, 1), 1.0 / max(cols, 1), *strides)
    return tuple(pointers), sizes, dict(SMALL_C=cols < BLOCK, BLOCK=BLOCK, num_warps=NUM_WARPS)


def elementwise_forward(kernel, input, pointers, sizes, flags, reduction: str,
                        compute_grad: bool, divisor):
    """``(loss, grad, scale)`` of an elementwise kernel (protocol of ops/_protocols.py).

    ``divisor`` of a mean: ``"numel"`` (known here: folded into ``grad``, scale
    1), ``"kept"`` (the count of kept elements, known on the device: scale is
    its clamped inverse) or None (already inside the kernel's loss, as GHM-C's
    weights carry 1/tot: the partials are only summed).
    """
    numel = input.numel()
    reduce = reduction != "none"
    mean = reduction == "mean" and divisor is not None
    n_prog = triton.cdiv(numel, BLOCK)
    out, grad, scale = fused_outputs(input, reduction, compute_grad)
    psum = torch.empty((n_prog if reduce else 0,), dtype=torch.float32, device=input.device)
    pcnt = psum if divisor is None else torch.empty(
        (n_prog if reduce else 0,), dtype=torch.int32, device=input.device)
    grad_scale = 1.0 / numel if (mean and divisor == "numel" and numel) else 1.0
    if n_prog:
        wrap_triton(kernel)[(n_prog,)](
            *pointers, out, grad, psum, pcnt, pointers[0], numel, *sizes, grad_scale,
            REDUCE=reduce, WRITE_GRAD=reduce and compute_grad, BACKWARD=False, **flags)
    if reduce:
        launch_sum_partials(wrap_triton, psum, pcnt, out, scale, mean,
                            clamp_count=divisor == "kept")
    else:
        scale.fill_(1.0)
    return out, grad, scale


def elementwise_backward(kernel, grad_output, input, pointers, sizes, flags):
    """d(Σ grad_output·loss)/d(input) of ``reduction="none"``, in one pass."""
    numel = input.numel()
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    n_prog = triton.cdiv(numel, BLOCK)
    if n_prog:
        gin = grad_input
        wrap_triton(kernel)[(n_prog,)](
            *pointers, gin, gin, gin, gin, grad_output.contiguous(), numel, *sizes, 1.0,
            REDUCE=False, WRITE_GRAD=False, BACKWARD=True, **flags)
    return grad_input


def rows_forward(kernel, input, target, rows: int, pointers, sizes, flags, reduction: str,
                 compute_grad: bool, weighted: bool):
    """``(loss, grad, scale)`` of a rows kernel (protocol of ops/_protocols.py).

    ``weighted``: a mean divides by the sum of per-row weights the kernel
    writes, so ``scale`` is its inverse; else by the row count, folded into
    ``grad`` (scale 1).
    """
    reduce = reduction != "none"
    mean = reduction == "mean"
    device = input.device
    out, grad, scale = row_outputs(input, target, reduction, compute_grad)
    per_row = torch.empty((rows,), dtype=torch.float32, device=device) if reduce else out
    w = torch.empty((rows,), dtype=torch.float32, device=device) if (mean and weighted) else None
    grad_scale = 1.0 / rows if (mean and not weighted and rows) else 1.0
    if rows:
        wrap_triton(kernel)[(rows,)](
            *pointers, per_row, per_row if w is None else w, grad, pointers[0], *sizes,
            grad_scale, WRITE_GRAD=reduce and compute_grad, WRITE_W=w is not None,
            BACKWARD=False, **flags)
    if reduce:
        launch_sum_rows(wrap_triton, per_row, w, out, scale, mean)
    else:
        scale.fill_(1.0)
    return out, grad, scale


def rows_backward(kernel, grad_output, input, rows: int, pointers, sizes, flags):
    """d(Σ grad_output·loss)/d(input) of ``reduction="none"``, one row per program."""
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    if rows:
        gin = grad_input
        wrap_triton(kernel)[(rows,)](
            *pointers, gin, gin, gin, grad_output.contiguous(), *sizes, 1.0,
            WRITE_GRAD=True, WRITE_W=False, BACKWARD=True, **flags)
    return grad_input

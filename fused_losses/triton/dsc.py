"""Fused per-sample self-adjusting DSC in Triton: one program per row.

The same row machinery as the softmax focal loss (``_softmax.py``): pass one
gives p = softmax(x)[y] and log(1 - p) from the online max / sum-exp, pass two
writes the gradient. See ``fused_losses.reference.dsc`` for the formula. With
p~ = q^α·p (q = 1 - p) and L = 1 - (2p~ + s)/(p~ + 1 + s)::

    dL/dp~   = -(2 + s) / (p~ + 1 + s)²
    dL/dx_j  = K·[j = y] - K·(p_j / q)·[j ≠ y],   K = dL/dp~ · p · q^α · (q - α·p)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..spec.dsc import SPEC
from ._launch import rows_backward, rows_forward
from ._softmax import block_c, online_row_stats, store_row, target_logit, write_row_grad


@triton.jit
def _dsc_kernel(x_ptr, t_ptr, rows_ptr, w_ptr, g_ptr, gout_ptr, C, alpha, smooth, grad_scale,
                ALPHA_ZERO: tl.constexpr, WRITE_GRAD: tl.constexpr, WRITE_W: tl.constexpr,
                BACKWARD: tl.constexpr, BLOCK_C: tl.constexpr):
    """Forward: the row's loss (NaN for an out-of-range target) and, with
    WRITE_GRAD, its gradient times grad_scale. Rows weigh 1, so the launcher
    folds a mean's 1/N into grad_scale and never sets WRITE_W. BACKWARD: only
    the gradient times grad_output[row]."""
    alpha, smooth = tl.cast(alpha, tl.float32), tl.cast(smooth, tl.float32)
    row = tl.program_id(0).to(tl.int64)
    base = row * C
    y, x_y, in_range, _ = target_logit(x_ptr, t_ptr, row, base, 1, C)
    m, s, s_other, _, _ = online_row_stats(x_ptr, x_ptr, base, 1, C, y, False, False, BLOCK_C)
    log_s = tl.log(s)
    p = tl.exp(tl.minimum(x_y - m - log_s, 0.0))
    log_q = tl.log(s_other) - log_s
    q_a = 1.0
    if not ALPHA_ZERO:
        q_a = tl.exp(alpha * log_q)
    p_t = q_a * p
    den = p_t + 1.0 + smooth
    loss = 1.0 - (2.0 * p_t + smooth) / den
    if WRITE_GRAD:
        scale = tl.cast(grad_scale, tl.float32)
        if BACKWARD:
            scale = tl.load(gout_ptr + row).to(tl.float32)
        scale = tl.where(in_range, scale, float("nan"))
        k = -(2.0 + smooth) / (den * den) * p * q_a * (tl.exp(log_q) - alpha * p) * scale
        write_row_grad(x_ptr, g_ptr, x_ptr, base, 1, C, y, m, 1.0 / s, 1.0 / s_other,
                       0.0, -k, 0.0, k, y == y, False, BLOCK_C)
    if not BACKWARD:
        store_row(rows_ptr, w_ptr, row, tl.where(in_range, loss, float("nan")), 1.0, WRITE_W)


def _launch_args(input, target, options):
    """(rows, pointers, sizes, flags) shared by the forward and backward."""
    o = SPEC.decode(options)
    rows, cols = input.shape
    block, warps = block_c(cols)
    flags = dict(ALPHA_ZERO=o.alpha == 0.0, BLOCK_C=block, num_warps=warps)
    return rows, (input.contiguous(), target.contiguous()), (cols, o.alpha, o.smooth), flags


@triton_op("fused_losses::dsc_triton_fwd", mutates_args=())
def dsc_triton_fwd(input: torch.Tensor, target: torch.Tensor, options: list[float],
                   reduction: str, compute_grad: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, grad, scale); the mean's 1/N is folded into ``grad``, so scale is 1."""
    rows, pointers, sizes, flags = _launch_args(input, target, options)
    return rows_forward(_dsc_kernel, input, target, rows, pointers, sizes, flags, reduction,
                        compute_grad, weighted=False)


@triton_op("fused_losses::dsc_triton_bwd", mutates_args=())
def dsc_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                   options: list[float]) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``."""
    rows, pointers, sizes, flags = _launch_args(input, target, options)
    return rows_backward(_dsc_kernel, grad_output, input, rows, pointers, sizes, flags)

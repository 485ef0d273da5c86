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
from torch.library import triton_op, wrap_triton

from .._layout import backward_fake, row_outputs
from ._reduce import launch_sum_rows
from ._softmax import block_c, online_row_stats, target_logit, write_row_grad


@triton.jit
def _dsc_row(x_ptr, t_ptr, g_ptr, gout_ptr, row, C, alpha, smooth, grad_scale,
             ALPHA_ZERO: tl.constexpr, WRITE_GRAD: tl.constexpr, HAS_GOUT: tl.constexpr,
             BLOCK_C: tl.constexpr):
    alpha, smooth = tl.cast(alpha, tl.float32), tl.cast(smooth, tl.float32)
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
        if HAS_GOUT:
            scale = tl.load(gout_ptr + row).to(tl.float32)
        scale = tl.where(in_range, scale, float("nan"))
        k = -(2.0 + smooth) / (den * den) * p * q_a * (tl.exp(log_q) - alpha * p) * scale
        write_row_grad(x_ptr, g_ptr, x_ptr, base, 1, C, y, m, 1.0 / s, 1.0 / s_other,
                       0.0, -k, 0.0, k, y == y, False, BLOCK_C)
    return tl.where(in_range, loss, float("nan"))


@triton.jit
def _dsc_fwd_kernel(x_ptr, t_ptr, rows_ptr, g_ptr, C, alpha, smooth, grad_scale,
                    ALPHA_ZERO: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    loss = _dsc_row(x_ptr, t_ptr, g_ptr, g_ptr, row, C, alpha, smooth, grad_scale, ALPHA_ZERO,
                    WRITE_GRAD, False, BLOCK_C)
    tl.store(rows_ptr + row, loss.to(rows_ptr.dtype.element_ty))


@triton.jit
def _dsc_bwd_kernel(x_ptr, t_ptr, gout_ptr, g_ptr, C, alpha, smooth,
                    ALPHA_ZERO: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    _dsc_row(x_ptr, t_ptr, g_ptr, gout_ptr, row, C, alpha, smooth, 1.0, ALPHA_ZERO, True, True,
             BLOCK_C)


def _flags(input, alpha):
    block, warps = block_c(input.shape[-1])
    return dict(ALPHA_ZERO=alpha == 0.0, BLOCK_C=block, num_warps=warps)


@triton_op("fused_losses::dsc_triton_fwd", mutates_args=())
def dsc_triton_fwd(input: torch.Tensor, target: torch.Tensor, alpha: float, smooth: float,
                   reduction: str, compute_grad: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, grad, scale); the mean's 1/N is folded into ``grad``, so scale is 1."""
    rows, cols = input.shape
    reduce = reduction != "none"
    out, grad, scale = row_outputs(input, target, reduction, compute_grad)
    per_row = torch.empty((rows,), dtype=torch.float32, device=input.device) if reduce else out
    grad_scale = 1.0 / rows if (reduction == "mean" and rows) else 1.0
    if rows:
        wrap_triton(_dsc_fwd_kernel)[(rows,)](
            input.contiguous(), target.contiguous(), per_row, grad, cols, float(alpha),
            float(smooth), grad_scale, WRITE_GRAD=reduce and compute_grad,
            **_flags(input, alpha))
    if reduce:
        launch_sum_rows(wrap_triton, per_row, None, out, scale, reduction == "mean")
    else:
        scale.fill_(1.0)
    return out, grad, scale


@triton_op("fused_losses::dsc_triton_bwd", mutates_args=())
def dsc_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                   alpha: float, smooth: float) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``."""
    rows, cols = input.shape
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    if rows:
        wrap_triton(_dsc_bwd_kernel)[(rows,)](
            input.contiguous(), target.contiguous(), grad_output.contiguous(), grad_input,
            cols, float(alpha), float(smooth), **_flags(input, alpha))
    return grad_input


@dsc_triton_fwd.register_fake
def _(input, target, alpha, smooth, reduction, compute_grad):
    return row_outputs(input, target, reduction, compute_grad)


dsc_triton_bwd.register_fake(backward_fake)

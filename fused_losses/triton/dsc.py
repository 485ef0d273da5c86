"""Fused per-sample self-adjusting DSC in Triton, on the softmax focal loss's row
kernels' machinery (``_softmax.py``): several rows per program in registers for
C <= ``TILE_MAX_C``, one row per program with an online softmax above.

p = softmax(x)[y] and log(1 - p) come from the row max and sums; see
``fused_losses.reference.dsc`` for the formula. With p~ = q^α·p (q = 1 - p)
and L = 1 - (2p~ + s)/(p~ + 1 + s)::

    dL/dp~   = -(2 + s) / (p~ + 1 + s)²
    dL/dx_j  = K·[j = y] - K·(p_j / q)·[j ≠ y],   K = dL/dp~ · p · q^α · (q - α·p)

Rows weigh 1, so a mean's 1/N is known on the host and folded into the gradient.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..spec.dsc import SPEC
from ._launch import rows_backward, rows_forward
from ._math import LOG2E, fast_rcp
from ._softmax import (TILE_MAX_C, block_c, log_p_target, online_row_stats, row_logs,
                       target_logit, tile_grad, tile_rows, tile_shape, tile_softmax,
                       write_row_grad)


@triton.jit
def _dsc_terms(x_y, m, s, s_other, alpha, smooth, ALPHA_ZERO: tl.constexpr):
    """Per-row (scalars or [ROWS] vectors): ``(loss, K)``."""
    log_s, log_o = row_logs(s, s_other)
    p = tl.exp2(log_p_target(x_y, m, log_s, s_other) * LOG2E)
    q = s_other * fast_rcp(s)
    if ALPHA_ZERO:
        q_a = tl.full(p.shape, 1.0, tl.float32)
    else:
        q_a = tl.exp2((alpha * LOG2E) * (log_o - log_s))
    p_t = q_a * p
    den = p_t + 1.0 + smooth
    # L = (1 - p~)/den, and 1 - p~ = (1 - q^α) + q^α·q: no cancellation as p -> 1
    # (α = 0: exactly q), where 1 - (2p~ + s)/den would keep none of its digits.
    inv_den = fast_rcp(den)
    loss = ((1.0 - q_a) + q_a * q) * inv_den
    k = -(2.0 + smooth) * (inv_den * inv_den) * p * q_a * (q - alpha * p)
    return loss, k


@triton.jit
def _dsc_rows_kernel(x_ptr, t_ptr, out_ptr, g_ptr, gout_ptr, den_ptr, N, tiles, C, alpha, smooth,
                     grad_scale, ALPHA_ZERO: tl.constexpr, WRITE_GRAD: tl.constexpr,
                     REDUCE: tl.constexpr, BACKWARD: tl.constexpr, DEV_SCALE: tl.constexpr,
                     ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """``tiles`` row tiles per program. Forward: with REDUCE one fp32 partial, else
    each row's loss (NaN for an out-of-range target); with WRITE_GRAD the
    gradient times grad_scale. BACKWARD: only the gradient times grad_output[row]."""
    alpha, smooth = tl.cast(alpha, tl.float32), tl.cast(smooth, tl.float32)
    pid = tl.program_id(0).to(tl.int64)
    acc = tl.zeros([ROWS], tl.float32)
    for i in range(tiles):
        row, live, base, cols, mask, x, y, _, in_range, x_y = tile_rows(
            x_ptr, t_ptr, pid * tiles + i, N, C, 1, ROWS, BLOCK_C)
        is_y = cols[None, :] == y[:, None]
        m, e, s, s_other = tile_softmax(x, live, is_y)
        loss, k = _dsc_terms(x_y, m, s, s_other, alpha, smooth, ALPHA_ZERO)
        if WRITE_GRAD:
            scale = tl.zeros([ROWS], tl.float32) + tl.cast(grad_scale, tl.float32)
            if BACKWARD:
                scale = tl.load(gout_ptr + row, mask=live, other=0.0).to(tl.float32)
            k = k * tl.where(in_range, scale, float("nan"))
            g = tile_grad(e, is_y, fast_rcp(s), s_other, tl.zeros_like(k), -k, k)
            tl.store(g_ptr + base[:, None] + cols[None, :], g.to(g_ptr.dtype.element_ty),
                     mask=mask)
        if not BACKWARD:
            loss = tl.where(in_range, loss, float("nan"))
            if REDUCE:
                acc += tl.where(live, loss, 0.0)
            else:
                tl.store(out_ptr + row, loss.to(out_ptr.dtype.element_ty), mask=live)
    if REDUCE and not BACKWARD:
        tl.store(out_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _dsc_kernel(x_ptr, t_ptr, out_ptr, g_ptr, gout_ptr, den_ptr, N, tiles, C, alpha, smooth,
                grad_scale, ALPHA_ZERO: tl.constexpr, WRITE_GRAD: tl.constexpr,
                REDUCE: tl.constexpr, BACKWARD: tl.constexpr, DEV_SCALE: tl.constexpr,
                ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """One row per program (ROWS = tiles = 1), online softmax; outputs as in
    ``_dsc_rows_kernel`` (with REDUCE the row's loss is its partial)."""
    alpha, smooth = tl.cast(alpha, tl.float32), tl.cast(smooth, tl.float32)
    row = tl.program_id(0).to(tl.int64)
    base = row * C
    y, x_y, in_range, _ = target_logit(x_ptr, t_ptr, row, base, 1, C)
    m, s, s_other, _, _ = online_row_stats(x_ptr, x_ptr, base, 1, C, y, False, False, BLOCK_C)
    loss, k = _dsc_terms(x_y, m, s, s_other, alpha, smooth, ALPHA_ZERO)
    if WRITE_GRAD:
        scale = tl.cast(grad_scale, tl.float32)
        if BACKWARD:
            scale = tl.load(gout_ptr + row).to(tl.float32)
        k = k * tl.where(in_range, scale, float("nan"))
        write_row_grad(x_ptr, g_ptr, x_ptr, base, 1, C, y, m, 1.0 / s, 1.0 / s_other,
                       0.0, -k, 0.0, k, y == y, False, BLOCK_C)
    if not BACKWARD:
        loss = tl.where(in_range, loss, float("nan"))
        tl.store(out_ptr + row, loss.to(out_ptr.dtype.element_ty))


def _launch_args(input, target, options):
    """(kernel, rows, pointers, sizes, flags) shared by the forward and backward."""
    o = SPEC.decode(options)
    rows, cols = input.shape
    if cols <= TILE_MAX_C:
        n, block, warps = tile_shape(cols)
        kernel = _dsc_rows_kernel
    else:
        (block, warps), n = block_c(cols), 1
        kernel = _dsc_kernel
    flags = dict(ALPHA_ZERO=o.alpha == 0.0, ROWS=n, BLOCK_C=block, num_warps=warps)
    return (kernel, rows, (input.contiguous(), target.contiguous()), (cols, o.alpha, o.smooth),
            flags)


@triton_op("fused_losses::dsc_triton_fwd", mutates_args=())
def dsc_triton_fwd(input: torch.Tensor, target: torch.Tensor, options: list[float],
                   reduction: str, compute_grad: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, grad, scale); the mean's 1/N is folded into ``grad``, so scale is 1."""
    kernel, rows, pointers, sizes, flags = _launch_args(input, target, options)
    return rows_forward(kernel, input, target, rows, pointers, sizes, flags, reduction,
                        compute_grad)


@triton_op("fused_losses::dsc_triton_bwd", mutates_args=())
def dsc_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                   options: list[float]) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``."""
    kernel, rows, pointers, sizes, flags = _launch_args(input, target, options)
    return rows_backward(kernel, grad_output, input, rows, pointers, sizes, flags)

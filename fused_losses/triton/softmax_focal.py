"""Fused softmax focal loss in Triton.

Two kernels with one launch protocol (``_launch.rows_forward``):

- C <= ``TILE_MAX_C``: ``_softmax_focal_rows_kernel`` holds a [ROWS, BLOCK_C]
  tile of whole rows in registers: one read of the logits, one exp per
  element, the gradient written from the same registers;
- larger C: ``_softmax_focal_kernel``, one row per program, online softmax over
  BLOCK_C chunks (pass one: running max, sum-exp, sum-exp without the target
  and, with label smoothing, Σ α_c·x_c; pass two: the gradient).

Both write d(loss)/d(input) already divided by the mean's divisor (Σ α_y over
kept rows, computed from the targets by a pre-pass, ``_softmax.launch_row_weights``),
so ``scale`` is 1. See ``fused_losses.reference.softmax_focal`` for the formula.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .._layout import class_layout
from ..spec.softmax_focal import SPEC
from ._launch import rows_backward, rows_forward
from ._math import LOG2E, fast_rcp
from ._softmax import (TILE_MAX_C, block_c, class_row_base, launch_row_weights,
                       log_p_target, online_row_stats, row_logs, target_logit, tile_grad,
                       tile_rows, tile_shape, tile_softmax, write_row_grad)


@triton.jit
def _focal_terms(x_y, m, s, s_other, ax, a_sum, w_y, gamma, smoothing, n_cls,
                 SMOOTH: tl.constexpr, GAMMA_ZERO: tl.constexpr):
    """Per-row (scalars or [ROWS] vectors): ``(loss, c_p, c_r, c_a, c_y)`` of the
    gradient form in ``_softmax.py``."""
    log_s, log_o = row_logs(s, s_other)
    lse = m + log_s
    log_py = log_p_target(x_y, m, log_s, s_other)
    ce = -w_y * log_py
    if SMOOTH:
        ce = (1.0 - smoothing) * ce + smoothing / n_cls * (a_sum * lse - ax)
    if GAMMA_ZERO:
        f = tl.full(ce.shape, 1.0, tl.float32)
        big_g = tl.zeros_like(ce)
    else:
        f = tl.exp2((gamma * LOG2E) * (log_o - log_s))
        big_g = gamma * f * tl.exp2(log_py * LOG2E) * ce
    c_p = f * (1.0 - smoothing) * w_y
    # g_y = c_p·(p_y - 1) - G (+ the smoothing's p_y term): 1 - p_y = s_other/s.
    c_y = -(c_p * (s_other * fast_rcp(s)) + big_g)
    c_a = tl.zeros_like(ce)
    if SMOOTH:
        c_smooth = f * smoothing * a_sum / n_cls
        c_p += c_smooth
        c_y += c_smooth * tl.exp2(log_py * LOG2E)
        c_a = f * smoothing / n_cls
    return f * ce, c_p, big_g, c_a, c_y


@triton.jit
def _softmax_focal_rows_kernel(x_ptr, t_ptr, a_ptr, out_ptr, g_ptr, gout_ptr, den_ptr, N, tiles,
                               C, D, gamma, smoothing, ignore, grad_scale,
                               HAS_A: tl.constexpr, HAS_IGNORE: tl.constexpr,
                               SMOOTH: tl.constexpr, GAMMA_ZERO: tl.constexpr,
                               WRITE_GRAD: tl.constexpr, REDUCE: tl.constexpr,
                               BACKWARD: tl.constexpr, DEV_SCALE: tl.constexpr,
                               ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """``tiles`` consecutive row tiles per program. Forward: with REDUCE one fp32
    partial (Σ row losses, 0 for ignored rows, NaN for an out-of-range target),
    else each row's loss; with WRITE_GRAD the gradient times grad_scale (times
    den[1] with DEV_SCALE). BACKWARD: only the gradient times grad_output[row]."""
    gamma, smoothing = tl.cast(gamma, tl.float32), tl.cast(smoothing, tl.float32)
    pid = tl.program_id(0).to(tl.int64)
    n_cls = tl.cast(C, tl.float32)
    scale0 = tl.cast(grad_scale, tl.float32)
    if DEV_SCALE:
        scale0 = scale0 * tl.load(den_ptr + 1)
    acc = tl.zeros([ROWS], tl.float32)
    a_sum = tl.zeros([ROWS], tl.float32) + n_cls
    if HAS_A:
        cols = tl.arange(0, BLOCK_C)
        a_row = tl.load(a_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
        a_sum = tl.zeros([ROWS], tl.float32) + tl.sum(a_row, axis=0)
    for i in range(tiles):
        row, live, base, cols, mask, x, y, y_raw, in_range, x_y = tile_rows(
            x_ptr, t_ptr, pid * tiles + i, N, C, D, ROWS, BLOCK_C)
        keep = live
        if HAS_IGNORE:
            keep = keep & (y_raw != ignore)
        is_y = cols[None, :] == y[:, None]
        m, e, s, s_other = tile_softmax(x, live, is_y)
        ax = tl.zeros([ROWS], tl.float32)
        if SMOOTH:
            x0 = tl.where(mask, x, 0.0)  # padding is -inf: keep it out of the dot
            if HAS_A:
                ax = tl.sum(a_row[None, :] * x0, axis=1)
            else:
                ax = tl.sum(x0, axis=1)
        w_y = tl.full([ROWS], 1.0, tl.float32)
        if HAS_A:
            w_y = tl.load(a_ptr + y, mask=live, other=0.0).to(tl.float32)
        loss, c_p, c_r, c_a, c_y = _focal_terms(x_y, m, s, s_other, ax, a_sum, w_y, gamma,
                                                smoothing, n_cls, SMOOTH, GAMMA_ZERO)
        if WRITE_GRAD:
            scale = tl.zeros([ROWS], tl.float32) + scale0
            if BACKWARD:
                scale = tl.load(gout_ptr + row, mask=live, other=0.0).to(tl.float32)
            scale = tl.where(in_range, scale, float("nan"))
            g = tile_grad(e, is_y, fast_rcp(s), s_other, c_p * scale, c_r * scale, c_y * scale)
            if SMOOTH:
                if HAS_A:
                    g -= (c_a * scale)[:, None] * a_row[None, :]
                else:
                    g -= (c_a * scale)[:, None]
            g = tl.where(keep[:, None], g, 0.0)
            tl.store(g_ptr + base[:, None] + (cols * D)[None, :], g.to(g_ptr.dtype.element_ty),
                     mask=mask)
        if not BACKWARD:
            loss = tl.where(keep, tl.where(in_range, loss, float("nan")), 0.0)
            if REDUCE:
                acc += tl.where(live, loss, 0.0)
            else:
                tl.store(out_ptr + row, loss.to(out_ptr.dtype.element_ty), mask=live)
    if REDUCE and not BACKWARD:
        tl.store(out_ptr + pid, tl.sum(acc, axis=0))


@triton.jit
def _softmax_focal_kernel(x_ptr, t_ptr, a_ptr, out_ptr, g_ptr, gout_ptr, den_ptr, N, tiles,
                          C, D, gamma, smoothing, ignore, grad_scale, HAS_A: tl.constexpr,
                          HAS_IGNORE: tl.constexpr, SMOOTH: tl.constexpr,
                          GAMMA_ZERO: tl.constexpr, WRITE_GRAD: tl.constexpr,
                          REDUCE: tl.constexpr, BACKWARD: tl.constexpr,
                          DEV_SCALE: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """One row per program (ROWS = tiles = 1), online softmax; outputs as in
    ``_softmax_focal_rows_kernel`` (with REDUCE the row's loss is its partial)."""
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    gamma, smoothing = tl.cast(gamma, tl.float32), tl.cast(smoothing, tl.float32)
    row = tl.program_id(0).to(tl.int64)
    base = class_row_base(row, C, D)
    y, x_y, in_range, y_raw = target_logit(x_ptr, t_ptr, row, base, D, C)
    keep = y_raw == y_raw  # a True scalar
    if HAS_IGNORE:
        keep = y_raw != ignore
    m, s, s_other, ax, a_sum = online_row_stats(x_ptr, a_ptr, base, D, C, y, HAS_A, SMOOTH,
                                                BLOCK_C)
    w_y = tl.full([], 1.0, tl.float32)
    if HAS_A:
        w_y = tl.load(a_ptr + y).to(tl.float32)
    loss, c_p, c_r, c_a, c_y = _focal_terms(x_y, m, s, s_other, ax, a_sum, w_y, gamma,
                                            smoothing, tl.cast(C, tl.float32), SMOOTH,
                                            GAMMA_ZERO)
    if WRITE_GRAD:
        scale = tl.cast(grad_scale, tl.float32)
        if DEV_SCALE:
            scale = scale * tl.load(den_ptr + 1)
        if BACKWARD:
            scale = tl.load(gout_ptr + row).to(tl.float32)
        scale = tl.where(in_range, scale, float("nan"))
        write_row_grad(x_ptr, g_ptr, a_ptr, base, D, C, y, m, 1.0 / s, 1.0 / s_other,
                       c_p * scale, c_r * scale, c_a * scale, c_y * scale, keep,
                       HAS_A, BLOCK_C)
    if not BACKWARD:
        loss = tl.where(in_range, loss, float("nan"))
        tl.store(out_ptr + row, tl.where(keep, loss, 0.0).to(out_ptr.dtype.element_ty))


def _launch_args(input, target, alpha, options):
    """(kernel, rows, pointers, sizes, flags) shared by the forward and backward."""
    o = SPEC.decode(options)
    rows, cols, spatial = class_layout(input.shape)
    t = target.contiguous()
    a = t if alpha is None else alpha.contiguous()  # placeholder: never read without HAS_A
    ignore = o.ignore_index
    sizes = (cols, spatial, o.gamma, o.label_smoothing, int(ignore if ignore is not None else 0))
    flags = dict(HAS_A=alpha is not None, HAS_IGNORE=ignore is not None,
                 SMOOTH=o.label_smoothing != 0.0, GAMMA_ZERO=o.gamma == 0.0)
    if cols <= TILE_MAX_C:
        n, block, warps = tile_shape(cols)
        kernel = _softmax_focal_rows_kernel
    else:
        (block, warps), n = block_c(cols), 1
        kernel = _softmax_focal_kernel
    flags.update(ROWS=n, BLOCK_C=block, num_warps=warps)
    return kernel, rows, (input.contiguous(), t, a), sizes, flags


@triton_op("fused_losses::softmax_focal_triton_fwd", mutates_args=())
def softmax_focal_triton_fwd(input: torch.Tensor, target: torch.Tensor,
                             alpha: Optional[torch.Tensor], options: list[float],
                             reduction: str, compute_grad: bool
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, grad, scale): the protocol of ``ops/_protocols.py``.

    ``grad`` (``mean``/``sum`` with ``compute_grad``) already holds the mean's
    1/Σ α_y (1/rows when nothing can change the count), so ``scale`` is 1.
    """
    kernel, rows, pointers, sizes, flags = _launch_args(input, target, alpha, options)
    den = None
    ignore = SPEC.decode(options).ignore_index
    if reduction == "mean" and (alpha is not None or ignore is not None):
        den = torch.empty((2,), dtype=torch.float32, device=input.device)
        launch_row_weights(wrap_triton, pointers[1], alpha, sizes[0], ignore, den)
    return rows_forward(kernel, input, target, rows, pointers, sizes, flags, reduction,
                        compute_grad, den)


@triton_op("fused_losses::softmax_focal_triton_bwd", mutates_args=())
def softmax_focal_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor,
                             target: torch.Tensor, alpha: Optional[torch.Tensor],
                             options: list[float]) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``."""
    kernel, rows, pointers, sizes, flags = _launch_args(input, target, alpha, options)
    return rows_backward(kernel, grad_output, input, rows, pointers, sizes, flags)

"""Fused multilabel soft dice in Triton: kernels and their registered ops.

The logits are viewed as [R, C] columns: R = N rows for ``[N, C]``, or
R = N·S (n, s) pairs for ``[N, C, S...]`` with S the product of the spatial
dims. Forward, a column reduction in three deterministic stages:

1. ``_dice_fwd_kernel``: a (row-range, column-block) grid; each program sums
   p̃·t, p̃ᵏ and tᵏ over its rows into one fp32 partial per column (no atomics);
2. ``_dice_finish_kernel``: per column, the partials in row-range order give
   the sums ``[3, C]`` and dice_c;
3. ``_dice_total_kernel`` (mean/sum): Σ_c dice_c in a fixed order.

Backward, ``_dice_bwd_kernel`` writes d loss/dx elementwise from x, t and the
saved sums. See ``fused_losses.reference.dice`` for the formula.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .._layout import contiguous_target
from ..spec.dice import SPEC
from ._math import adjusted_sigmoid

TILE = 4096          # elements per [BLOCK_R, BLOCK_C] tile
MAX_ROW_PROGS = 256  # row ranges per column block: bounds the partials' size
FINISH_BLOCK = 128
NUM_WARPS = 4


@triton.jit
def _dice_tile(x_ptr, t_ptr, rows, cols, R, C, S, alpha,
               ALPHA_ZERO: tl.constexpr, SPATIAL: tl.constexpr):
    """(p̃, d p̃/dx, t, offs, mask) for rows [BLOCK_R, 1] × cols [1, BLOCK_C]; p̃ and t
    are 0 outside the mask."""
    mask = (rows < R) & (cols < C)
    if SPATIAL:  # row r = (n, s): element n·C·S + c·S + s
        n = rows // S
        offs = n * (C * S) + cols * S + (rows - n * S)
    else:
        offs = rows * C + cols
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + offs, mask=mask, other=0).to(tl.float32)
    pt, dpt = adjusted_sigmoid(x, alpha, ALPHA_ZERO)
    return tl.where(mask, pt, 0.0), dpt, t, offs, mask


@triton.jit
def _dice_fwd_kernel(x_ptr, t_ptr, part_ptr, R, C, S, rows_per_prog, n_row_progs, alpha,
                     ALPHA_ZERO: tl.constexpr, SQUARE: tl.constexpr, SPATIAL: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    alpha = tl.cast(alpha, tl.float32)
    pid_r = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    acc_pt = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    acc_p = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    acc_t = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    r0 = pid_r * rows_per_prog
    for i in range(0, rows_per_prog, BLOCK_R):
        rows = r0 + i + tl.arange(0, BLOCK_R)[:, None]
        pt, _, t, _, _ = _dice_tile(x_ptr, t_ptr, rows, cols, R, C, S, alpha, ALPHA_ZERO, SPATIAL)
        acc_pt += pt * t
        if SQUARE:
            acc_p += pt * pt
            acc_t += t * t
        else:
            acc_p += pt
            acc_t += t
    c = tl.reshape(cols, [BLOCK_C])
    cmask = c < C
    base = part_ptr + pid_r * C + c
    stride = n_row_progs * C
    tl.store(base, tl.sum(acc_pt, axis=0), mask=cmask)
    tl.store(base + stride, tl.sum(acc_p, axis=0), mask=cmask)
    tl.store(base + 2 * stride, tl.sum(acc_t, axis=0), mask=cmask)


@triton.jit
def _dice_finish_kernel(part_ptr, sums_ptr, dice_ptr, n_row_progs, C, smooth,
                        BLOCK: tl.constexpr):
    """sums[q, c] = Σ_r part[q, r, c] in row order; dice[c] = 1 - (2S_pt+s)/(S_p+S_t+s)."""
    smooth = tl.cast(smooth, tl.float32)
    c = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    cmask = c < C
    stride = n_row_progs * C
    s_pt = tl.zeros([BLOCK], dtype=tl.float32)
    s_p = tl.zeros([BLOCK], dtype=tl.float32)
    s_t = tl.zeros([BLOCK], dtype=tl.float32)
    for r in range(0, n_row_progs):
        ptr = part_ptr + r * C + c
        s_pt += tl.load(ptr, mask=cmask, other=0.0)
        s_p += tl.load(ptr + stride, mask=cmask, other=0.0)
        s_t += tl.load(ptr + 2 * stride, mask=cmask, other=0.0)
    tl.store(sums_ptr + c, s_pt, mask=cmask)
    tl.store(sums_ptr + C + c, s_p, mask=cmask)
    tl.store(sums_ptr + 2 * C + c, s_t, mask=cmask)
    # IEEE division (Triton's `/` is approximate) to match torch's fp32 maths.
    dice = 1.0 - tl.math.div_rn(2.0 * s_pt + smooth, s_p + s_t + smooth)
    tl.store(dice_ptr + c, dice.to(dice_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _dice_total_kernel(dice_ptr, out_ptr, C, scale, BLOCK: tl.constexpr):
    """out = scale · Σ_c dice[c] (scale = 1/C for a mean), in a fixed order."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, C, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        acc += tl.load(dice_ptr + offs, mask=offs < C, other=0.0)
    total = tl.sum(acc, axis=0) * tl.cast(scale, tl.float32)
    tl.store(out_ptr, total.to(out_ptr.dtype.element_ty))


@triton.jit
def _dice_bwd_kernel(x_ptr, t_ptr, sums_ptr, gout_ptr, gin_ptr, R, C, S, gout_stride, gout_scale,
                     smooth, alpha, ALPHA_ZERO: tl.constexpr, SQUARE: tl.constexpr,
                     SPATIAL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """d loss/dx = g_c·(-2t/den_c + k·num_c·p̃^(k-1)/den_c²)·d p̃/dx."""
    alpha, smooth = tl.cast(alpha, tl.float32), tl.cast(smooth, tl.float32)
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    cmask = cols < C
    s_pt = tl.load(sums_ptr + cols, mask=cmask, other=0.0)
    s_p = tl.load(sums_ptr + C + cols, mask=cmask, other=0.0)
    s_t = tl.load(sums_ptr + 2 * C + cols, mask=cmask, other=0.0)
    g = tl.load(gout_ptr + cols * gout_stride, mask=cmask, other=0.0).to(tl.float32)
    g = g * tl.cast(gout_scale, tl.float32)
    num = 2.0 * s_pt + smooth
    den = s_p + s_t + smooth
    coef_t = -2.0 * g / den           # per column, shared by every row of the tile
    coef_p = g * num / (den * den)
    pt, dpt, t, offs, mask = _dice_tile(x_ptr, t_ptr, rows, cols, R, C, S, alpha,
                                        ALPHA_ZERO, SPATIAL)
    if SQUARE:
        grad = (coef_t * t + 2.0 * coef_p * pt) * dpt
    else:
        grad = (coef_t * t + coef_p) * dpt
    tl.store(gin_ptr + offs, grad.to(gin_ptr.dtype.element_ty), mask=mask)


def layout(shape):
    """(R, C, S, spatial, BLOCK_R, BLOCK_C) of a ``[N, C, *]`` logits shape."""
    n, c = shape[0], shape[1]
    s = 1
    for size in shape[2:]:
        s *= size
    spatial = s != 1
    # Spatial dims are contiguous within a class: tall, narrow tiles.
    block_c = min(4 if spatial else 32, triton.next_power_of_2(max(c, 1)))
    return n * s, c, s, spatial, TILE // block_c, block_c


def _row_ranges(rows: int, block_r: int):
    """(rows per program, programs): at most MAX_ROW_PROGS ranges, whole tiles each.
    It depends on the shape alone, so the summation order (and the bits) do too."""
    tiles = triton.cdiv(rows, block_r)
    n_progs = min(tiles, MAX_ROW_PROGS)
    if n_progs == 0:
        return block_r, 0
    per_prog = triton.cdiv(tiles, n_progs) * block_r
    return per_prog, triton.cdiv(rows, per_prog)


@triton_op("fused_losses::dice_triton_fwd", mutates_args=())
def dice_triton_fwd(input: torch.Tensor, target: torch.Tensor, options: list[float],
                    reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (loss, sums): loss ``[]`` (mean/sum) or ``[C]`` (none) in input's
    dtype; sums fp32 ``[3, C]`` = (S_pt, S_p, S_t), what the backward needs."""
    o = SPEC.decode(options)
    rows, cols, s, spatial, block_r, block_c = layout(input.shape)
    x, t = input.contiguous(), contiguous_target(target)
    device = input.device
    per_prog, n_row_progs = _row_ranges(rows, block_r)
    n_col_blocks = triton.cdiv(cols, block_c)
    part = torch.empty((3, n_row_progs, cols), dtype=torch.float32, device=device)
    sums = torch.empty((3, cols), dtype=torch.float32, device=device)
    reduce = reduction != "none"
    out = torch.empty(() if reduce else (cols,), dtype=input.dtype, device=device)
    dice = torch.empty((cols,), dtype=torch.float32, device=device) if reduce else out
    if n_row_progs and n_col_blocks:
        wrap_triton(_dice_fwd_kernel)[(n_row_progs, n_col_blocks)](
            x, t, part, rows, cols, s, per_prog, n_row_progs, o.alpha,
            ALPHA_ZERO=o.alpha == 0.0, SQUARE=o.square_denominator, SPATIAL=spatial,
            BLOCK_R=block_r, BLOCK_C=block_c, num_warps=NUM_WARPS)
    if cols:
        wrap_triton(_dice_finish_kernel)[(triton.cdiv(cols, FINISH_BLOCK),)](
            part, sums, dice, n_row_progs, cols, o.smooth, BLOCK=FINISH_BLOCK)
    if reduce:
        # A mean over zero classes is 0/0 = NaN, as torch's mean of nothing.
        scale = (1.0 / cols if cols else float("nan")) if reduction == "mean" else 1.0
        wrap_triton(_dice_total_kernel)[(1,)](dice, out, cols, scale, BLOCK=FINISH_BLOCK)
    return out, sums


@triton_op("fused_losses::dice_triton_bwd", mutates_args=())
def dice_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                    sums: torch.Tensor, options: list[float], reduction: str) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input); grad_output is ``[]`` (mean/sum) or ``[C]``."""
    o = SPEC.decode(options)
    rows, cols, s, spatial, block_r, block_c = layout(input.shape)
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    g = grad_output.contiguous()
    grid = (triton.cdiv(rows, block_r), triton.cdiv(cols, block_c))
    if grid[0] and grid[1]:
        wrap_triton(_dice_bwd_kernel)[grid](
            input.contiguous(), contiguous_target(target), sums.contiguous(), g, grad_input,
            rows, cols, s, 1 if g.dim() else 0,
            1.0 / cols if (reduction == "mean" and cols) else 1.0, o.smooth, o.alpha,
            ALPHA_ZERO=o.alpha == 0.0, SQUARE=o.square_denominator, SPATIAL=spatial,
            BLOCK_R=block_r, BLOCK_C=block_c, num_warps=NUM_WARPS)
    return grad_input

"""Fused multilabel soft dice in Triton: kernels and their registered ops.

The logits x and targets t ``[N, C, *]`` are viewed as [R, C] columns: R = N
rows for ``[N, C]``, or R = N·S (n, s) pairs for ``[N, C, S...]`` with S the
product of the spatial dims. Per class c, over its R rows, with p̃ = (1-p)^α·p,
p = σ(x) and k = 2 (``square_denominator``) or 1::

    S_pt = Σ p̃·t,  S_p = Σ p̃ᵏ,  S_t = Σ tᵏ,  dice_c = 1 - (2·S_pt + s)/(S_p + S_t + s)

Forward, a column reduction in three deterministic stages:

1. ``_dice_fwd_kernel``: a (row-range, column-block) grid (both fixed by the
   shape, ``_row_ranges``); each program walks its rows in [BLOCK_R, BLOCK_C]
   tiles, accumulates in registers and writes one fp32 partial per column and
   sum (no atomics);
2. ``_dice_finish_kernel``: per column, the partials in row-range order give
   the sums ``[3, C]`` and dice_c;
3. ``_dice_total_kernel`` (mean/sum): Σ_c dice_c in a fixed order.

Backward, ``_dice_bwd_kernel`` on the same grid: per column the coefficients
once per program, then d loss/dx elementwise from x, t and the saved sums.
See ``fused_losses.reference.dice`` for the formula.

Specialisation: α = 0 takes p̃ = σ(x) (one ex2, one rcp); hard targets
(bool/int) select instead of multiplying and count Σ t in int32 (exact; t² =
t); [N, C] inputs address a tile by one int64 row base plus loop-invariant
int32 offsets. Padding loads x = -inf, where p̃ = d p̃/dx = 0.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .._layout import contiguous_target
from ..spec.dice import SPEC
from ._math import adjusted_sigmoid, sigmoid_parts

TILE = 1024          # elements per [BLOCK_R, BLOCK_C] tile (8 per thread)
MAX_ROW_PROGS = 256  # row ranges per column block: bounds the partials' size
FINISH_BLOCK = 128
NUM_WARPS = 4


@triton.jit
def _adjusted(x, alpha, ALPHA_ZERO: tl.constexpr):
    """(p̃, d p̃/dx); α = 0: (σ(x), σ(x)·σ(-x)) from one ex2 and one rcp."""
    if ALPHA_ZERO:
        _, s_p, s_n = sigmoid_parts(x)
        return s_p, s_p * s_n
    return adjusted_sigmoid(x, alpha, False)


@triton.jit
def _dice_load(x_ptr, t_ptr, r0, i, r_loc, cols, local, n_rows, cmask, C, S,
               SPATIAL: tl.constexpr):
    """(x, t, offs, mask) of the tile of rows r0 + i + r_loc [BLOCK_R, 1] × cols
    [1, BLOCK_C]; x = -inf and t = 0 outside the mask. ``offs`` is relative to
    the returned pointers' base."""
    mask = (r_loc < n_rows - i) & cmask
    if SPATIAL:  # row r = (n, s): element n·C·S + c·S + s
        rows = r0 + i + r_loc
        n = rows // S
        offs = n * (C * S) + cols * S + (rows - n * S)
        xp, tp = x_ptr + offs, t_ptr + offs
    else:
        base = (r0 + i) * C
        offs = base + local
        xp, tp = x_ptr + base + local, t_ptr + base + local
    x = tl.load(xp, mask=mask, other=float("-inf")).to(tl.float32)
    t = tl.load(tp, mask=mask, other=0)
    return x, t, offs, mask


@triton.jit
def _dice_fwd_kernel(x_ptr, t_ptr, part_ptr, R, C, S, rows_per_prog, n_row_progs, alpha,
                     ALPHA_ZERO: tl.constexpr, SQUARE: tl.constexpr, SPATIAL: tl.constexpr,
                     HARD: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """part[q, pid_r, c] = the program's rows' Σ p̃·t, Σ p̃ᵏ, Σ tᵏ (q = 0, 1, 2)."""
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    alpha = tl.cast(alpha, tl.float32)
    pid_r = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    cmask = cols < C
    r_loc = tl.arange(0, BLOCK_R)[:, None]
    local = r_loc * C + cols  # int32: BLOCK_R·C < 2^31
    r0 = pid_r * rows_per_prog
    n_rows = tl.minimum(rows_per_prog, R - r0)
    acc_pt = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    acc_p = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    acc_t = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    cnt_t = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.int32)
    for i in range(0, n_rows, BLOCK_R):
        x, t, _, _ = _dice_load(x_ptr, t_ptr, r0, i, r_loc, cols, local, n_rows, cmask, C, S,
                                SPATIAL)
        pt, _ = _adjusted(x, alpha, ALPHA_ZERO)
        if HARD:
            one = t != 0
            acc_pt += tl.where(one, pt, 0.0)
            cnt_t += one.to(tl.int32)
        else:
            t = t.to(tl.float32)
            acc_pt += pt * t
            acc_t += t * t if SQUARE else t
        acc_p += pt * pt if SQUARE else pt
    c = tl.reshape(cols, [BLOCK_C])
    cmask = c < C
    base = part_ptr + pid_r * C + c
    stride = n_row_progs * C
    s_t = tl.sum(cnt_t, axis=0).to(tl.float32) if HARD else tl.sum(acc_t, axis=0)
    tl.store(base, tl.sum(acc_pt, axis=0), mask=cmask)
    tl.store(base + stride, tl.sum(acc_p, axis=0), mask=cmask)
    tl.store(base + 2 * stride, s_t, mask=cmask)


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
def _dice_bwd_kernel(x_ptr, t_ptr, sums_ptr, gout_ptr, gin_ptr, R, C, S, rows_per_prog,
                     gout_stride, gout_scale, smooth, alpha, ALPHA_ZERO: tl.constexpr,
                     SQUARE: tl.constexpr, SPATIAL: tl.constexpr, HARD: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """d loss/dx = g_c·(-2t/den_c + k·num_c·p̃^(k-1)/den_c²)·d p̃/dx over the
    program's rows; num_c = 2·S_pt + s, den_c = S_p + S_t + s, g_c the upstream
    gradient (÷ C for a mean)."""
    alpha, smooth = tl.cast(alpha, tl.float32), tl.cast(smooth, tl.float32)
    pid_r = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
    cmask = cols < C
    r_loc = tl.arange(0, BLOCK_R)[:, None]
    local = r_loc * C + cols
    r0 = pid_r * rows_per_prog
    n_rows = tl.minimum(rows_per_prog, R - r0)
    s_pt = tl.load(sums_ptr + cols, mask=cmask, other=0.0)
    s_p = tl.load(sums_ptr + C + cols, mask=cmask, other=0.0)
    s_t = tl.load(sums_ptr + 2 * C + cols, mask=cmask, other=0.0)
    g = tl.load(gout_ptr + cols * gout_stride, mask=cmask, other=0.0).to(tl.float32)
    g = g * tl.cast(gout_scale, tl.float32)
    num = 2.0 * s_pt + smooth
    den = s_p + s_t + smooth
    coef_t = -2.0 * g / den           # per column, shared by every row of the program
    coef_p = g * num / (den * den)
    if SQUARE:
        coef_p = 2.0 * coef_p
    for i in range(0, n_rows, BLOCK_R):
        x, t, offs, mask = _dice_load(x_ptr, t_ptr, r0, i, r_loc, cols, local, n_rows, cmask,
                                      C, S, SPATIAL)
        pt, dpt = _adjusted(x, alpha, ALPHA_ZERO)
        cp = coef_p * pt if SQUARE else coef_p
        if HARD:
            grad = (tl.where(t != 0, coef_t, 0.0) + cp) * dpt
        else:
            grad = (coef_t * t.to(tl.float32) + cp) * dpt
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


def sums_plan(input, target, options):
    """``(part, grid, args, constexprs)`` of the column-sum pass (shared with
    ``bench/_sass_triton.py``); part fp32 [3, row ranges, C]."""
    o = SPEC.decode(options)
    rows, cols, s, spatial, block_r, block_c = layout(input.shape)
    per_prog, n_row_progs = _row_ranges(rows, block_r)
    part = torch.empty((3, n_row_progs, cols), dtype=torch.float32, device=input.device)
    args = (input.contiguous(), contiguous_target(target), part, rows, cols, s, per_prog,
            n_row_progs, o.alpha)
    constexprs = dict(ALPHA_ZERO=o.alpha == 0.0, SQUARE=o.square_denominator, SPATIAL=spatial,
                      HARD=not target.is_floating_point(), BLOCK_R=block_r, BLOCK_C=block_c,
                      num_warps=NUM_WARPS)
    return part, (n_row_progs, triton.cdiv(cols, block_c)), args, constexprs


def grad_plan(grad_output, input, target, sums, options, reduction: str):
    """``(grad_input, grid, args, constexprs)`` of the gradient pass, on the
    column-sum pass's grid (shared with ``bench/_sass_triton.py``)."""
    o = SPEC.decode(options)
    rows, cols, s, spatial, block_r, block_c = layout(input.shape)
    per_prog, n_row_progs = _row_ranges(rows, block_r)
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    g = grad_output.contiguous()
    args = (input.contiguous(), contiguous_target(target), sums.contiguous(), g, grad_input,
            rows, cols, s, per_prog, 1 if g.dim() else 0,
            1.0 / cols if (reduction == "mean" and cols) else 1.0, o.smooth, o.alpha)
    constexprs = dict(ALPHA_ZERO=o.alpha == 0.0, SQUARE=o.square_denominator, SPATIAL=spatial,
                      HARD=not target.is_floating_point(), BLOCK_R=block_r, BLOCK_C=block_c,
                      num_warps=NUM_WARPS)
    return grad_input, (n_row_progs, triton.cdiv(cols, block_c)), args, constexprs


@triton_op("fused_losses::dice_triton_fwd", mutates_args=())
def dice_triton_fwd(input: torch.Tensor, target: torch.Tensor, options: list[float],
                    reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (loss, sums): loss ``[]`` (mean/sum) or ``[C]`` (none) in input's
    dtype; sums fp32 ``[3, C]`` = (S_pt, S_p, S_t), what the backward needs."""
    o = SPEC.decode(options)
    cols = input.shape[1]
    device = input.device
    part, grid, args, constexprs = sums_plan(input, target, options)
    sums = torch.empty((3, cols), dtype=torch.float32, device=device)
    reduce = reduction != "none"
    out = torch.empty(() if reduce else (cols,), dtype=input.dtype, device=device)
    dice = torch.empty((cols,), dtype=torch.float32, device=device) if reduce else out
    if grid[0] and grid[1]:
        wrap_triton(_dice_fwd_kernel)[grid](*args, **constexprs)
    if cols:
        wrap_triton(_dice_finish_kernel)[(triton.cdiv(cols, FINISH_BLOCK),)](
            part, sums, dice, grid[0], cols, o.smooth, BLOCK=FINISH_BLOCK)
    if reduce:
        # A mean over zero classes is 0/0 = NaN, as torch's mean of nothing.
        scale = (1.0 / cols if cols else float("nan")) if reduction == "mean" else 1.0
        wrap_triton(_dice_total_kernel)[(1,)](dice, out, cols, scale, BLOCK=FINISH_BLOCK)
    return out, sums


@triton_op("fused_losses::dice_triton_bwd", mutates_args=())
def dice_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                    sums: torch.Tensor, options: list[float], reduction: str) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input); grad_output is ``[]`` (mean/sum) or ``[C]``."""
    grad_input, grid, args, constexprs = grad_plan(grad_output, input, target, sums, options,
                                                   reduction)
    if grid[0] and grid[1]:
        wrap_triton(_dice_bwd_kernel)[grid](*args, **constexprs)
    return grad_input

"""Fused sigmoid focal BCE in Triton: the kernel and its registered ops.

Forward (``mean``/``sum``): one pass reads logits and targets once, writes one
loss partial per program and, when a gradient is needed, d(loss)/d(input)
already scaled by the reduction; the backward only multiplies by
``grad_output``. Forward (``none``) writes the loss; its backward recomputes
in one pass, through the same kernel (``_launch.py``). See
``fused_losses.reference.focal_bce`` for the formula.

Compile-time specialisation: hard targets (bool/int, or float tiles that are
all 0/1) take a select path on z = ±x with p_t = σ(z), no logs beyond one
log1p; a small integer γ (G >= 0) raises 1-p_t = σ(-z) by multiplication;
each operand (alpha, pos_weight, weight) is absent, scalar, per-class (by
column) or general.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..spec.focal_bce import SPEC
from ._launch import broadcast_operands, elementwise_backward, elementwise_forward, gamma_int
from ._math import (all_hard, load_tile, log1p_mid, log_unit, operand_scalar, operand_tile,
                    pow_log, sigmoid_parts, tile_cols, wrap_col)
from ._reduce import finish_program, store_tile


@triton.jit
def focal_hard(x, one, wp, wn, gamma, G: tl.constexpr):
    """``(loss, d loss/dx)`` for hard targets (``one``: t = 1).

    With z = ±x (the sign of the target), p_t = σ(z) and 1 - p_t = q = σ(-z):
    loss = w·q^γ·softplus(-z) and d loss/dz = -w·q^γ·(γ·σ(z)·softplus(-z) + q),
    w = wp (α·pos_weight·weight) for positives, wn ((1-α)·weight) for negatives.
    No (1-p_t)^(γ-1): finite for 0 < γ < 1 as p_t → 1.
    """
    z = tl.where(one, x, -x)
    e, s_z, q = sigmoid_parts(z)
    l1p = log1p_mid(e)
    sp = tl.maximum(-z, 0.0) + l1p                                # -log p_t
    wf = tl.where(one, wp, wn) * pow_log(q, -(tl.maximum(z, 0.0) + l1p), gamma, G)
    if G == 0:
        dz = -wf * q
    elif G > 0:
        dz = -wf * (G * s_z * sp + q)
    else:
        dz = -wf * (gamma * s_z * sp + q)
    return wf * sp, tl.where(one, dz, -dz)


@triton.jit
def focal_soft(x, t, pw, a_t, gamma, G: tl.constexpr):
    """``(loss, d loss/dx)`` for soft targets t in [0, 1], before the weight.

    bce = pw·t·softplus(-x) + (1-t)·softplus(x); 1 - p_t = σ(x)(1-t) + σ(-x)t (a
    sum of non-negatives, no cancellation); d(1-p_t)^γ/dx = γ(1-p_t)^γ·(1-2t)·r
    with r = σ(x)σ(-x)/(1-p_t), taken as 0 where 1 - p_t = 0.
    """
    e, s_p, s_n = sigmoid_parts(x)
    l1p = log1p_mid(e)
    pos_t = t * pw
    bce = pos_t * (tl.maximum(-x, 0.0) + l1p) + (1.0 - t) * (tl.maximum(x, 0.0) + l1p)
    grad = (1.0 - t) * s_p - pos_t * s_n
    if G != 0:
        omp = s_p * (1.0 - t) + s_n * t
        log_omp = 0.0
        if G < 0:
            log_omp = log_unit(tl.where(omp > 0.0, omp, 1.0), True)
        f = pow_log(omp, log_omp, gamma, G)
        r = tl.where(omp > 0.0, s_p * s_n / omp, 0.0)
        grad = f * (gamma * (1.0 - 2.0 * t) * r * bce + grad)
        bce = f * bce
    return a_t * bce, a_t * grad


@triton.jit
def _focal_bce_kernel(x_ptr, t_ptr, a_ptr, pw_ptr, w_ptr, out_ptr, grad_ptr, part_ptr,
                      scale_ptr, gout_ptr, numel, tiles, C, inv_c, a_sr, a_sc, pw_sr, pw_sc,
                      w_sr, w_sc, gamma, alpha, smoothing, ignore, grad_scale,
                      A_MODE: tl.constexpr, PW_MODE: tl.constexpr, W_MODE: tl.constexpr,
                      ALPHA_F: tl.constexpr, HAS_IGNORE: tl.constexpr, TARGETS: tl.constexpr,
                      G: tl.constexpr, SMALL_C: tl.constexpr, REDUCE: tl.constexpr,
                      WRITE_GRAD: tl.constexpr, BACKWARD: tl.constexpr, COUNT: tl.constexpr,
                      FINAL: tl.constexpr, MEAN: tl.constexpr, BLOCK: tl.constexpr):
    """``tiles`` consecutive tiles: loss and d loss/dx per element, both 0 where
    not kept (padding or ignored). TARGETS: 0 hard, 1 float (hard path per tile
    when all 0/1), 2 soft (smoothed). ALPHA_F: the float ``alpha`` (A_MODE NONE)."""
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    gamma, alpha = tl.cast(gamma, tl.float32), tl.cast(alpha, tl.float32)
    smoothing, ignore = tl.cast(smoothing, tl.float32), tl.cast(ignore, tl.float32)
    pid = tl.program_id(0).to(tl.int64)
    first = pid * tiles * BLOCK
    c0, step, jc = tile_cols(first, C, inv_c, BLOCK)
    a = operand_scalar(a_ptr, A_MODE)
    if ALPHA_F:
        a = alpha
    pw = operand_scalar(pw_ptr, PW_MODE)
    w = operand_scalar(w_ptr, W_MODE)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    cnt = tl.zeros([BLOCK], dtype=tl.int32)
    for i in range(tiles):
        start = first + i * BLOCK
        x, t_raw, lane, mask = load_tile(x_ptr, t_ptr, start, numel, BLOCK,
                                         float("-inf") if TARGETS == 0 else 0.0)
        col = wrap_col(c0 + jc, C)
        c0 = wrap_col(c0 + step, C).to(tl.int32)
        a_v = operand_tile(a_ptr, a, col, start, C, inv_c, a_sr, a_sc, mask, A_MODE, SMALL_C, BLOCK)
        pw_v = operand_tile(pw_ptr, pw, col, start, C, inv_c, pw_sr, pw_sc, mask, PW_MODE,
                            SMALL_C, BLOCK)
        w_v = operand_tile(w_ptr, w, col, start, C, inv_c, w_sr, w_sc, mask, W_MODE, SMALL_C,
                           BLOCK)
        keep = mask
        if HAS_IGNORE:
            keep = mask & (t_raw.to(tl.float32) != ignore)
        if A_MODE == 0 and not ALPHA_F:
            wp = pw_v * w_v
            wn = w_v
        else:
            wp = a_v * pw_v * w_v
            wn = (1.0 - a_v) * w_v
        if TARGETS == 0:
            loss, grad = focal_hard(x, (t_raw != 0) & keep, wp, wn, gamma, G)
        else:
            t = tl.where(keep, t_raw.to(tl.float32), 0.0)
            if TARGETS == 2:
                t = t * (1.0 - smoothing) + 0.5 * smoothing
            w_t = w_v * (a_v * t + (1.0 - a_v) * (1.0 - t))  # w·α_t (pw is inside the bce)
            if A_MODE == 0 and not ALPHA_F:
                w_t = w_v
            if TARGETS == 2:
                loss, grad = focal_soft(x, t, pw_v, w_t, gamma, G)
            elif all_hard(t):
                loss, grad = focal_hard(x, t > 0.5, wp, wn, gamma, G)
            else:
                loss, grad = focal_soft(x, t, pw_v, w_t, gamma, G)
        if HAS_IGNORE:
            grad = tl.where(keep, grad, 0.0)
        if HAS_IGNORE or TARGETS != 0:  # hard padding (x = -inf, t = 0) has a loss of 0
            loss = tl.where(keep, loss, 0.0)
        acc += loss
        if COUNT:
            cnt += keep.to(tl.int32)
        store_tile(lane, mask, loss, grad, out_ptr + start, grad_ptr + start, gout_ptr + start,
                   grad_scale, REDUCE, WRITE_GRAD, BACKWARD)
    finish_program(pid, acc, cnt, part_ptr, out_ptr, scale_ptr, numel, REDUCE, BACKWARD, COUNT,
                   FINAL, MEAN)


def _launch_args(input, target, alpha, pos_weight, weight, options):
    """(pointers, sizes, flags, decoded options) shared by the forward and backward."""
    o = SPEC.decode(options)
    pointers, sizes, flags, (a_mode, pw_mode, w_mode) = broadcast_operands(
        input, target, alpha, pos_weight, weight)
    ignore = o.ignore_index
    scalars = (o.gamma, o.alpha or 0.0, o.label_smoothing,
               float(ignore if ignore is not None else 0))
    soft = target.is_floating_point() or o.label_smoothing != 0.0
    flags.update(A_MODE=a_mode, PW_MODE=pw_mode, W_MODE=w_mode,
                 ALPHA_F=alpha is None and o.alpha is not None,
                 HAS_IGNORE=ignore is not None,
                 # Smoothing turns 0/1 labels soft: the select path would be wrong.
                 TARGETS=(2 if o.label_smoothing != 0.0 else 1) if soft else 0,
                 G=gamma_int(o.gamma))
    return pointers, sizes + scalars, flags, o


@triton_op("fused_losses::focal_bce_triton_fwd", mutates_args=())
def focal_bce_triton_fwd(input: torch.Tensor, target: torch.Tensor,
                         alpha: Optional[torch.Tensor], pos_weight: Optional[torch.Tensor],
                         weight: Optional[torch.Tensor], options: list[float], reduction: str,
                         compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, grad, scale).

    ``grad`` is d(loss)/d(input) for ``mean``/``sum`` when ``compute_grad``
    (else empty); the true gradient is ``grad * grad_output * scale``, where
    ``scale`` is 1/count for a mean over non-ignored elements and 1 otherwise.
    """
    pointers, sizes, flags, o = _launch_args(input, target, alpha, pos_weight, weight, options)
    # Without ignore_index a mean's divisor is numel, known here and folded into grad.
    divisor = "numel" if o.ignore_index is None else "kept"
    return elementwise_forward(_focal_bce_kernel, input, pointers, sizes, flags, reduction,
                               compute_grad, divisor)


@triton_op("fused_losses::focal_bce_triton_bwd", mutates_args=())
def focal_bce_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor,
                         target: torch.Tensor, alpha: Optional[torch.Tensor],
                         pos_weight: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                         options: list[float]) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``, in one pass."""
    pointers, sizes, flags, _ = _launch_args(input, target, alpha, pos_weight, weight, options)
    return elementwise_backward(_focal_bce_kernel, grad_output, input, pointers, sizes, flags)

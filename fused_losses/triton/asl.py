"""Fused asymmetric loss (ASL) in Triton: the kernel and its registered ops.

Forward (``mean``/``sum``): one pass reads logits and targets once, writes one
loss partial per program and, when a gradient is needed, d(loss)/d(input)
already scaled by the reduction; the backward only multiplies by
``grad_output``. Forward (``none``) writes the loss; its backward recomputes
in one pass, through the same kernel (``_launch.py``). See
``fused_losses.reference.asl`` for the formula and the subgradients at the
clamps.

Compile-time specialisation: hard targets (bool/int, or float tiles that are
all 0/1) select each element's term before the maths, so one log1p serves
both log σ(x) (positives) and log p_m (negatives); small integer γ₊/γ₋ raise
σ(-x) and d = 1 - p_m by multiplication; pos_weight and weight are absent,
scalar, per-class (by column) or general. Clamps are written as
``where(v < bound, bound, v)`` so a NaN logit stays NaN.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..spec.asl import SPEC
from ._launch import broadcast_operands, elementwise_backward, elementwise_forward, gamma_int
from ._math import (LOG2E, all_hard, fast_rcp, load_tile, log1p_mid, log_unit, operand_scalar,
                    operand_tile, pow_log, sigmoid_parts, tile_cols, wrap_col)
from ._reduce import finish_program, store_tile


@triton.jit
def asl_hard(x, one, wp, wn, gscale, gamma_pos, gamma_neg, clip, log_eps, GP: tl.constexpr,
             GN: tl.constexpr, CLIP: tl.constexpr, POS_EPS: tl.constexpr,
             NEG_EPS: tl.constexpr, DETACH: tl.constexpr):
    """``(loss, gscale·d loss/dx)`` for hard targets (``one``: t = 1), weights wp/wn.

    Positives: -wp·σ(-x)^γ₊·max(log σ(x), log eps). Negatives, d = max(σ(x) - clip, 0):
    -wn·d^γ₋·log p_m, p_m = 1 - d; log p_m = log1p(-d) while d < 1/2, else
    log(σ(-x) + clip) by exponent split (clip = 0: d = σ(x), log p_m = log σ(-x)).
    The element's log argument is selected first, so one log1p serves both.
    """
    e, s_p, s_n = sigmoid_parts(x)
    if CLIP:
        diff = s_p - clip
        d = tl.where(diff < 0.0, 0.0, diff)
        near = d < 0.5
        pm = s_n + clip  # = 1 - d: to 6e-8, but not relatively for d -> 0
        l = log1p_mid(tl.where(one, e, -d))  # only used (and accurate) while d < 1/2
        lg = tl.where(one, -(tl.maximum(-x, 0.0) + l), tl.where(near, l, log_unit(pm, False)))
        # d lg/dx: σ(-x) for positives, -σ(x)σ(-x)/p_m for negatives (0 below the clip).
        dlg = tl.where(one, s_n, tl.where(diff >= 0.0, -(s_p * s_n) * fast_rcp(pm), 0.0))
    else:
        d = s_p
        l = log1p_mid(e)
        lg = tl.where(one, -tl.maximum(-x, 0.0), -tl.maximum(x, 0.0)) - l
        dlg = tl.where(one, s_n, -s_p)
    if POS_EPS or NEG_EPS:
        low = lg < log_eps
        if not NEG_EPS:
            low = low & one
        if not POS_EPS:
            low = low & ~one
        dlg = tl.where(low, 0.0, dlg)
        lg = tl.where(low, log_eps, lg)
    b = tl.where(one, s_n, d)  # 1 - p_t
    log_b = 0.0
    if GP < 0 or GN < 0:
        if CLIP:
            log_d = log_unit(tl.where(d > 0.0, d, 1.0), True)
        else:
            log_d = -(tl.maximum(-x, 0.0) + l)
        log_b = tl.where(one, -(tl.maximum(x, 0.0) + l), log_d)
    f = tl.where(one, pow_log(b, log_b, gamma_pos, GP), pow_log(b, log_b, gamma_neg, GN))
    wf = tl.where(one, wp, wn) * f
    grad = wf * (dlg * -gscale)
    if not DETACH:
        # d f/dx = γ_t·f·d log b/dx: -σ(x) for positives, σ(x)σ(-x)/d for negatives.
        if CLIP:
            dlog_b = tl.where(d > 0.0, s_p * s_n / tl.where(d > 0.0, d, 1.0), 0.0)
        else:
            dlog_b = s_n
        gam = tl.where(one, gamma_pos, gamma_neg)
        grad += (wf * -lg) * gam * gscale * tl.where(one, -s_p, dlog_b)
    return wf * -lg, grad


@triton.jit
def asl_soft(x, t, pw, w, gamma_pos, gamma_neg, clip, log_eps, CLIP: tl.constexpr,
             POS_EPS: tl.constexpr, NEG_EPS: tl.constexpr, FOCAL: tl.constexpr,
             DETACH: tl.constexpr):
    """``(loss, d loss/dx)`` for soft targets t in [0, 1] (weight w, pos_weight pw):
    -w·(pw·t·log max(p, eps) + (1-t)·log max(p_m, eps))·(1 - p_t)^γ_t with
    1 - p_t = t·σ(-x) + (1-t)·d (non-negative terms) and γ_t = γ₊t + γ₋(1-t)."""
    e, s_p, s_n = sigmoid_parts(x)
    l1p = log1p_mid(e)
    log_p = -(tl.maximum(-x, 0.0) + l1p)
    if CLIP:
        diff = s_p - clip
        d = tl.where(diff < 0.0, 0.0, diff)
        near = d < 0.5
        pm = tl.where(near, 1.0 - d, s_n + clip)
        log_m = tl.where(near, log1p_mid(-tl.minimum(d, 0.5)), log_unit(s_n + clip, False))
        dlog_m = tl.where(diff >= 0.0, -(s_p * s_n) / pm, 0.0)
    else:
        d = s_p
        log_m = -(tl.maximum(x, 0.0) + l1p)
        dlog_m = -s_p
    dlp = s_n
    if POS_EPS:
        dlp = tl.where(log_p >= log_eps, dlp, 0.0)
        log_p = tl.where(log_p < log_eps, log_eps, log_p)
    if NEG_EPS:
        dlog_m = tl.where(log_m >= log_eps, dlog_m, 0.0)
        log_m = tl.where(log_m < log_eps, log_eps, log_m)
    pos_t = t * pw
    loss = -(pos_t * log_p + (1.0 - t) * log_m)
    grad = -(pos_t * dlp + (1.0 - t) * dlog_m)
    if FOCAL:
        gam = gamma_pos * t + gamma_neg * (1.0 - t)
        omp = t * s_n + (1.0 - t) * d
        live = omp > 0.0
        f = tl.where(live, tl.exp2(gam * LOG2E * log_unit(tl.where(live, omp, 1.0), True)),
                     tl.where(gam == 0.0, 1.0, 0.0))
        grad = f * grad
        if not DETACH:
            sp_sn = s_p * s_n
            if CLIP:
                dd = tl.where(d > 0.0, sp_sn, 0.0)
            else:
                dd = sp_sn
            domp = (1.0 - t) * dd - t * sp_sn
            grad += gam * f * tl.where(live, domp / tl.where(live, omp, 1.0), 0.0) * loss
        loss = f * loss
    return w * loss, w * grad


@triton.jit
def _asl_kernel(x_ptr, t_ptr, w_ptr, pw_ptr, out_ptr, grad_ptr, part_ptr, scale_ptr, gout_ptr,
                numel, tiles, C, inv_c, w_sr, w_sc, pw_sr, pw_sc, gamma_pos, gamma_neg, clip,
                log_eps, pos_weight, smoothing, grad_scale,
                W_MODE: tl.constexpr, PW_MODE: tl.constexpr, PW_F: tl.constexpr,
                TARGETS: tl.constexpr, CLIP: tl.constexpr, POS_EPS: tl.constexpr,
                NEG_EPS: tl.constexpr, GP: tl.constexpr, GN: tl.constexpr,
                DETACH: tl.constexpr, SMALL_C: tl.constexpr, REDUCE: tl.constexpr,
                WRITE_GRAD: tl.constexpr, BACKWARD: tl.constexpr, COUNT: tl.constexpr,
                FINAL: tl.constexpr, MEAN: tl.constexpr, BLOCK: tl.constexpr):
    """``tiles`` consecutive tiles: loss and d loss/dx (0 on padding). TARGETS: 0
    hard, 1 float (hard path per tile when all 0/1), 2 soft (smoothed). PW_F:
    the float ``pos_weight`` (PW_MODE NONE)."""
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    gamma_pos, gamma_neg = tl.cast(gamma_pos, tl.float32), tl.cast(gamma_neg, tl.float32)
    clip, log_eps = tl.cast(clip, tl.float32), tl.cast(log_eps, tl.float32)
    smoothing = tl.cast(smoothing, tl.float32)
    pid = tl.program_id(0).to(tl.int64)
    first = pid * tiles * BLOCK
    c0, step, jc = tile_cols(first, C, inv_c, BLOCK)
    pw = operand_scalar(pw_ptr, PW_MODE)
    if PW_F:
        pw = tl.cast(pos_weight, tl.float32)
    w = operand_scalar(w_ptr, W_MODE)
    # The forward's gradient carries a mean's 1/numel; ``none`` and its backward do not.
    gscale = tl.cast(grad_scale, tl.float32) if REDUCE else 1.0
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    cnt = tl.zeros([BLOCK], dtype=tl.int32)
    for i in range(tiles):
        start = first + i * BLOCK
        x, t_raw, lane, mask = load_tile(x_ptr, t_ptr, start, numel, BLOCK,
                                         float("-inf") if TARGETS == 0 else 0.0)
        col = wrap_col(c0 + jc, C)
        c0 = wrap_col(c0 + step, C).to(tl.int32)
        pw_v = operand_tile(pw_ptr, pw, col, start, C, inv_c, pw_sr, pw_sc, mask, PW_MODE,
                            SMALL_C, BLOCK)
        w_v = operand_tile(w_ptr, w, col, start, C, inv_c, w_sr, w_sc, mask, W_MODE, SMALL_C,
                           BLOCK)
        if TARGETS == 0:
            loss, grad = asl_hard(x, t_raw != 0, pw_v * w_v, w_v, gscale, gamma_pos, gamma_neg,
                                  clip, log_eps, GP, GN, CLIP, POS_EPS, NEG_EPS, DETACH)
        else:
            t = t_raw.to(tl.float32)
            if TARGETS == 2:
                t = t * (1.0 - smoothing) + 0.5 * smoothing
                loss, grad = asl_soft(x, t, pw_v, w_v, gamma_pos, gamma_neg, clip, log_eps,
                                      CLIP, POS_EPS, NEG_EPS, GP != 0 or GN != 0, DETACH)
                grad = grad * gscale
            elif all_hard(t):
                loss, grad = asl_hard(x, t > 0.5, pw_v * w_v, w_v, gscale, gamma_pos, gamma_neg,
                                      clip, log_eps, GP, GN, CLIP, POS_EPS, NEG_EPS, DETACH)
            else:
                loss, grad = asl_soft(x, t, pw_v, w_v, gamma_pos, gamma_neg, clip, log_eps,
                                      CLIP, POS_EPS, NEG_EPS, GP != 0 or GN != 0, DETACH)
                grad = grad * gscale
        if TARGETS != 0:  # hard targets: padding (x = -inf, t = 0) gives a loss of 0 already
            loss = tl.where(mask, loss, 0.0)
        acc += loss
        store_tile(lane, mask, loss, grad, out_ptr + start, grad_ptr + start, gout_ptr + start,
                   1.0, REDUCE, WRITE_GRAD, BACKWARD)
    finish_program(pid, acc, cnt, part_ptr, out_ptr, scale_ptr, numel, REDUCE, BACKWARD, COUNT,
                   FINAL, MEAN)


def _launch_args(input, target, weight, pos_weight, options):
    """(pointers, sizes, flags) shared by the forward and backward."""
    o = SPEC.decode(options)
    pointers, sizes, flags, (w_mode, pw_mode) = broadcast_operands(input, target, weight,
                                                                   pos_weight)
    scalars = (o.gamma_pos, o.gamma_neg, o.clip, math.log(o.eps) if o.eps > 0 else 0.0,
               o.pos_weight if o.pos_weight is not None else 1.0, o.label_smoothing)
    soft = target.is_floating_point() or o.label_smoothing != 0.0
    flags.update(W_MODE=w_mode, PW_MODE=pw_mode,
                 # A tensor pos_weight wins over the float slot (NaN, decoded as None, then).
                 PW_F=pos_weight is None and o.pos_weight is not None,
                 # Smoothing turns 0/1 labels soft: the select path would be wrong.
                 TARGETS=(2 if o.label_smoothing != 0.0 else 1) if soft else 0,
                 CLIP=o.clip > 0, POS_EPS=o.eps > 0,
                 # p_m >= clip: the clamp at eps can only bite when clip is near eps.
                 NEG_EPS=o.eps > 0 and not o.clip >= 2 * o.eps,
                 GP=gamma_int(o.gamma_pos), GN=gamma_int(o.gamma_neg),
                 DETACH=o.detach_focal_weight)
    return pointers, sizes + scalars, flags


@triton_op("fused_losses::asl_triton_fwd", mutates_args=())
def asl_triton_fwd(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
                   pos_weight: Optional[torch.Tensor], options: list[float], reduction: str,
                   compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, grad, scale): ``grad`` is d(loss)/d(input) for ``mean``/``sum``
    when ``compute_grad`` (else empty); ``scale`` is 1 (a mean's 1/numel is in grad)."""
    pointers, sizes, flags = _launch_args(input, target, weight, pos_weight, options)
    return elementwise_forward(_asl_kernel, input, pointers, sizes, flags, reduction,
                               compute_grad, divisor="numel")


@triton_op("fused_losses::asl_triton_bwd", mutates_args=())
def asl_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                   weight: Optional[torch.Tensor], pos_weight: Optional[torch.Tensor],
                   options: list[float]) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``, in one pass."""
    pointers, sizes, flags = _launch_args(input, target, weight, pos_weight, options)
    return elementwise_backward(_asl_kernel, grad_output, input, pointers, sizes, flags)

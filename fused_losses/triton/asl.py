"""Fused asymmetric loss (ASL) in Triton: the kernel and its registered ops.

Forward (``mean``/``sum``): one pass reads logits and targets once, writes one
loss partial per program and, when a gradient is needed, d(loss)/d(input)
already scaled by the reduction; the backward only multiplies by
``grad_output``. Forward (``none``) writes the loss; its backward recomputes
in one pass, through the same kernel (``_launch.py``). See
``fused_losses.reference.asl`` for the formula and the subgradients at the
clamps.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..spec.asl import SPEC
from ._launch import broadcast_operands, elementwise_backward, elementwise_forward
from ._math import (load_rc, load_xt, log1p_fp32, log_add_exp, rescale_rc, row_col,
                    sigmoid_terms)
from ._reduce import write_tile


@triton.jit
def asl_terms(x, t, pw, gamma_pos, gamma_neg, clip, log_eps, CLIP: tl.constexpr,
              HAS_EPS: tl.constexpr, HARD: tl.constexpr, FOCAL: tl.constexpr,
              DETACH: tl.constexpr, HAS_PW: tl.constexpr):
    """Elementwise ASL loss and d loss/dx (before the weight), fp32, for the
    (already smoothed) target t; ``pw`` (read when HAS_PW) scales the positive term.

    Clamps are written as ``where(v < bound, bound, v)`` so a NaN logit stays NaN.
    """
    log_p, log_n, s_p, s_n = sigmoid_terms(x)
    if CLIP:
        # d = 1 - p_m = max(p - clip, 0); p_m = 1 - d, or σ(-x) + clip once d >= 1/2.
        diff = s_p - clip
        d = tl.where(diff < 0.0, 0.0, diff)
        small = d < 0.5
        pm = tl.where(small, 1.0 - d, s_n + clip)
        log_pm = tl.where(small, log1p_fp32(-tl.minimum(d, 0.5)), tl.log(s_n + clip))
        sp_sn = s_p * s_n
        dlog_pm = tl.where(s_p >= clip, -sp_sn / pm, 0.0)
        live_d = d > 0.0
        d_safe = tl.where(live_d, d, 1.0)
        log_d = tl.where(live_d, tl.log(d_safe), float("-inf"))
        dlog_d = tl.where(live_d, sp_sn / d_safe, 0.0)
    else:
        log_pm = log_n
        dlog_pm = -s_p
        log_d = log_p
        dlog_d = s_n
        live_d = x == x  # all true: d = σ(x) has a finite log everywhere
    lp = log_p
    dlp = s_n
    if HAS_EPS:
        dlp = tl.where(log_p >= log_eps, dlp, 0.0)
        lp = tl.where(log_p < log_eps, log_eps, log_p)
        dlog_pm = tl.where(log_pm >= log_eps, dlog_pm, 0.0)
        log_pm = tl.where(log_pm < log_eps, log_eps, log_pm)
    pos_t = t
    if HAS_PW:
        pos_t = t * pw
    loss = -(pos_t * lp + (1.0 - t) * log_pm)
    grad = -(pos_t * dlp + (1.0 - t) * dlog_pm)
    if FOCAL:
        gamma = gamma_pos * t + gamma_neg * (1.0 - t)
        if HARD:
            one = t > 0.5
            log_q = tl.where(one, log_n, log_d)
            dlog_q = tl.where(one, -s_p, dlog_d)
        else:
            live = (t > 0.0) | live_d
            a = tl.where(live, tl.log(t) + log_n, 0.0)
            b = tl.where(live, log1p_fp32(-t) + log_d, 0.0)
            log_q = tl.where(live, log_add_exp(a, b), float("-inf"))
            c = (1.0 - t) * live_d.to(tl.float32) - t
            dlog_q = tl.where(live, c * tl.exp(log_p + log_n - log_add_exp(a, b)), 0.0)
        live_q = log_q > float("-inf")
        f = tl.where(live_q, tl.exp(gamma * tl.where(live_q, log_q, 0.0)),
                     tl.where(gamma == 0.0, 1.0, 0.0))
        grad = f * grad
        if not DETACH:
            grad += gamma * f * tl.where(live_q, dlog_q, 0.0) * loss
        loss = f * loss
    return loss, grad


@triton.jit
def _asl_kernel(x_ptr, t_ptr, w_ptr, pw_ptr, out_ptr, grad_ptr, psum_ptr, pcnt_ptr, gout_ptr,
                numel, C, inv_c, w_sr, w_sc, pw_sr, pw_sc, gamma_pos, gamma_neg, clip, log_eps,
                pos_weight, smoothing, grad_scale,
                HAS_W: tl.constexpr, PW_MODE: tl.constexpr, SMOOTH: tl.constexpr,
                CLIP: tl.constexpr, HAS_EPS: tl.constexpr,
                HARD: tl.constexpr, FOCAL: tl.constexpr, DETACH: tl.constexpr,
                SMALL_C: tl.constexpr, REDUCE: tl.constexpr, WRITE_GRAD: tl.constexpr,
                BACKWARD: tl.constexpr, BLOCK: tl.constexpr):
    """Loss and d loss/dx of one tile (0 on padding), written as
    ``_reduce.write_tile`` says. PW_MODE: 0 no pos_weight, 1 the float
    ``pos_weight``, 2 the tensor at ``pw_ptr``."""
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    gamma_pos, gamma_neg = tl.cast(gamma_pos, tl.float32), tl.cast(gamma_neg, tl.float32)
    clip, log_eps = tl.cast(clip, tl.float32), tl.cast(log_eps, tl.float32)
    pw = tl.cast(pos_weight, tl.float32)
    pid = tl.program_id(0).to(tl.int64)
    start = pid * BLOCK
    x, t, offs, mask = load_xt(x_ptr, t_ptr, start, numel, BLOCK)
    if SMOOTH:
        s = tl.cast(smoothing, tl.float32)
        t = t * (1.0 - s) + 0.5 * s
    if HAS_W or PW_MODE == 2:
        row, col = row_col(start, C, inv_c, BLOCK, SMALL_C)
    if PW_MODE == 2:
        pw = load_rc(pw_ptr, row, col, pw_sr, pw_sc, mask)
    loss, grad = asl_terms(x, t, pw, gamma_pos, gamma_neg, clip, log_eps, CLIP, HAS_EPS, HARD,
                           FOCAL, DETACH, PW_MODE != 0)
    if HAS_W:
        loss, grad = rescale_rc(loss, grad, w_ptr, row, col, w_sr, w_sc, mask)
    write_tile(pid, offs, mask, mask, tl.where(mask, loss, 0.0), tl.where(mask, grad, 0.0),
               out_ptr, grad_ptr, psum_ptr, pcnt_ptr, gout_ptr, grad_scale, REDUCE, WRITE_GRAD,
               True, BACKWARD)


def _launch_args(input, target, weight, pos_weight, options):
    """(pointers, sizes, flags) shared by the forward and backward."""
    o = SPEC.decode(options)
    pointers, sizes, flags = broadcast_operands(input, target, weight, pos_weight)
    scalars = (o.gamma_pos, o.gamma_neg, o.clip, math.log(o.eps) if o.eps > 0 else 0.0,
               o.pos_weight if o.pos_weight is not None else 1.0, o.label_smoothing)
    # A tensor pos_weight wins over the float slot (NaN, decoded as None, then).
    pw_mode = 2 if pos_weight is not None else (1 if o.pos_weight is not None else 0)
    flags.update(HAS_W=weight is not None, PW_MODE=pw_mode, SMOOTH=o.label_smoothing != 0.0,
                 CLIP=o.clip > 0, HAS_EPS=o.eps > 0,
                 # Smoothing turns 0/1 labels soft: the select path would be wrong.
                 HARD=not target.is_floating_point() and o.label_smoothing == 0.0,
                 FOCAL=o.gamma_pos != 0.0 or o.gamma_neg != 0.0,
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

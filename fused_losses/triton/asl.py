"""Fused asymmetric loss (ASL) in Triton: kernels and their registered ops.

Forward (``mean``/``sum``): one pass reads logits and targets once, writes one
loss partial per program and, when a gradient is needed, d(loss)/d(input)
already scaled by the reduction; the backward only multiplies by
``grad_output``. Forward (``none``) writes the loss; its backward recomputes
in one pass. See ``fused_losses.reference.asl`` for the formula and the
subgradients at the clamps.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .._layout import as_rows, backward_fake, flat_target, fused_outputs, rows_cols
from ._math import load_rc, log1p_fp32, log_add_exp, row_col, sigmoid_terms
from ._reduce import launch_sum_partials

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def asl_terms(x, t, gamma_pos, gamma_neg, clip, log_eps, CLIP: tl.constexpr,
              HAS_EPS: tl.constexpr, HARD: tl.constexpr, FOCAL: tl.constexpr,
              DETACH: tl.constexpr):
    """Elementwise ASL loss and d loss/dx (before the weight), fp32.

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
    loss = -(t * lp + (1.0 - t) * log_pm)
    grad = -(t * dlp + (1.0 - t) * dlog_pm)
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
def _asl_tile(x_ptr, t_ptr, w_ptr, start, numel, C, inv_c, w_sr, w_sc,
              gamma_pos, gamma_neg, clip, log_eps,
              HAS_W: tl.constexpr, CLIP: tl.constexpr, HAS_EPS: tl.constexpr,
              HARD: tl.constexpr, FOCAL: tl.constexpr, DETACH: tl.constexpr,
              SMALL_C: tl.constexpr, BLOCK: tl.constexpr):
    """(loss, d loss/dx, offs, mask) for the tile at flat offset ``start``; 0 on padding."""
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    gamma_pos, gamma_neg = tl.cast(gamma_pos, tl.float32), tl.cast(gamma_neg, tl.float32)
    clip, log_eps = tl.cast(clip, tl.float32), tl.cast(log_eps, tl.float32)
    offs = start + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + offs, mask=mask, other=0).to(tl.float32)
    loss, grad = asl_terms(x, t, gamma_pos, gamma_neg, clip, log_eps, CLIP, HAS_EPS, HARD,
                           FOCAL, DETACH)
    if HAS_W:
        row, col = row_col(start, C, inv_c, BLOCK, SMALL_C)
        w = load_rc(w_ptr, row, col, w_sr, w_sc, mask)
        loss *= w
        grad *= w
    return tl.where(mask, loss, 0.0), tl.where(mask, grad, 0.0), offs, mask


@triton.jit
def _asl_fwd_kernel(x_ptr, t_ptr, w_ptr, out_ptr, grad_ptr, psum_ptr, pcnt_ptr, numel, C,
                    inv_c, w_sr, w_sc, gamma_pos, gamma_neg, clip, log_eps, grad_scale,
                    HAS_W: tl.constexpr, CLIP: tl.constexpr, HAS_EPS: tl.constexpr,
                    HARD: tl.constexpr, FOCAL: tl.constexpr, DETACH: tl.constexpr,
                    SMALL_C: tl.constexpr, REDUCE: tl.constexpr, WRITE_GRAD: tl.constexpr,
                    BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    loss, grad, offs, mask = _asl_tile(
        x_ptr, t_ptr, w_ptr, pid * BLOCK, numel, C, inv_c, w_sr, w_sc, gamma_pos, gamma_neg,
        clip, log_eps, HAS_W, CLIP, HAS_EPS, HARD, FOCAL, DETACH, SMALL_C, BLOCK)
    if REDUCE:
        tl.store(psum_ptr + pid, tl.sum(loss, axis=0))
        tl.store(pcnt_ptr + pid, tl.sum(mask.to(tl.int32), axis=0))
        if WRITE_GRAD:
            g = grad * tl.cast(grad_scale, tl.float32)
            tl.store(grad_ptr + offs, g.to(grad_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + offs, loss.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _asl_bwd_kernel(x_ptr, t_ptr, w_ptr, gout_ptr, gin_ptr, numel, C, inv_c, w_sr, w_sc,
                    gamma_pos, gamma_neg, clip, log_eps,
                    HAS_W: tl.constexpr, CLIP: tl.constexpr, HAS_EPS: tl.constexpr,
                    HARD: tl.constexpr, FOCAL: tl.constexpr, DETACH: tl.constexpr,
                    SMALL_C: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    _, grad, offs, mask = _asl_tile(
        x_ptr, t_ptr, w_ptr, pid * BLOCK, numel, C, inv_c, w_sr, w_sc, gamma_pos, gamma_neg,
        clip, log_eps, HAS_W, CLIP, HAS_EPS, HARD, FOCAL, DETACH, SMALL_C, BLOCK)
    g_out = tl.load(gout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(gin_ptr + offs, (grad * g_out).to(gin_ptr.dtype.element_ty), mask=mask)


def _operands(input, target, weight, gamma_pos, gamma_neg, clip, eps, detach_focal_weight):
    """Kernel arguments shared by the forward and backward launches."""
    rows, cols = rows_cols(input.shape)
    t = flat_target(target)
    w, w_sr, w_sc = as_rows(weight, input.shape, rows, cols)
    args = (input.contiguous(), t, t if w is None else w)  # t: never read (HAS_W off)
    sizes = (max(cols, 1), 1.0 / max(cols, 1), w_sr, w_sc, float(gamma_pos),
             float(gamma_neg), float(clip), math.log(eps) if eps > 0 else 0.0)
    flags = dict(HAS_W=weight is not None, CLIP=clip > 0, HAS_EPS=eps > 0,
                 HARD=not target.is_floating_point(),
                 FOCAL=gamma_pos != 0.0 or gamma_neg != 0.0, DETACH=bool(detach_focal_weight),
                 SMALL_C=cols < BLOCK, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return args, sizes, flags


@triton_op("fused_losses::asl_triton_fwd", mutates_args=())
def asl_triton_fwd(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
                   gamma_pos: float, gamma_neg: float, clip: float, eps: float,
                   detach_focal_weight: bool, reduction: str,
                   compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, grad, scale): ``grad`` is d(loss)/d(input) for ``mean``/``sum``
    when ``compute_grad`` (else empty); ``scale`` is 1 (the protocol of ops/_fused.py)."""
    numel = input.numel()
    args, sizes, flags = _operands(input, target, weight, gamma_pos, gamma_neg, clip, eps,
                                   detach_focal_weight)
    reduce = reduction != "none"
    mean = reduction == "mean"
    n_prog = triton.cdiv(numel, BLOCK)
    device = input.device
    out, grad, scale = fused_outputs(input, reduction, compute_grad)
    psum = torch.empty((n_prog if reduce else 0,), dtype=torch.float32, device=device)
    pcnt = torch.empty((n_prog if reduce else 0,), dtype=torch.int32, device=device)
    grad_scale = 1.0 / numel if (mean and numel) else 1.0
    if n_prog:
        wrap_triton(_asl_fwd_kernel)[(n_prog,)](
            *args, out, grad, psum, pcnt, numel, *sizes, grad_scale,
            REDUCE=reduce, WRITE_GRAD=reduce and compute_grad, **flags)
    if reduce:
        launch_sum_partials(wrap_triton, psum, pcnt, out, scale, mean, clamp_count=False)
    else:
        scale.fill_(1.0)
    return out, grad, scale


@triton_op("fused_losses::asl_triton_bwd", mutates_args=())
def asl_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                   weight: Optional[torch.Tensor], gamma_pos: float, gamma_neg: float,
                   clip: float, eps: float, detach_focal_weight: bool) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``, in one pass."""
    numel = input.numel()
    args, sizes, flags = _operands(input, target, weight, gamma_pos, gamma_neg, clip, eps,
                                   detach_focal_weight)
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    n_prog = triton.cdiv(numel, BLOCK)
    if n_prog:
        wrap_triton(_asl_bwd_kernel)[(n_prog,)](
            *args, grad_output.contiguous(), grad_input, numel, *sizes, **flags)
    return grad_input


# Explicit fake kernels: shapes only, so FakeTensor tracing never launches anything.
@asl_triton_fwd.register_fake
def _(input, target, weight, gamma_pos, gamma_neg, clip, eps, detach_focal_weight, reduction,
      compute_grad):
    return fused_outputs(input, reduction, compute_grad)


asl_triton_bwd.register_fake(backward_fake)

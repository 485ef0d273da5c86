"""Fused sigmoid focal BCE in Triton: kernels and their registered ops.

Forward (``mean``/``sum``): one pass reads logits and targets once, writes one
loss partial per program and, when a gradient is needed, d(loss)/d(input)
already scaled by the reduction; the backward only multiplies by
``grad_output``. Forward (``none``) writes the loss; its backward recomputes
in one pass. Maths are in ``_math.py``; see ``fused_losses.reference.focal_bce``
for the formula.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .._layout import as_rows, backward_fake, flat_target, fused_outputs, rows_cols
from ._math import focal_factor, load_rc, row_col, sigmoid_terms
from ._reduce import launch_sum_partials

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _focal_bce_tile(x_ptr, t_ptr, a_ptr, pw_ptr, w_ptr, start, numel, C, inv_c,
                    a_sr, a_sc, pw_sr, pw_sc, w_sr, w_sc,
                    gamma, alpha, smoothing, ignore,
                    ALPHA_MODE: tl.constexpr, HAS_PW: tl.constexpr, HAS_W: tl.constexpr,
                    HAS_IGNORE: tl.constexpr, HARD: tl.constexpr, GAMMA_ZERO: tl.constexpr,
                    SMALL_C: tl.constexpr, BLOCK: tl.constexpr):
    """(loss, d loss/dx, keep, offs, mask) for the tile at flat offset ``start``.

    Loss and gradient are 0 where ``keep`` is False (padding or ignored).
    """
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    gamma, alpha = tl.cast(gamma, tl.float32), tl.cast(alpha, tl.float32)
    smoothing, ignore = tl.cast(smoothing, tl.float32), tl.cast(ignore, tl.float32)
    offs = start + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + offs, mask=mask, other=0).to(tl.float32)
    keep = mask
    if HAS_IGNORE:
        keep = mask & (t != ignore)
        t = tl.where(keep, t, 0.0)
    t = t * (1.0 - smoothing) + 0.5 * smoothing
    if ALPHA_MODE == 2 or HAS_PW or HAS_W:
        row, col = row_col(start, C, inv_c, BLOCK, SMALL_C)
    log_p, log_n, s_p, s_n = sigmoid_terms(x)
    pos_t = t
    if HAS_PW:
        pos_t = t * load_rc(pw_ptr, row, col, pw_sr, pw_sc, mask)
    loss = -(pos_t * log_p + (1.0 - t) * log_n)
    grad = (1.0 - t) * s_p - pos_t * s_n
    if not GAMMA_ZERO:
        f, r = focal_factor(log_p, log_n, s_p, s_n, t, gamma, HARD)
        grad = f * (gamma * (1.0 - 2.0 * t) * r * loss + grad)
        loss = f * loss
    if ALPHA_MODE == 1:
        a_t = alpha * t + (1.0 - alpha) * (1.0 - t)
        loss *= a_t
        grad *= a_t
    if ALPHA_MODE == 2:
        a = load_rc(a_ptr, row, col, a_sr, a_sc, mask)
        a_t = a * t + (1.0 - a) * (1.0 - t)
        loss *= a_t
        grad *= a_t
    if HAS_W:
        w = load_rc(w_ptr, row, col, w_sr, w_sc, mask)
        loss *= w
        grad *= w
    return tl.where(keep, loss, 0.0), tl.where(keep, grad, 0.0), keep, offs, mask


@triton.jit
def _focal_bce_fwd_kernel(x_ptr, t_ptr, a_ptr, pw_ptr, w_ptr, out_ptr, grad_ptr,
                          psum_ptr, pcnt_ptr, numel, C, inv_c,
                          a_sr, a_sc, pw_sr, pw_sc, w_sr, w_sc,
                          gamma, alpha, smoothing, ignore, grad_scale,
                          ALPHA_MODE: tl.constexpr, HAS_PW: tl.constexpr,
                          HAS_W: tl.constexpr, HAS_IGNORE: tl.constexpr,
                          HARD: tl.constexpr, GAMMA_ZERO: tl.constexpr,
                          SMALL_C: tl.constexpr, REDUCE: tl.constexpr,
                          WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    loss, grad, keep, offs, mask = _focal_bce_tile(
        x_ptr, t_ptr, a_ptr, pw_ptr, w_ptr, pid * BLOCK, numel, C, inv_c,
        a_sr, a_sc, pw_sr, pw_sc, w_sr, w_sc, gamma, alpha, smoothing, ignore,
        ALPHA_MODE, HAS_PW, HAS_W, HAS_IGNORE, HARD, GAMMA_ZERO, SMALL_C, BLOCK)
    if REDUCE:
        tl.store(psum_ptr + pid, tl.sum(loss, axis=0))
        tl.store(pcnt_ptr + pid, tl.sum(keep.to(tl.int32), axis=0))
        if WRITE_GRAD:
            g = grad * tl.cast(grad_scale, tl.float32)
            tl.store(grad_ptr + offs, g.to(grad_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + offs, loss.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _focal_bce_bwd_kernel(x_ptr, t_ptr, a_ptr, pw_ptr, w_ptr, gout_ptr, gin_ptr,
                          numel, C, inv_c, a_sr, a_sc, pw_sr, pw_sc, w_sr, w_sc,
                          gamma, alpha, smoothing, ignore,
                          ALPHA_MODE: tl.constexpr, HAS_PW: tl.constexpr,
                          HAS_W: tl.constexpr, HAS_IGNORE: tl.constexpr,
                          HARD: tl.constexpr, GAMMA_ZERO: tl.constexpr,
                          SMALL_C: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    _, grad, _, offs, mask = _focal_bce_tile(
        x_ptr, t_ptr, a_ptr, pw_ptr, w_ptr, pid * BLOCK, numel, C, inv_c,
        a_sr, a_sc, pw_sr, pw_sc, w_sr, w_sc, gamma, alpha, smoothing, ignore,
        ALPHA_MODE, HAS_PW, HAS_W, HAS_IGNORE, HARD, GAMMA_ZERO, SMALL_C, BLOCK)
    g_out = tl.load(gout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(gin_ptr + offs, (grad * g_out).to(gin_ptr.dtype.element_ty), mask=mask)


def _operands(input, target, alpha, pos_weight, weight, gamma, alpha_value,
              label_smoothing, ignore_index):
    """Kernel arguments shared by the forward and backward launches."""
    rows, cols = rows_cols(input.shape)
    t = flat_target(target)
    placeholder = t  # never read: its flag is off
    a, a_sr, a_sc = as_rows(alpha, input.shape, rows, cols)
    pw, pw_sr, pw_sc = as_rows(pos_weight, input.shape, rows, cols)
    w, w_sr, w_sc = as_rows(weight, input.shape, rows, cols)
    alpha_mode = 2 if alpha is not None else (1 if alpha_value is not None else 0)
    args = (input.contiguous(), t, placeholder if a is None else a,
            placeholder if pw is None else pw, placeholder if w is None else w)
    sizes = (max(cols, 1), 1.0 / max(cols, 1), a_sr, a_sc, pw_sr, pw_sc, w_sr, w_sc,
             float(gamma), float(alpha_value or 0.0), float(label_smoothing),
             float(ignore_index if ignore_index is not None else 0))
    flags = dict(ALPHA_MODE=alpha_mode, HAS_PW=pos_weight is not None,
                 HAS_W=weight is not None, HAS_IGNORE=ignore_index is not None,
                 HARD=not target.is_floating_point() and label_smoothing == 0.0,
                 GAMMA_ZERO=gamma == 0.0, SMALL_C=cols < BLOCK, BLOCK=BLOCK,
                 num_warps=NUM_WARPS)
    return args, sizes, flags


@triton_op("fused_losses::focal_bce_triton_fwd", mutates_args=())
def focal_bce_triton_fwd(input: torch.Tensor, target: torch.Tensor,
                         alpha: Optional[torch.Tensor], pos_weight: Optional[torch.Tensor],
                         weight: Optional[torch.Tensor], gamma: float,
                         alpha_value: Optional[float], label_smoothing: float,
                         ignore_index: Optional[int], reduction: str,
                         compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, grad, scale).

    ``grad`` is d(loss)/d(input) for ``mean``/``sum`` when ``compute_grad``
    (else empty); the true gradient is ``grad * grad_output * scale``, where
    ``scale`` is 1/count for a mean over non-ignored elements and 1 otherwise.
    """
    numel = input.numel()
    args, sizes, flags = _operands(input, target, alpha, pos_weight, weight, gamma,
                                   alpha_value, label_smoothing, ignore_index)
    reduce = reduction != "none"
    mean = reduction == "mean"
    write_grad = reduce and compute_grad
    n_prog = triton.cdiv(numel, BLOCK)
    device = input.device
    out, grad, scale = fused_outputs(input, reduction, compute_grad)
    psum = torch.empty((n_prog if reduce else 0,), dtype=torch.float32, device=device)
    pcnt = torch.empty((n_prog if reduce else 0,), dtype=torch.int32, device=device)
    # A mean without ignore_index has a host-known divisor: fold it in here.
    grad_scale = 1.0 / numel if (mean and ignore_index is None and numel) else 1.0
    if n_prog:
        wrap_triton(_focal_bce_fwd_kernel)[(n_prog,)](
            *args, out, grad, psum, pcnt, numel, *sizes, grad_scale,
            REDUCE=reduce, WRITE_GRAD=write_grad, **flags)
    if reduce:
        launch_sum_partials(wrap_triton, psum, pcnt, out, scale, mean,
                            clamp_count=ignore_index is not None)
    else:
        scale.fill_(1.0)
    return out, grad, scale


@triton_op("fused_losses::focal_bce_triton_bwd", mutates_args=())
def focal_bce_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor,
                         target: torch.Tensor, alpha: Optional[torch.Tensor],
                         pos_weight: Optional[torch.Tensor], weight: Optional[torch.Tensor],
                         gamma: float, alpha_value: Optional[float], label_smoothing: float,
                         ignore_index: Optional[int]) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``, in one pass."""
    numel = input.numel()
    args, sizes, flags = _operands(input, target, alpha, pos_weight, weight, gamma,
                                   alpha_value, label_smoothing, ignore_index)
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    n_prog = triton.cdiv(numel, BLOCK)
    if n_prog:
        wrap_triton(_focal_bce_bwd_kernel)[(n_prog,)](
            *args, grad_output.contiguous(), grad_input, numel, *sizes, **flags)
    return grad_input


# Explicit fake kernels: shapes only, so FakeTensor tracing never launches
# anything (the auto-derived fake would run the interpreter on CPU).
@focal_bce_triton_fwd.register_fake
def _(input, target, alpha, pos_weight, weight, gamma, alpha_value, label_smoothing,
      ignore_index, reduction, compute_grad):
    return fused_outputs(input, reduction, compute_grad)


focal_bce_triton_bwd.register_fake(backward_fake)

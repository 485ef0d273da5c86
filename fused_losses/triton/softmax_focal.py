"""Fused softmax focal loss in Triton: one program per row, online softmax.

Pass one over the row's column blocks keeps the running max, the sum-exp, the
sum-exp without the target class and (with label smoothing) Σ α_c·x_c; the row
loss follows. Pass two writes d(loss)/d(input) when a gradient is needed
(``mean``/``sum`` forward), or the gradient times grad_output[row] (the
``none`` backward). See ``fused_losses.reference.softmax_focal`` for the
formula and ``_softmax.py`` for the shared row machinery.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .._layout import backward_fake, class_layout, row_outputs
from ._reduce import launch_sum_rows
from ._softmax import (block_c, class_row_base, online_row_stats, target_logit,
                       write_row_grad)


@triton.jit
def _softmax_focal_row(x_ptr, t_ptr, a_ptr, g_ptr, gout_ptr, row, C, D, gamma, smoothing,
                       ignore, HAS_A: tl.constexpr, HAS_IGNORE: tl.constexpr,
                       SMOOTH: tl.constexpr, GAMMA_ZERO: tl.constexpr,
                       WRITE_GRAD: tl.constexpr, HAS_GOUT: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """(loss, α_y) of one row; 0 and 0 for an ignored row, NaN loss for an
    out-of-range target. Writes the row's gradient when WRITE_GRAD."""
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    gamma, smoothing = tl.cast(gamma, tl.float32), tl.cast(smoothing, tl.float32)
    base = class_row_base(row, C, D)
    y, x_y, in_range, y_raw = target_logit(x_ptr, t_ptr, row, base, D, C)
    keep = y_raw == y_raw  # a True scalar
    if HAS_IGNORE:
        keep = y_raw != ignore
    m, s, s_other, ax, a_sum = online_row_stats(x_ptr, a_ptr, base, D, C, y, HAS_A, SMOOTH,
                                                BLOCK_C)
    log_s = tl.log(s)
    lse = m + log_s
    log_py = tl.minimum(x_y - lse, 0.0)
    w_y = 1.0
    if HAS_A:
        w_y = tl.load(a_ptr + y).to(tl.float32)
    ce = -w_y * log_py
    n_cls = tl.cast(C, tl.float32)
    if SMOOTH:
        ce = (1.0 - smoothing) * ce + smoothing / n_cls * (a_sum * lse - ax)
    f = 1.0
    if not GAMMA_ZERO:
        f = tl.exp(gamma * (tl.log(s_other) - log_s))
    loss = f * ce
    if WRITE_GRAD:
        scale = 1.0
        if HAS_GOUT:
            scale = tl.load(gout_ptr + row).to(tl.float32)
        scale = tl.where(in_range, scale, float("nan"))
        big_g = 0.0
        if not GAMMA_ZERO:
            big_g = gamma * f * tl.exp(log_py) * ce
        c_p = f * (1.0 - smoothing) * w_y
        c_a = 0.0
        if SMOOTH:
            c_p += f * smoothing * a_sum / n_cls
            c_a = f * smoothing / n_cls
        c_y = -(f * (1.0 - smoothing) * w_y + big_g)
        write_row_grad(x_ptr, g_ptr, a_ptr, base, D, C, y, m, 1.0 / s, 1.0 / s_other,
                       c_p * scale, big_g * scale, c_a * scale, c_y * scale, keep,
                       HAS_A, BLOCK_C)
    loss = tl.where(in_range, loss, float("nan"))
    return tl.where(keep, loss, 0.0), tl.where(keep, w_y, 0.0)


@triton.jit
def _softmax_focal_fwd_kernel(x_ptr, t_ptr, a_ptr, rows_ptr, w_ptr, g_ptr, C, D,
                              gamma, smoothing, ignore, HAS_A: tl.constexpr,
                              HAS_IGNORE: tl.constexpr, SMOOTH: tl.constexpr,
                              GAMMA_ZERO: tl.constexpr, WRITE_GRAD: tl.constexpr,
                              WRITE_W: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    loss, w = _softmax_focal_row(x_ptr, t_ptr, a_ptr, g_ptr, g_ptr, row, C, D, gamma,
                                 smoothing, ignore, HAS_A, HAS_IGNORE, SMOOTH, GAMMA_ZERO,
                                 WRITE_GRAD, False, BLOCK_C)
    tl.store(rows_ptr + row, loss.to(rows_ptr.dtype.element_ty))
    if WRITE_W:
        tl.store(w_ptr + row, w)


@triton.jit
def _softmax_focal_bwd_kernel(x_ptr, t_ptr, a_ptr, gout_ptr, g_ptr, C, D, gamma, smoothing,
                              ignore, HAS_A: tl.constexpr, HAS_IGNORE: tl.constexpr,
                              SMOOTH: tl.constexpr, GAMMA_ZERO: tl.constexpr,
                              BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    _softmax_focal_row(x_ptr, t_ptr, a_ptr, g_ptr, gout_ptr, row, C, D, gamma, smoothing,
                       ignore, HAS_A, HAS_IGNORE, SMOOTH, GAMMA_ZERO, True, True, BLOCK_C)


def _operands(input, target, alpha, gamma, ignore_index, label_smoothing):
    rows, cols, spatial = class_layout(input.shape)
    t = target.contiguous()
    a = t if alpha is None else alpha.contiguous()  # placeholder: never read without HAS_A
    block, warps = block_c(cols)
    sizes = (cols, spatial, float(gamma), float(label_smoothing),
             int(ignore_index if ignore_index is not None else 0))
    flags = dict(HAS_A=alpha is not None, HAS_IGNORE=ignore_index is not None,
                 SMOOTH=label_smoothing != 0.0, GAMMA_ZERO=gamma == 0.0, BLOCK_C=block,
                 num_warps=warps)
    return rows, (input.contiguous(), t, a), sizes, flags


@triton_op("fused_losses::softmax_focal_triton_fwd", mutates_args=())
def softmax_focal_triton_fwd(input: torch.Tensor, target: torch.Tensor,
                             alpha: Optional[torch.Tensor], gamma: float,
                             ignore_index: Optional[int], label_smoothing: float,
                             reduction: str, compute_grad: bool
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, grad, scale): the (loss, grad, scale) protocol of ops/_fused.py.

    ``grad`` (``mean``/``sum`` with ``compute_grad``) is unscaled; ``scale`` is
    1/Σ α_y (the count of kept rows without α) for ``mean``, 1 otherwise.
    """
    rows, args, sizes, flags = _operands(input, target, alpha, gamma, ignore_index,
                                         label_smoothing)
    reduce = reduction != "none"
    out, grad, scale = row_outputs(input, target, reduction, compute_grad)
    per_row = torch.empty((rows,), dtype=torch.float32, device=input.device) if reduce else out
    mean = reduction == "mean"
    w = torch.empty((rows,), dtype=torch.float32, device=input.device) if mean else None
    if rows:
        wrap_triton(_softmax_focal_fwd_kernel)[(rows,)](
            *args, per_row, per_row if w is None else w, grad, *sizes,
            WRITE_GRAD=reduce and compute_grad, WRITE_W=mean, **flags)
    if reduce:
        launch_sum_rows(wrap_triton, per_row, w, out, scale, mean)
    else:
        scale.fill_(1.0)
    return out, grad, scale


@triton_op("fused_losses::softmax_focal_triton_bwd", mutates_args=())
def softmax_focal_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor,
                             target: torch.Tensor, alpha: Optional[torch.Tensor],
                             gamma: float, ignore_index: Optional[int],
                             label_smoothing: float) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``, one row per program."""
    rows, args, sizes, flags = _operands(input, target, alpha, gamma, ignore_index,
                                         label_smoothing)
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    if rows:
        wrap_triton(_softmax_focal_bwd_kernel)[(rows,)](
            *args, grad_output.contiguous(), grad_input, *sizes, **flags)
    return grad_input


@softmax_focal_triton_fwd.register_fake
def _(input, target, alpha, gamma, ignore_index, label_smoothing, reduction, compute_grad):
    return row_outputs(input, target, reduction, compute_grad)


softmax_focal_triton_bwd.register_fake(backward_fake)

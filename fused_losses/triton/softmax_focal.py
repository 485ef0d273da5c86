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
from torch.library import triton_op

from .._layout import class_layout
from ..spec.softmax_focal import SPEC
from ._launch import rows_backward, rows_forward
from ._softmax import (block_c, class_row_base, online_row_stats, store_row, target_logit,
                       write_row_grad)


@triton.jit
def _softmax_focal_kernel(x_ptr, t_ptr, a_ptr, rows_ptr, w_ptr, g_ptr, gout_ptr, C, D, gamma,
                          smoothing, ignore, grad_scale, HAS_A: tl.constexpr,
                          HAS_IGNORE: tl.constexpr, SMOOTH: tl.constexpr,
                          GAMMA_ZERO: tl.constexpr, WRITE_GRAD: tl.constexpr,
                          WRITE_W: tl.constexpr, BACKWARD: tl.constexpr, BLOCK_C: tl.constexpr):
    """Forward: the row's loss (0 when ignored, NaN for an out-of-range target)
    and, with WRITE_W, its weight α_y (0 when ignored); with WRITE_GRAD its
    gradient times grad_scale. BACKWARD: only the gradient times grad_output[row]."""
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
        scale = tl.cast(grad_scale, tl.float32)
        if BACKWARD:
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
    if not BACKWARD:
        loss = tl.where(in_range, loss, float("nan"))
        store_row(rows_ptr, w_ptr, row, tl.where(keep, loss, 0.0), tl.where(keep, w_y, 0.0),
                  WRITE_W)


def _launch_args(input, target, alpha, options):
    """(rows, pointers, sizes, flags) shared by the forward and backward."""
    o = SPEC.decode(options)
    rows, cols, spatial = class_layout(input.shape)
    t = target.contiguous()
    a = t if alpha is None else alpha.contiguous()  # placeholder: never read without HAS_A
    block, warps = block_c(cols)
    ignore = o.ignore_index
    sizes = (cols, spatial, o.gamma, o.label_smoothing, int(ignore if ignore is not None else 0))
    flags = dict(HAS_A=alpha is not None, HAS_IGNORE=ignore is not None,
                 SMOOTH=o.label_smoothing != 0.0, GAMMA_ZERO=o.gamma == 0.0, BLOCK_C=block,
                 num_warps=warps)
    return rows, (input.contiguous(), t, a), sizes, flags


@triton_op("fused_losses::softmax_focal_triton_fwd", mutates_args=())
def softmax_focal_triton_fwd(input: torch.Tensor, target: torch.Tensor,
                             alpha: Optional[torch.Tensor], options: list[float],
                             reduction: str, compute_grad: bool
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, grad, scale): the protocol of ``ops/_protocols.py``.

    ``grad`` (``mean``/``sum`` with ``compute_grad``) is unscaled; ``scale`` is
    1/Σ α_y (the count of kept rows without α) for ``mean``, 1 otherwise.
    """
    rows, pointers, sizes, flags = _launch_args(input, target, alpha, options)
    return rows_forward(_softmax_focal_kernel, input, target, rows, pointers, sizes, flags,
                        reduction, compute_grad, weighted=True)


@triton_op("fused_losses::softmax_focal_triton_bwd", mutates_args=())
def softmax_focal_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor,
                             target: torch.Tensor, alpha: Optional[torch.Tensor],
                             options: list[float]) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``, one row per program."""
    rows, pointers, sizes, flags = _launch_args(input, target, alpha, options)
    return rows_backward(_softmax_focal_kernel, grad_output, input, rows, pointers, sizes,
                         flags)

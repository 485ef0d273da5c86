"""Fused sigmoid focal BCE in Triton: the kernel and its registered ops.

Forward (``mean``/``sum``): one pass reads logits and targets once, writes one
loss partial per program and, when a gradient is needed, d(loss)/d(input)
already scaled by the reduction; the backward only multiplies by
``grad_output``. Forward (``none``) writes the loss; its backward recomputes
in one pass, through the same kernel (``_launch.py``). Maths are in
``_math.py``; see ``fused_losses.reference.focal_bce`` for the formula.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..spec.focal_bce import SPEC
from ._launch import broadcast_operands, elementwise_backward, elementwise_forward
from ._math import focal_factor, load_rc, load_xt, rescale_rc, row_col, sigmoid_terms
from ._reduce import write_tile


@triton.jit
def _focal_bce_kernel(x_ptr, t_ptr, a_ptr, pw_ptr, w_ptr, out_ptr, grad_ptr, psum_ptr, pcnt_ptr,
                      gout_ptr, numel, C, inv_c, a_sr, a_sc, pw_sr, pw_sc, w_sr, w_sc,
                      gamma, alpha, smoothing, ignore, grad_scale,
                      ALPHA_MODE: tl.constexpr, HAS_PW: tl.constexpr, HAS_W: tl.constexpr,
                      HAS_IGNORE: tl.constexpr, HARD: tl.constexpr, GAMMA_ZERO: tl.constexpr,
                      SMALL_C: tl.constexpr, REDUCE: tl.constexpr, WRITE_GRAD: tl.constexpr,
                      BACKWARD: tl.constexpr, BLOCK: tl.constexpr):
    """Loss and d loss/dx of one tile, both 0 where not ``keep`` (padding or
    ignored), written as ``_reduce.write_tile`` says."""
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    gamma, alpha = tl.cast(gamma, tl.float32), tl.cast(alpha, tl.float32)
    smoothing, ignore = tl.cast(smoothing, tl.float32), tl.cast(ignore, tl.float32)
    pid = tl.program_id(0).to(tl.int64)
    start = pid * BLOCK
    x, t, offs, mask = load_xt(x_ptr, t_ptr, start, numel, BLOCK)
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
        loss, grad = rescale_rc(loss, grad, w_ptr, row, col, w_sr, w_sc, mask)
    write_tile(pid, offs, mask, keep, tl.where(keep, loss, 0.0), tl.where(keep, grad, 0.0),
               out_ptr, grad_ptr, psum_ptr, pcnt_ptr, gout_ptr, grad_scale, REDUCE, WRITE_GRAD,
               True, BACKWARD)


def _launch_args(input, target, alpha, pos_weight, weight, options):
    """(pointers, sizes, flags, decoded options) shared by the forward and backward."""
    o = SPEC.decode(options)
    pointers, sizes, flags = broadcast_operands(input, target, alpha, pos_weight, weight)
    ignore = o.ignore_index
    scalars = (o.gamma, o.alpha or 0.0, o.label_smoothing,
               float(ignore if ignore is not None else 0))
    flags.update(ALPHA_MODE=2 if alpha is not None else (1 if o.alpha is not None else 0),
                 HAS_PW=pos_weight is not None, HAS_W=weight is not None,
                 HAS_IGNORE=ignore is not None,
                 HARD=not target.is_floating_point() and o.label_smoothing == 0.0,
                 GAMMA_ZERO=o.gamma == 0.0)
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

"""Fused GHM-C in Triton: histogram pass, device-side bin weights, loss pass.

1. ``ghmc_triton_hist``: each program bins its tile with ``tl.histogram``
   (slots padded to a power of two; spare slots take padding and invalid
   lanes) and adds its integer counts into ``hist`` (integer atomics: order
   cannot change a sum of integers, so the result is deterministic).
2. ``ghmc_triton_weights``: one tiny program turns ``hist`` into per-bin
   weights and updates the EMA state ``acc_sum`` in place.
3. ``ghmc_triton_fwd``: recomputes σ and the bin (cheaper than storing a
   byte per element and reading it back), writes the loss partials and, for
   ``mean``/``sum``, the gradient. Its backward only scales that gradient.

See ``fused_losses.reference.ghmc`` for the formula.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .._layout import as_rows, backward_fake, flat_target, fused_outputs, rows_cols
from ._math import load_rc, row_col, sigmoid_terms
from ._reduce import launch_sum_partials

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _bin_edge(i, bins):
    """fp32 edge i of mmdet's edges: i/bins (IEEE-rounded), the last raised by 1e-6."""
    edge = tl.math.div_rn(i.to(tl.float32), tl.zeros_like(i).to(tl.float32) + bins)
    return tl.where(i >= bins, 1.0 + 1e-6, edge)


@triton.jit
def _ghmc_tile(x_ptr, t_ptr, lw_ptr, start, numel, C, inv_c, lw_sr, lw_sc, bins,
               HAS_LW: tl.constexpr, SMALL_C: tl.constexpr, BLOCK: tl.constexpr):
    """Per element: (x, t, σ(x), σ(-x), log σ(x), log σ(-x), bin, in_bin, valid, offs, mask).

    ``bin`` is exact against the fp32 edges: a float estimate corrected by one
    comparison each way.
    """
    offs = start + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + offs, mask=mask, other=0).to(tl.float32)
    valid = mask
    if HAS_LW:
        row, col = row_col(start, C, inv_c, BLOCK, SMALL_C)
        valid = mask & (load_rc(lw_ptr, row, col, lw_sr, lw_sc, mask) > 0.0)
    log_p, log_n, s_p, s_n = sigmoid_terms(x)
    g = tl.abs(s_p - t)
    b = tl.minimum(tl.maximum((g * bins).to(tl.int32), 0), bins - 1)
    b = tl.where(g < _bin_edge(b, bins), b - 1, tl.where(g >= _bin_edge(b + 1, bins), b + 1, b))
    in_bin = valid & (b >= 0) & (b < bins) & (g >= _bin_edge(b, bins)) & (g < _bin_edge(b + 1, bins))
    return x, t, s_p, s_n, log_p, log_n, b, in_bin, valid, offs, mask


@triton.jit
def _ghmc_hist_kernel(x_ptr, t_ptr, lw_ptr, hist_ptr, numel, C, inv_c, lw_sr, lw_sc, bins,
                      HAS_LW: tl.constexpr, SMALL_C: tl.constexpr, SLOTS: tl.constexpr,
                      BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    _, _, _, _, _, _, b, in_bin, valid, _, _ = _ghmc_tile(
        x_ptr, t_ptr, lw_ptr, start, numel, C, inv_c, lw_sr, lw_sc, bins, HAS_LW, SMALL_C, BLOCK)
    # Slot `bins`: valid but in no bin (g past the last edge, NaN); SLOTS-1: not counted.
    slot = tl.where(in_bin, b, tl.where(valid, bins, SLOTS - 1))
    counts = tl.histogram(slot, SLOTS)
    idx = tl.arange(0, SLOTS)
    tl.atomic_add(hist_ptr + idx, counts.to(tl.int64), mask=idx <= bins)


@triton.jit
def _ghmc_weights_kernel(hist_ptr, acc_ptr, w_ptr, bins, momentum, one_minus_momentum,
                         HAS_MOMENTUM: tl.constexpr, MEAN: tl.constexpr, SLOTS: tl.constexpr):
    """w_b = tot / (count_b or the EMA), ÷ non-empty bins, ÷ tot for a mean."""
    # torch.compile passes Python floats as fp64 scalars: keep the maths in fp32.
    momentum, one_minus_momentum = tl.cast(momentum, tl.float32), tl.cast(one_minus_momentum, tl.float32)
    idx = tl.arange(0, SLOTS)
    is_bin = idx < bins
    hist = tl.load(hist_ptr + idx, mask=idx <= bins, other=0)
    tot = tl.maximum(tl.sum(hist, axis=0), 1).to(tl.float32)
    count = tl.where(is_bin, hist, 0).to(tl.float32)
    nonempty = is_bin & (count > 0.0)
    n = tl.maximum(tl.sum(nonempty.to(tl.int32), axis=0), 1).to(tl.float32)
    if HAS_MOMENTUM:
        acc = tl.load(acc_ptr + idx, mask=is_bin, other=1.0)
        acc = tl.where(nonempty, momentum * acc + one_minus_momentum * count, acc)
        tl.store(acc_ptr + idx, acc, mask=is_bin)
        denom = acc
    else:
        denom = tl.where(nonempty, count, 1.0)
    # IEEE division (Triton's `/` is approximate) to match torch's fp32 maths.
    tot_v = tl.zeros([SLOTS], dtype=tl.float32) + tot
    w = tl.where(nonempty, tl.math.div_rn(tot_v, denom), 0.0)
    w = tl.math.div_rn(w, tl.zeros([SLOTS], dtype=tl.float32) + n)
    if MEAN:
        w = tl.math.div_rn(w, tot_v)
    tl.store(w_ptr + idx, w, mask=is_bin)


@triton.jit
def _ghmc_fwd_kernel(x_ptr, t_ptr, lw_ptr, w_ptr, out_ptr, grad_ptr, psum_ptr, numel, C, inv_c,
                     lw_sr, lw_sc, bins, HAS_LW: tl.constexpr, SMALL_C: tl.constexpr,
                     REDUCE: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    loss, grad, offs, mask = _ghmc_loss_grad(x_ptr, t_ptr, lw_ptr, w_ptr, pid * BLOCK, numel, C,
                                             inv_c, lw_sr, lw_sc, bins, HAS_LW, SMALL_C, BLOCK)
    if REDUCE:
        tl.store(psum_ptr + pid, tl.sum(tl.where(mask, loss, 0.0), axis=0))
        if WRITE_GRAD:
            tl.store(grad_ptr + offs, grad.to(grad_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + offs, loss.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _ghmc_bwd_kernel(x_ptr, t_ptr, lw_ptr, w_ptr, gout_ptr, gin_ptr, numel, C, inv_c,
                     lw_sr, lw_sc, bins, HAS_LW: tl.constexpr, SMALL_C: tl.constexpr,
                     BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    _, grad, offs, mask = _ghmc_loss_grad(x_ptr, t_ptr, lw_ptr, w_ptr, pid * BLOCK, numel, C,
                                          inv_c, lw_sr, lw_sc, bins, HAS_LW, SMALL_C, BLOCK)
    g_out = tl.load(gout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(gin_ptr + offs, (grad * g_out).to(gin_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _ghmc_loss_grad(x_ptr, t_ptr, lw_ptr, w_ptr, start, numel, C, inv_c, lw_sr, lw_sc, bins,
                    HAS_LW: tl.constexpr, SMALL_C: tl.constexpr, BLOCK: tl.constexpr):
    """(w·bce, w·(σ(x) - t), offs, mask); w = 0 outside every bin, as a product
    so that a NaN logit still reaches the loss."""
    x, t, s_p, s_n, log_p, log_n, b, in_bin, _, offs, mask = _ghmc_tile(
        x_ptr, t_ptr, lw_ptr, start, numel, C, inv_c, lw_sr, lw_sc, bins, HAS_LW, SMALL_C, BLOCK)
    w = tl.load(w_ptr + b, mask=in_bin, other=0.0)
    loss = -w * (t * log_p + (1.0 - t) * log_n)
    return loss, w * ((1.0 - t) * s_p - t * s_n), offs, mask


def _slots(bins: int) -> int:
    return triton.next_power_of_2(bins + 2)


def _operands(input, target, label_weight):
    rows, cols = rows_cols(input.shape)
    t = flat_target(target)
    lw = None
    if label_weight is not None:
        lw = label_weight.view(torch.uint8) if label_weight.dtype == torch.bool else label_weight
    lw, lw_sr, lw_sc = as_rows(lw, input.shape, rows, cols)
    args = (input.contiguous(), t, t if lw is None else lw)
    sizes = (max(cols, 1), 1.0 / max(cols, 1), lw_sr, lw_sc)
    flags = dict(HAS_LW=label_weight is not None, SMALL_C=cols < BLOCK, BLOCK=BLOCK,
                 num_warps=NUM_WARPS)
    return args, sizes, flags


@triton_op("fused_losses::ghmc_triton_hist", mutates_args=())
def ghmc_triton_hist(input: torch.Tensor, target: torch.Tensor,
                     label_weight: Optional[torch.Tensor], bins: int) -> torch.Tensor:
    """int64 [bins + 1]: valid elements per bin, then valid elements in no bin."""
    hist = torch.zeros(bins + 1, dtype=torch.int64, device=input.device)
    args, sizes, flags = _operands(input, target, label_weight)
    n_prog = triton.cdiv(input.numel(), BLOCK)
    if n_prog:
        wrap_triton(_ghmc_hist_kernel)[(n_prog,)](*args, hist, input.numel(), *sizes, bins,
                                                  SLOTS=_slots(bins), **flags)
    return hist


@triton_op("fused_losses::ghmc_triton_weights", mutates_args=("acc_sum",))
def ghmc_triton_weights(hist: torch.Tensor, acc_sum: Optional[torch.Tensor], momentum: float,
                        mean: bool) -> torch.Tensor:
    """fp32 [bins] weights; with momentum > 0 updates ``acc_sum`` in place."""
    bins = hist.numel() - 1
    weights = torch.empty(bins, dtype=torch.float32, device=hist.device)
    has_momentum = momentum > 0
    wrap_triton(_ghmc_weights_kernel)[(1,)](
        hist, acc_sum if has_momentum else weights, weights, bins, float(momentum),
        float(1.0 - momentum), HAS_MOMENTUM=has_momentum, MEAN=mean, SLOTS=_slots(bins))
    return weights


@triton_op("fused_losses::ghmc_triton_fwd", mutates_args=())
def ghmc_triton_fwd(input: torch.Tensor, target: torch.Tensor,
                    label_weight: Optional[torch.Tensor], weights: torch.Tensor, bins: int,
                    reduction: str, compute_grad: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, grad, scale) in the protocol of ``ops/_fused.py``; scale is 1
    because a mean's 1/tot is already inside ``weights``."""
    numel = input.numel()
    reduce = reduction != "none"
    out, grad, scale = fused_outputs(input, reduction, compute_grad)
    args, sizes, flags = _operands(input, target, label_weight)
    n_prog = triton.cdiv(numel, BLOCK)
    psum = torch.empty((n_prog if reduce else 0,), dtype=torch.float32, device=input.device)
    if n_prog:
        wrap_triton(_ghmc_fwd_kernel)[(n_prog,)](
            *args, weights, out, grad, psum, numel, *sizes, bins, REDUCE=reduce,
            WRITE_GRAD=reduce and compute_grad, **flags)
    if reduce:
        launch_sum_partials(wrap_triton, psum, psum, out, scale, mean=False, clamp_count=False)
    else:
        scale.fill_(1.0)
    return out, grad, scale


@triton_op("fused_losses::ghmc_triton_bwd", mutates_args=())
def ghmc_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                    label_weight: Optional[torch.Tensor], weights: torch.Tensor,
                    bins: int) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``, in one pass."""
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    args, sizes, flags = _operands(input, target, label_weight)
    n_prog = triton.cdiv(input.numel(), BLOCK)
    if n_prog:
        wrap_triton(_ghmc_bwd_kernel)[(n_prog,)](*args, weights, grad_output.contiguous(),
                                                 grad_input, input.numel(), *sizes, bins, **flags)
    return grad_input


@ghmc_triton_hist.register_fake
def _(input, target, label_weight, bins):
    return input.new_empty(bins + 1, dtype=torch.int64)


@ghmc_triton_weights.register_fake
def _(hist, acc_sum, momentum, mean):
    return hist.new_empty(hist.numel() - 1, dtype=torch.float32)


@ghmc_triton_fwd.register_fake
def _(input, target, label_weight, weights, bins, reduction, compute_grad):
    return fused_outputs(input, reduction, compute_grad)


ghmc_triton_bwd.register_fake(backward_fake)

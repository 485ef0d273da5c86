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

from ..spec.ghmc import SPEC
from ._launch import BLOCK, broadcast_operands, elementwise_backward, elementwise_forward
from ._math import load_rc, load_xt, row_col, sigmoid_terms
from ._reduce import finish_program, store_tile


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
    x, t, offs, mask = load_xt(x_ptr, t_ptr, start, numel, BLOCK)
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
def _ghmc_kernel(x_ptr, t_ptr, lw_ptr, w_ptr, out_ptr, grad_ptr, part_ptr, scale_ptr, gout_ptr,
                 numel, tiles, C, inv_c, lw_sr, lw_sc, bins, grad_scale, HAS_LW: tl.constexpr,
                 SMALL_C: tl.constexpr, REDUCE: tl.constexpr, WRITE_GRAD: tl.constexpr,
                 BACKWARD: tl.constexpr, COUNT: tl.constexpr, FINAL: tl.constexpr,
                 MEAN: tl.constexpr, BLOCK: tl.constexpr):
    """w·bce and w·(σ(x) - t) of ``tiles`` consecutive tiles, stored and reduced as
    ``_reduce.py`` says.

    w = 0 outside every bin, as a product so that a NaN logit still reaches
    the loss. ``grad_scale`` is 1: a mean's 1/tot is inside w.
    """
    pid = tl.program_id(0).to(tl.int64)
    first = pid * tiles * BLOCK
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    lane = tl.arange(0, BLOCK)
    for i in range(tiles):
        start = first + i * BLOCK
        x, t, s_p, s_n, log_p, log_n, b, in_bin, _, offs, mask = _ghmc_tile(
            x_ptr, t_ptr, lw_ptr, start, numel, C, inv_c, lw_sr, lw_sc, bins, HAS_LW, SMALL_C,
            BLOCK)
        w = tl.load(w_ptr + b, mask=in_bin, other=0.0)
        loss = -w * (t * log_p + (1.0 - t) * log_n)
        grad = w * ((1.0 - t) * s_p - t * s_n)
        if REDUCE:  # only the partial needs it: the stores of ``none`` are masked
            loss = tl.where(mask, loss, 0.0)
            acc += loss
        store_tile(lane, mask, loss, grad, out_ptr + start, grad_ptr + start, gout_ptr + start,
                   grad_scale, REDUCE, WRITE_GRAD, BACKWARD)
    finish_program(pid, acc, acc.to(tl.int32), part_ptr, out_ptr, scale_ptr, numel, REDUCE,
                   BACKWARD, COUNT, FINAL, MEAN)


def _slots(bins: int) -> int:
    return triton.next_power_of_2(bins + 2)


def _launch_args(input, target, label_weight, *weights):
    """(pointers, sizes, flags) of the histogram and loss kernels; ``weights``
    (the per-bin weights, for the loss kernel) follow the label weight."""
    lw = label_weight
    if lw is not None and lw.dtype == torch.bool:
        lw = lw.view(torch.uint8)
    pointers, sizes, flags, _ = broadcast_operands(input, target, lw)
    flags.update(HAS_LW=label_weight is not None)
    return pointers + weights, sizes, flags


@triton_op("fused_losses::ghmc_triton_hist", mutates_args=())
def ghmc_triton_hist(input: torch.Tensor, target: torch.Tensor,
                     label_weight: Optional[torch.Tensor], options: list[float]) -> torch.Tensor:
    """int64 [bins + 1]: valid elements per bin, then valid elements in no bin."""
    bins = SPEC.decode(options).bins
    hist = torch.zeros(bins + 1, dtype=torch.int64, device=input.device)
    pointers, sizes, flags = _launch_args(input, target, label_weight)
    n_prog = triton.cdiv(input.numel(), BLOCK)
    if n_prog:
        wrap_triton(_ghmc_hist_kernel)[(n_prog,)](*pointers, hist, input.numel(), *sizes, bins,
                                                  SLOTS=_slots(bins), **flags)
    return hist


@triton_op("fused_losses::ghmc_triton_weights", mutates_args=("acc_sum",))
def ghmc_triton_weights(hist: torch.Tensor, acc_sum: Optional[torch.Tensor],
                        options: list[float], mean: bool) -> torch.Tensor:
    """fp32 [bins] weights; with momentum > 0 updates ``acc_sum`` in place."""
    momentum = SPEC.decode(options).momentum
    bins = hist.numel() - 1
    weights = torch.empty(bins, dtype=torch.float32, device=hist.device)
    has_momentum = momentum > 0
    wrap_triton(_ghmc_weights_kernel)[(1,)](
        hist, acc_sum if has_momentum else weights, weights, bins, float(momentum),
        float(1.0 - momentum), HAS_MOMENTUM=has_momentum, MEAN=mean, SLOTS=_slots(bins))
    return weights


@triton_op("fused_losses::ghmc_triton_fwd", mutates_args=())
def ghmc_triton_fwd(input: torch.Tensor, target: torch.Tensor,
                    label_weight: Optional[torch.Tensor], weights: torch.Tensor,
                    options: list[float], reduction: str, compute_grad: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, grad, scale) in the protocol of ``ops/_protocols.py``; scale is 1
    because a mean's 1/tot is already inside ``weights``."""
    pointers, sizes, flags = _launch_args(input, target, label_weight, weights)
    sizes += (SPEC.decode(options).bins,)
    return elementwise_forward(_ghmc_kernel, input, pointers, sizes, flags, reduction,
                               compute_grad, divisor=None)


@triton_op("fused_losses::ghmc_triton_bwd", mutates_args=())
def ghmc_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                    label_weight: Optional[torch.Tensor], weights: torch.Tensor,
                    options: list[float]) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``, in one pass."""
    pointers, sizes, flags = _launch_args(input, target, label_weight, weights)
    sizes += (SPEC.decode(options).bins,)
    return elementwise_backward(_ghmc_kernel, grad_output, input, pointers, sizes, flags)

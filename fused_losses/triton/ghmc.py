"""Fused GHM-C in Triton: histogram pass, device-side bin weights, loss pass.

For logits x and targets t broadcast to [R, C] (flat, contiguous), with
g = |σ(x) - t| and bins [i/bins, (i+1)/bins) on fp32 edges (the last 1 + 1e-6):

1. ``ghmc_triton_hist`` -> int64 ``hist[bins + 1]``: valid elements per bin,
   then valid elements in no bin (NaN g). Each program takes ``tiles``
   consecutive BLOCK tiles (``_launch.tiles_per_program``), counts in
   registers and adds its integer counts into ``hist`` once (integer atomics:
   order cannot change a sum of integers, so the result is deterministic).
   Up to 24 bins, each lane keeps its counts packed in 5-bit fields of up to
   four int32 words (a lane sees at most MAX_TILES = 16 elements); more bins
   use ``tl.histogram`` per tile.
2. ``ghmc_triton_weights``: one tiny program turns ``hist`` into per-bin
   weights w_b = tot/count_b/n (÷ tot for a mean) and updates the EMA state
   ``acc_sum`` in place.
3. ``ghmc_triton_fwd``: recomputes g and the bin (cheaper than storing a
   byte per element and reading it back): loss = w_b·bce(x, t) and
   d loss/dx = w_b·(σ(x) - t), loss partials as ``_reduce.py`` says; its
   backward only scales that gradient.

Both passes bin through ``ghmc_g`` and ``ghmc_bin`` on the same fast maths,
so an element lands in the same bin in both. Hard targets (bool/int) take
z = ±x: g = σ(-z), bce = softplus(-z); float targets the general form
g = |(1-t)·σ(x) - t·σ(-x)|, equal bit for bit at t = 0 or 1. label_weight
is absent, scalar, per-class (by column) or general (``_math.operand_tile``).
See ``fused_losses.reference.ghmc`` for the formula.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from ..spec.ghmc import SPEC
from ._launch import (BLOCK, broadcast_operands, elementwise_backward, elementwise_forward,
                      tiles_per_program)
from ._math import (load_tile, log1p_mid, operand_scalar, operand_tile, sigmoid_parts, tile_cols,
                    wrap_col)
from ._reduce import finish_program, store_tile

PACKED_BINS = 24  # up to 4 words of 6 five-bit fields per lane


@triton.jit
def _edge(i, r, nb):
    """fp32 i/bins correctly rounded (i a small integer as fp32, r = RN(1/bins)):
    the quotient refined once by an exact FMA residual (checked for every
    i <= bins <= 64 against exact rationals)."""
    q = i * r
    return tl.fma(tl.fma(-q, nb, i), r, q)


@triton.jit
def ghmc_bin(g, bins, nb, r):
    """``(slot, in_bin)``: slot = b with edges[b] <= g < edges[b+1] for g in [0, 1]
    (fp32 edges i/bins; the last, 1 + 1e-6, is above every g); in_bin false for NaN.

    fl(g·bins) is off the true bin by at most one: one comparison each way.
    """
    b0 = tl.minimum(g * nb, nb - 1.0).to(tl.int32)  # minimum: NaN -> bins - 1
    f0 = b0.to(tl.float32)
    b = b0 + tl.where(g < _edge(f0, r, nb), -1, tl.where(g >= _edge(f0 + 1.0, r, nb), 1, 0))
    return tl.minimum(b, bins - 1), g >= 0.0


@triton.jit
def ghmc_g(x, t_raw, HARD: tl.constexpr):
    """``(g, d, e, z, t)``: g = |σ(x) - t|, d = σ(x) - t (= d bce/dx), e = exp(-|x|),
    z = ±x (hard) and the fp32 target (soft)."""
    if HARD:
        one = t_raw != 0
        z = tl.where(one, x, -x)
        e, _, g = sigmoid_parts(z)
        return g, tl.where(one, -g, g), e, z, x
    t = t_raw.to(tl.float32)
    e, s_p, s_n = sigmoid_parts(x)
    d = (1.0 - t) * s_p - t * s_n  # σ(x) - t without the cancellation of 1 - σ(x)
    return tl.abs(d), d, e, x, t


@triton.jit
def _ghmc_valid(lw_ptr, lw, col, start, mask, C, inv_c, lw_sr, lw_sc, LW_MODE: tl.constexpr,
                SMALL_C: tl.constexpr, BLOCK: tl.constexpr):
    """label_weight > 0 on the tile (in range too), or ``mask`` without one."""
    valid = mask
    if LW_MODE != 0:
        v = operand_tile(lw_ptr, lw, col, start, C, inv_c, lw_sr, lw_sc, mask, LW_MODE,
                         SMALL_C, BLOCK)
        if LW_MODE == 1:  # one value: broadcast it before the elementwise test
            v = tl.zeros([BLOCK], dtype=tl.float32) + v
        valid = mask & (v > 0.0)
    return valid


@triton.jit
def _ghmc_hist_kernel(x_ptr, t_ptr, lw_ptr, hist_ptr, numel, tiles, C, inv_c, lw_sr, lw_sc,
                      bins, inv_bins, LW_MODE: tl.constexpr, HARD: tl.constexpr,
                      WORDS: tl.constexpr, SLOTS: tl.constexpr, SMALL_C: tl.constexpr,
                      BLOCK: tl.constexpr):
    """Counts of ``tiles`` consecutive tiles into ``hist`` (bins + 1 int64).

    WORDS > 0: lane counts packed 6 per int32 word (slot s in word s // 6, bits
    5·(s mod 6)); WORDS = 0: ``tl.histogram`` of SLOTS >= bins + 2 slots per tile.
    """
    nb = tl.cast(bins, tl.float32)
    r = tl.cast(inv_bins, tl.float32)
    pid = tl.program_id(0).to(tl.int64)
    first = pid * tiles * BLOCK
    c0, step, jc = tile_cols(first, C, inv_c, BLOCK)
    lw = operand_scalar(lw_ptr, LW_MODE)
    w0 = tl.zeros([BLOCK], dtype=tl.int32)
    w1 = tl.zeros([BLOCK], dtype=tl.int32)
    w2 = tl.zeros([BLOCK], dtype=tl.int32)
    w3 = tl.zeros([BLOCK], dtype=tl.int32)
    n_valid = tl.zeros([BLOCK], dtype=tl.int32)
    hist = tl.zeros([SLOTS], dtype=tl.int32)
    for i in range(tiles):
        start = first + i * BLOCK
        x, t_raw, lane, mask = load_tile(x_ptr, t_ptr, start, numel, BLOCK)
        col = wrap_col(c0 + jc, C)
        c0 = wrap_col(c0 + step, C).to(tl.int32)
        valid = _ghmc_valid(lw_ptr, lw, col, start, mask, C, inv_c, lw_sr, lw_sc, LW_MODE,
                            SMALL_C, BLOCK)
        g, _, _, _, _ = ghmc_g(x, t_raw, HARD)
        slot, in_bin = ghmc_bin(g, bins, nb, r)
        counted = valid & in_bin
        if WORDS > 0:
            if LW_MODE != 0:
                n_valid += valid.to(tl.int32)
            word = slot // 6
            bit = tl.where(counted, 1, 0) << ((slot - word * 6) * 5)
            if WORDS == 1:
                w0 += bit
            else:
                w0 += tl.where(word == 0, bit, 0)
                w1 += tl.where(word == 1, bit, 0)
                if WORDS > 2:
                    w2 += tl.where(word == 2, bit, 0)
                if WORDS > 3:
                    w3 += tl.where(word == 3, bit, 0)
        else:
            # Slot bins: valid but in no bin; SLOTS - 1: not counted.
            hist += tl.histogram(tl.where(counted, slot, tl.where(valid, bins, SLOTS - 1)), SLOTS)
    if WORDS > 0:
        idx = tl.arange(0, 4)
        in_bins = tl.zeros([], dtype=tl.int32)
        for f in tl.static_range(6):
            n = tl.where(idx == 0, tl.sum((w0 >> (5 * f)) & 31, axis=0), 0)
            if WORDS > 1:
                n += tl.where(idx == 1, tl.sum((w1 >> (5 * f)) & 31, axis=0), 0)
            if WORDS > 2:
                n += tl.where(idx == 2, tl.sum((w2 >> (5 * f)) & 31, axis=0), 0)
            if WORDS > 3:
                n += tl.where(idx == 3, tl.sum((w3 >> (5 * f)) & 31, axis=0), 0)
            in_bins += tl.sum(n, axis=0)
            s = idx * 6 + f
            tl.atomic_add(hist_ptr + s, n.to(tl.int64), mask=s < bins)
        if LW_MODE != 0:
            valid_total = tl.sum(n_valid, axis=0)
        else:
            valid_total = tl.minimum(numel - first, tiles * BLOCK).to(tl.int32)
        tl.atomic_add(hist_ptr + bins, (valid_total - in_bins).to(tl.int64))
    else:
        s = tl.arange(0, SLOTS)
        tl.atomic_add(hist_ptr + s, hist.to(tl.int64), mask=s <= bins)


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
                 numel, tiles, C, inv_c, lw_sr, lw_sc, bins, inv_bins, grad_scale,
                 LW_MODE: tl.constexpr, HARD: tl.constexpr, SMALL_C: tl.constexpr,
                 REDUCE: tl.constexpr, WRITE_GRAD: tl.constexpr, BACKWARD: tl.constexpr,
                 COUNT: tl.constexpr, FINAL: tl.constexpr, MEAN: tl.constexpr,
                 BLOCK: tl.constexpr):
    """w_b·bce and w_b·(σ(x) - t) of ``tiles`` consecutive tiles, stored and
    reduced as ``_reduce.py`` says.

    w = 0 outside every bin or where label_weight <= 0, as a product so that a
    NaN logit still reaches the loss. ``grad_scale`` is 1: a mean's 1/tot is
    inside w. Hard padding (x = -inf, t = 0) has g = 0 and a loss of 0.
    """
    nb = tl.cast(bins, tl.float32)
    r = tl.cast(inv_bins, tl.float32)
    pid = tl.program_id(0).to(tl.int64)
    first = pid * tiles * BLOCK
    c0, step, jc = tile_cols(first, C, inv_c, BLOCK)
    lw = operand_scalar(lw_ptr, LW_MODE)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(tiles):
        start = first + i * BLOCK
        x, t_raw, lane, mask = load_tile(x_ptr, t_ptr, start, numel, BLOCK,
                                         float("-inf") if HARD else 0.0)
        col = wrap_col(c0 + jc, C)
        c0 = wrap_col(c0 + step, C).to(tl.int32)
        g, d, e, z, t = ghmc_g(x, t_raw, HARD)
        slot, in_bin = ghmc_bin(g, bins, nb, r)
        if LW_MODE != 0:
            in_bin = in_bin & _ghmc_valid(lw_ptr, lw, col, start, mask, C, inv_c, lw_sr, lw_sc,
                                          LW_MODE, SMALL_C, BLOCK)
        w = tl.load(w_ptr + slot, mask=in_bin, other=0.0)
        l1p = log1p_mid(e)
        if HARD:
            bce = tl.maximum(-z, 0.0) + l1p
        else:
            bce = t * (tl.maximum(-x, 0.0) + l1p) + (1.0 - t) * (tl.maximum(x, 0.0) + l1p)
        loss = w * bce
        if REDUCE:
            if not HARD:  # soft padding (x = 0, t = 0) would add w_b·log 2
                loss = tl.where(mask, loss, 0.0)
            acc += loss
        store_tile(lane, mask, loss, w * d, out_ptr + start, grad_ptr + start, gout_ptr + start,
                   grad_scale, REDUCE, WRITE_GRAD, BACKWARD)
    finish_program(pid, acc, acc.to(tl.int32), part_ptr, out_ptr, scale_ptr, numel, REDUCE,
                   BACKWARD, COUNT, FINAL, MEAN)


def _slots(bins: int) -> int:
    return triton.next_power_of_2(bins + 2)


def _launch_args(input, target, label_weight, *weights):
    """(pointers, sizes, flags) of the histogram and loss kernels; ``weights``
    (the per-bin weights, for the loss kernel) follow the label weight; sizes
    end with bins and RN(1/bins)."""
    lw = label_weight
    if lw is not None and lw.dtype == torch.bool:
        lw = lw.view(torch.uint8)
    pointers, sizes, flags, (lw_mode,) = broadcast_operands(input, target, lw)
    flags.update(LW_MODE=lw_mode, HARD=not target.is_floating_point())
    return pointers + weights, sizes, flags


def _bins(options):
    bins = SPEC.decode(options).bins
    return bins, 1.0 / bins  # RN(1/bins) once rounded to fp32 (checked for bins <= 64)


def hist_plan(input, target, label_weight, options):
    """``(hist, grid, args, constexprs)`` of the histogram pass; shared with
    ``bench/_sass_triton.py``."""
    bins, inv_bins = _bins(options)
    hist = torch.zeros(bins + 1, dtype=torch.int64, device=input.device)
    pointers, sizes, flags = _launch_args(input, target, label_weight)
    numel = input.numel()
    tiles = tiles_per_program(numel)
    words = triton.cdiv(bins, 6) if bins <= PACKED_BINS else 0
    args = (*pointers, hist, numel, tiles, *sizes, bins, inv_bins)
    constexprs = dict(WORDS=words, SLOTS=_slots(bins), **flags)
    return hist, (triton.cdiv(numel, BLOCK * tiles),), args, constexprs


@triton_op("fused_losses::ghmc_triton_hist", mutates_args=())
def ghmc_triton_hist(input: torch.Tensor, target: torch.Tensor,
                     label_weight: Optional[torch.Tensor], options: list[float]) -> torch.Tensor:
    """int64 [bins + 1]: valid elements per bin, then valid elements in no bin."""
    hist, grid, args, constexprs = hist_plan(input, target, label_weight, options)
    if grid[0]:
        wrap_triton(_ghmc_hist_kernel)[grid](*args, **constexprs)
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
    return elementwise_forward(_ghmc_kernel, input, pointers, sizes + _bins(options), flags,
                               reduction, compute_grad, divisor=None)


@triton_op("fused_losses::ghmc_triton_bwd", mutates_args=())
def ghmc_triton_bwd(grad_output: torch.Tensor, input: torch.Tensor, target: torch.Tensor,
                    label_weight: Optional[torch.Tensor], weights: torch.Tensor,
                    options: list[float]) -> torch.Tensor:
    """d(Σ grad_output·loss)/d(input) for ``reduction="none"``, in one pass."""
    pointers, sizes, flags = _launch_args(input, target, label_weight, weights)
    return elementwise_backward(_ghmc_kernel, grad_output, input, pointers,
                                sizes + _bins(options), flags)

"""GHM-C (gradient harmonizing classification loss) in plain PyTorch.

Li, Liu & Wang, "Gradient Harmonized Single-stage Detector", AAAI 2019, as
mmdet's ``GHMC`` computes it. For logits x and targets t ``[..., C]``::

    g      = |σ(x) - t|                       (no gradient through g)
    valid  = label_weight > 0                 (all valid without label_weight)
    bin b  : edges[b] <= g < edges[b+1],  edges[i] = i/bins, edges[bins] = 1 + 1e-6
    tot    = max(#valid, 1)
    w_b    = tot / count_b                    (momentum m = 0)
    w_b    = tot / acc_sum[b],  acc_sum[b] <- m·acc_sum[b] + (1-m)·count_b   (m > 0)
    w_b   /= n                                (n = number of non-empty bins)
    loss   = Σ w_{b(e)} · bce(x_e, t_e) / tot (mean) or Σ (sum) or elementwise (none)

Empty bins keep their ``acc_sum`` entry; invalid elements get weight 0. The
EMA starts from ``acc_sum`` as given (zeros for a fresh module) without the
bias correction of Adam-style EMAs, as mmdet does; see docs/losses.md (GHM-C).

Everything is vectorised over bins with device-side scatter-adds, so there is
no host sync (unlike mmdet's per-bin Python loop).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._math import compute_dtype


def bin_edges(bins: int, device=None) -> torch.Tensor:
    """fp32 edges exactly as mmdet builds them on the CPU: i/bins correctly
    rounded. (Built on the CPU and moved, because CUDA divides a tensor by a
    Python scalar as a multiply by its reciprocal, one rounding off.)"""
    edges = torch.arange(bins + 1).float() / bins
    edges[-1] += 1e-6
    return edges.to(device)


def ghmc_histogram(input, target, label_weight, bins: int):
    """(bin index per element, int64 hist[bins + 1]).

    ``hist[b]`` counts valid elements in bin b, ``hist[bins]`` valid elements
    in no bin (g beyond the last edge, or NaN); the index is ``bins`` for
    those and ``bins + 1`` for invalid elements.
    """
    x = input.detach().to(compute_dtype(input))
    g = (torch.sigmoid(x) - target.to(x.dtype)).abs()
    edges = bin_edges(bins, x.device).to(x.dtype)
    index = torch.bucketize(g, edges, right=True) - 1   # edges[i] <= g < edges[i+1]
    in_bin = (index >= 0) & (index < bins)             # NaN g lands past the end
    index = torch.where(in_bin, index, bins)
    if label_weight is not None:
        index = torch.where((label_weight > 0).expand_as(index), index, bins + 1)
    hist = torch.zeros(bins + 2, dtype=torch.int64, device=x.device)
    hist.scatter_add_(0, index.reshape(-1), torch.ones_like(index.reshape(-1)))
    return index, hist[:bins + 1]


def ghmc_weights(hist: torch.Tensor, acc_sum, momentum: float, mean: bool) -> torch.Tensor:
    """fp32 per-bin weights (÷ tot when ``mean``); updates ``acc_sum`` in place."""
    bins = hist.numel() - 1
    count = hist[:bins].to(torch.float32)
    tot = hist.sum().clamp_min(1).to(torch.float32)
    nonempty = count > 0
    if momentum > 0:
        updated = torch.where(nonempty, momentum * acc_sum + (1 - momentum) * count, acc_sum)
        acc_sum.copy_(updated)
        weight = tot / updated
    else:
        weight = tot / count
    weight = torch.where(nonempty, weight, torch.zeros((), device=weight.device))
    weight = weight / nonempty.sum().clamp_min(1).to(torch.float32)
    return weight / tot if mean else weight


def ghmc_loss(input, target, index, weights, reduction: str) -> torch.Tensor:
    """Σ or elementwise w·bce given the bins and the weights of ``ghmc_weights``."""
    dtype = compute_dtype(input)
    padded = torch.cat([weights.to(dtype), weights.new_zeros(2, dtype=dtype)])
    w = padded[index]
    loss = F.binary_cross_entropy_with_logits(input.to(dtype), target.to(dtype), reduction="none")
    loss = w * loss
    if reduction == "none":
        return loss.to(input.dtype)
    return loss.sum().to(input.dtype)


def ghmc(input, target, *, bins: int = 10, momentum: float = 0.0, acc_sum=None,
         label_weight=None, reduction: str = "mean", process_group=None) -> torch.Tensor:
    """Reference GHM-C; arguments are validated by ``functional``.

    ``process_group`` (a torch.distributed group, or None for no sync) sums the
    histogram over ranks before the weights, so every rank uses the global one.
    Shapes: input, target (and label_weight, broadcast) ``[..., C]``; output
    ``[]`` or ``[..., C]`` for ``reduction="none"``.
    """
    index, hist = ghmc_histogram(input, target, label_weight, bins)
    if process_group is not None:
        torch.distributed.all_reduce(hist, group=process_group)
    weights = ghmc_weights(hist, acc_sum, momentum, reduction == "mean")
    return ghmc_loss(input, target, index, weights, reduction)

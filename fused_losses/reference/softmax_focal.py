"""Softmax focal loss in plain PyTorch: the oracle and CPU fallback.

For logits x of one row (C classes), class index y, p = softmax(x),
per-class weights α (all 1 when ``alpha`` is None) and smoothing ε::

    CE_ε = (1-ε)·(-α_y·log p_y) + (ε/C)·Σ_c (-α_c·log p_c)
    loss = (1 - p_y)^γ · CE_ε

CE_ε is exactly ``F.cross_entropy(weight=α, label_smoothing=ε)``'s per-row
loss, so γ = 0 gives cross-entropy in every mode. The focal factor is the
row's (1 - p_y)^γ and multiplies the whole smoothed row loss (ε = 0:
-α_y·(1-p_y)^γ·log p_y). ``mean`` divides Σ loss by Σ α_y over non-ignored
rows (their count without ``alpha``), as cross_entropy does; 0/0 is NaN, as
in torch. Rows whose target equals ``ignore_index`` give 0. A target outside
[0, C) that is not ignored gives a NaN loss for its row here (the public
functions refuse it first wherever values are checked: see ``_strict.py``).
"""
from __future__ import annotations

import torch

from ._math import class_rows, compute_dtype, pow_from_log, softmax_target_terms


def softmax_focal(input: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0,
                  alpha=None, ignore_index=-100, label_smoothing: float = 0.0,
                  reduction: str = "mean") -> torch.Tensor:
    """Reference softmax focal loss; arguments are already validated.

    Shapes: input ``[N, C]``, ``[N, C, d1, ...]`` or ``[C]``; target ``[N]``,
    ``[N, d1, ...]`` or ``[]`` (class indices); alpha ``[C]`` or None; output
    ``[]`` or target's shape for ``reduction="none"``.
    """
    dtype = compute_dtype(input)
    x, y = class_rows(input.to(dtype), target)
    n_classes = x.shape[-1]
    y = y.long()
    keep = torch.ones_like(y, dtype=torch.bool) if ignore_index is None else y != ignore_index
    in_range = (y >= 0) & (y < n_classes)
    y_safe = torch.where(keep & in_range, y, torch.zeros_like(y))
    logp, log_py, log_q = softmax_target_terms(x, y_safe)
    w = torch.ones_like(log_py) if alpha is None else alpha.to(dtype)[y_safe]
    loss = -w * log_py
    if label_smoothing:
        a = 1.0 if alpha is None else alpha.to(dtype)
        smooth = -(logp * a).sum(-1) / n_classes
        loss = (1.0 - label_smoothing) * loss + label_smoothing * smooth
    if gamma != 0.0:
        loss = loss * pow_from_log(log_q, gamma)
    zero = torch.zeros((), dtype=dtype, device=x.device)
    loss = torch.where(keep, torch.where(in_range, loss, float("nan")), zero)
    if reduction == "none":
        return loss.reshape(target.shape).to(input.dtype)
    total = loss.sum()
    if reduction == "sum":
        return total.to(input.dtype)
    return (total / torch.where(keep, w, zero).sum()).to(input.dtype)

"""Per-sample self-adjusting dice loss (Li et al., ACL 2020) in plain PyTorch.

For logits x of one row, class index y and p = softmax(x)[y]::

    p~   = (1 - p)^α · p
    loss = 1 - (2·p~ + smooth) / (p~ + 1 + smooth)

(1 - p)^α is exp(α·log(1 - p)) with log(1 - p) the log-sum-exp of the other
classes' log-probabilities, so it keeps its digits when p rounds to 1.
"""
from __future__ import annotations

import torch

from ._math import compute_dtype, pow_from_log, softmax_target_terms


def dsc(input: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0, smooth: float = 1.0,
        reduction: str = "mean") -> torch.Tensor:
    """Reference self-adjusting DSC; arguments are already validated.

    Shapes: input ``[N, C]`` logits, target ``[N]`` class indices in [0, C)
    (an out-of-range index gives a NaN loss for its row); output ``[]`` or
    ``[N]`` for ``reduction="none"``.
    """
    dtype = compute_dtype(input)
    x, y = input.to(dtype), target.long()
    in_range = (y >= 0) & (y < x.shape[-1])
    _, log_p, log_q = softmax_target_terms(x, torch.where(in_range, y, torch.zeros_like(y)))
    p_tilde = pow_from_log(log_q, alpha) * torch.exp(log_p)
    loss = 1.0 - (2.0 * p_tilde + smooth) / (p_tilde + 1.0 + smooth)
    loss = torch.where(in_range, loss, float("nan"))
    if reduction == "none":
        return loss.to(input.dtype)
    return (loss.sum() if reduction == "sum" else loss.mean()).to(input.dtype)

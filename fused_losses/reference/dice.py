"""Multilabel soft dice (and the self-adjusting variant) in plain PyTorch.

For logits x and targets t of shape ``[N, C]`` or ``[N, C, d1, ...]`` (classes
on dim 1), per class c, summing over N and every spatial dim::

    p     = σ(x)
    p̃     = (1-p)^α · p                      (α = 0: plain soft dice)
    S_pt  = Σ p̃·t,  S_p = Σ p̃ᵏ,  S_t = Σ tᵏ    (k = 2 if square_denominator else 1)
    dice_c = 1 - (2·S_pt + smooth) / (S_p + S_t + smooth)

and the loss is the mean, the sum, or the ``[C]`` vector (``none``) of dice_c.
α > 0 is the self-adjusting dice of Li et al., "Dice Loss for Data-imbalanced
NLP Tasks" (ACL 2020); k = 2 is the V-Net (Milletari et al. 2016) denominator.
"""
from __future__ import annotations

import torch

from ._math import adjusted_sigmoid, compute_dtype


def reduce_dims(input: torch.Tensor) -> list:
    """Every dim except the class dim 1."""
    return [0] + list(range(2, input.dim()))


def dice_sums(input: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.0,
              square_denominator: bool = False):
    """``(S_pt, S_p, S_t)``, each ``[C]`` in fp32 (fp64 for fp64 logits)."""
    dtype = compute_dtype(input)
    p = adjusted_sigmoid(input.to(dtype), alpha)
    t = target.to(dtype)
    dims = reduce_dims(input)
    if square_denominator:
        return (p * t).sum(dims), (p * p).sum(dims), (t * t).sum(dims)
    return (p * t).sum(dims), p.sum(dims), t.sum(dims)


def dice_from_sums(s_pt, s_p, s_t, smooth: float) -> torch.Tensor:
    """dice_c = 1 - (2·S_pt + smooth) / (S_p + S_t + smooth), per class."""
    return 1.0 - (2.0 * s_pt + smooth) / (s_p + s_t + smooth)


def dice_loss(input: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0,
              alpha: float = 0.0, square_denominator: bool = False,
              reduction: str = "mean") -> torch.Tensor:
    """Reference dice loss; arguments are already validated by ``functional``.

    Maths in fp32 (fp64 for fp64 logits); the result has ``input.dtype``.
    Shapes: input, target ``[N, C, *]``; output ``[]`` or ``[C]`` for ``none``.
    """
    per_class = dice_from_sums(*dice_sums(input, target, alpha=alpha,
                                          square_denominator=square_denominator), smooth)
    if reduction == "mean":
        per_class = per_class.mean()
    elif reduction == "sum":
        per_class = per_class.sum()
    return per_class.to(input.dtype)

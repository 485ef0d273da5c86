"""Sigmoid focal binary cross-entropy in plain PyTorch: the oracle and CPU fallback.

For logits x and targets t of the same shape ``[..., C]``::

    t    <- t·(1-ε) + ε/2                                  (label_smoothing ε)
    bce   = -(pw·t·log σ(x) + (1-t)·log σ(-x))
    p_t   = σ(x)·t + σ(-x)·(1-t)
    loss  = w · α_t · (1-p_t)^γ · bce,   α_t = α·t + (1-α)·(1-t)

``pos_weight`` (pw), ``weight`` (w) and a tensor ``alpha`` broadcast against
the target. (1-p_t)^γ is exp(γ·log(1-p_t)) with the log taken from
log-sigmoids, so nothing overflows or divides by zero.
"""
from __future__ import annotations

import torch

from ._math import (alpha_factor, compute_dtype, log_one_minus_pt, log_sigmoid_pair,
                    prepare_target, reduce_loss)


def focal_bce(input: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0,
              alpha=None, pos_weight=None, weight=None, label_smoothing: float = 0.0,
              ignore_index=None, reduction: str = "mean") -> torch.Tensor:
    """Reference focal BCE; arguments are already validated by ``functional``.

    Maths runs in fp32 (fp64 for fp64 logits); the result has ``input.dtype``.
    Shapes: input and target ``[..., C]``; output ``[]`` or ``[..., C]`` for
    ``reduction="none"``.
    """
    dtype = compute_dtype(input)
    x = input.to(dtype)
    t, keep = prepare_target(target, dtype, ignore_index, label_smoothing)
    log_p, log_n = log_sigmoid_pair(x)
    pos_term = t * log_p if pos_weight is None else pos_weight.to(dtype) * t * log_p
    loss = -(pos_term + (1.0 - t) * log_n)
    if gamma != 0.0:
        hard = not target.is_floating_point() and label_smoothing == 0.0
        loss = loss * torch.exp(gamma * log_one_minus_pt(log_p, log_n, t, hard))
    if alpha is not None:
        loss = loss * alpha_factor(alpha, t)
    if weight is not None:
        loss = loss * weight.to(dtype)
    return reduce_loss(loss, keep, reduction).to(input.dtype)

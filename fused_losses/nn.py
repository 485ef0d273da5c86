"""nn.Module forms of the losses, with torch.nn-style signatures.

Tensor arguments are registered as buffers, so they follow ``.to()`` and
appear in ``state_dict``.
"""
from __future__ import annotations

import torch
from torch import nn

from . import functional as F


class FocalBCE(nn.Module):
    r"""Sigmoid focal BCE on logits; see :func:`fused_losses.focal_bce`.

    ``loss = w · α_t · (1-p_t)^γ · -(pw·t·log σ(x) + (1-t)·log σ(-x))``

    Shapes: input and target ``[..., C]``; output ``[]`` (``mean``/``sum``) or
    ``[..., C]`` (``none``).

    Example:
        >>> import torch
        >>> from fused_losses import FocalBCE
        >>> criterion = FocalBCE(gamma=2.0, alpha=0.25, pos_weight=torch.full((270,), 3.0))
        >>> logits = torch.randn(16, 270, requires_grad=True)
        >>> labels = torch.rand(16, 270) < 0.02
        >>> criterion(logits, labels).backward()
    """

    def __init__(self, gamma: float = 2.0, alpha=None, pos_weight=None, weight=None,
                 label_smoothing: float = 0.0, ignore_index=None, reduction: str = "mean",
                 backend: str = "auto"):
        super().__init__()
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.backend = backend
        if isinstance(alpha, torch.Tensor):
            self.register_buffer("alpha", alpha)
        else:
            self.alpha = alpha
        self.register_buffer("pos_weight", pos_weight)
        self.register_buffer("weight", weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.focal_bce(input, target, gamma=self.gamma, alpha=self.alpha,
                           pos_weight=self.pos_weight, weight=self.weight,
                           label_smoothing=self.label_smoothing,
                           ignore_index=self.ignore_index, reduction=self.reduction,
                           backend=self.backend)

    def extra_repr(self) -> str:
        alpha = "tensor" if isinstance(self.alpha, torch.Tensor) else self.alpha
        return (f"gamma={self.gamma}, alpha={alpha}, reduction={self.reduction!r}, "
                f"backend={self.backend!r}")


class BCEWithLogitsLoss(nn.Module):
    """Drop-in for ``torch.nn.BCEWithLogitsLoss``: :class:`FocalBCE` with ``gamma=0``.

    Example:
        >>> import torch
        >>> from fused_losses import BCEWithLogitsLoss
        >>> criterion = BCEWithLogitsLoss(pos_weight=torch.full((5,), 2.0))
        >>> criterion(torch.randn(3, 5), torch.rand(3, 5)).shape
        torch.Size([])
    """

    def __init__(self, weight=None, reduction: str = "mean", pos_weight=None):
        super().__init__()
        self.reduction = reduction
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            input, target, weight=self.weight, reduction=self.reduction,
            pos_weight=self.pos_weight)

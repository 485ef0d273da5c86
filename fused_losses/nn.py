"""nn.Module forms of the losses, with torch.nn-style signatures.

Tensor arguments are registered as buffers, so they follow ``.to()`` and
appear in ``state_dict``.
"""
from __future__ import annotations

import torch
from torch import nn

from . import functional as F
from ._validate import check_int


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


class GHMC(nn.Module):
    """GHM-C loss with its EMA state; see :func:`fused_losses.ghmc`.

    ``acc_sum`` (float32 ``[bins]``, zeros at start) is a buffer, updated in
    place on every call when ``momentum`` > 0. ``sync_distributed=True`` sums
    the histogram over the default ``torch.distributed`` group (or pass a
    process group) so every rank uses the global histogram and keeps an
    identical ``acc_sum``.

    Shapes: input, target ``[..., C]``; label_weight broadcasts to them;
    output ``[]`` or ``[..., C]`` for ``reduction="none"``.

    Example:
        >>> import torch
        >>> from fused_losses import GHMC
        >>> criterion = GHMC(bins=10, momentum=0.75)
        >>> logits = torch.randn(16, 270, requires_grad=True)
        >>> criterion(logits, (torch.rand(16, 270) < 0.02).float()).backward()
        >>> bool(criterion.acc_sum.sum() > 0)
        True
    """

    def __init__(self, bins: int = 10, momentum: float = 0.0, reduction: str = "mean",
                 backend: str = "auto", sync_distributed=False):
        super().__init__()
        self.bins = check_int("bins", bins, 1, F.MAX_GHMC_BINS)
        self.momentum = momentum
        self.reduction = reduction
        self.backend = backend
        self.sync_distributed = sync_distributed
        self.register_buffer("acc_sum", torch.zeros(bins, dtype=torch.float32))

    def _process_group(self):
        if self.sync_distributed is False or self.sync_distributed is None:
            return None
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("GHMC(sync_distributed=...) needs an initialised "
                               "torch.distributed process group")
        return dist.group.WORLD if self.sync_distributed is True else self.sync_distributed

    def forward(self, input: torch.Tensor, target: torch.Tensor,
                label_weight=None) -> torch.Tensor:
        return F.ghmc(input, target, bins=self.bins, momentum=self.momentum,
                      acc_sum=self.acc_sum, label_weight=label_weight,
                      reduction=self.reduction, backend=self.backend,
                      process_group=self._process_group())

    def extra_repr(self) -> str:
        return (f"bins={self.bins}, momentum={self.momentum}, reduction={self.reduction!r}, "
                f"backend={self.backend!r}")


class DiceLoss(nn.Module):
    r"""Multilabel soft dice on logits (self-adjusting with α > 0); see
    :func:`fused_losses.dice_loss`.

    ``dice_c = 1 - (2·Σ p̃·t + smooth) / (Σ p̃ᵏ + Σ tᵏ + smooth)``, p̃ = (1-σ(x))^α·σ(x),
    sums over every dim but the class dim 1.

    Shapes: input and target ``[N, C]`` or ``[N, C, d1, ...]``; output ``[]``
    (``mean``/``sum``) or ``[C]`` (``none``).

    Example:
        >>> import torch
        >>> from fused_losses import DiceLoss
        >>> criterion = DiceLoss(alpha=0.1, square_denominator=True)
        >>> logits = torch.randn(8, 3, 16, 16, requires_grad=True)
        >>> masks = torch.rand(8, 3, 16, 16) < 0.3
        >>> criterion(logits, masks).backward()
    """

    def __init__(self, smooth: float = 1.0, alpha: float = 0.0,
                 square_denominator: bool = False, reduction: str = "mean",
                 backend: str = "auto"):
        super().__init__()
        self.smooth = smooth
        self.alpha = alpha
        self.square_denominator = square_denominator
        self.reduction = reduction
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.dice_loss(input, target, smooth=self.smooth, alpha=self.alpha,
                           square_denominator=self.square_denominator,
                           reduction=self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"smooth={self.smooth}, alpha={self.alpha}, "
                f"square_denominator={self.square_denominator}, "
                f"reduction={self.reduction!r}, backend={self.backend!r}")


class AsymmetricLoss(nn.Module):
    r"""Asymmetric loss (ASL) on logits; see :func:`fused_losses.asymmetric_loss`.

    ``loss = -w·(t·log max(p, eps) + (1-t)·log max(p_m, eps))·(1-p_t)^γ`` with
    p = σ(x), p_m = min(1 - p + clip, 1), p_t = p·t + p_m·(1-t), γ = γ₊·t + γ₋·(1-t).
    The defaults are the paper's; ``weight`` is a buffer.

    Shapes: input and target any equal shape; output ``[]`` (``sum``/``mean``)
    or the input's shape (``none``).

    Example:
        >>> import torch
        >>> from fused_losses import AsymmetricLoss
        >>> criterion = AsymmetricLoss()
        >>> logits = torch.randn(16, 270, requires_grad=True)
        >>> criterion(logits, torch.rand(16, 270) < 0.02).backward()
    """

    def __init__(self, gamma_pos: float = 1.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 eps: float = 1e-8, detach_focal_weight: bool = True, weight=None,
                 reduction: str = "sum", backend: str = "auto"):
        super().__init__()
        self.gamma_pos = gamma_pos
        self.gamma_neg = gamma_neg
        self.clip = clip
        self.eps = eps
        self.detach_focal_weight = detach_focal_weight
        self.reduction = reduction
        self.backend = backend
        self.register_buffer("weight", weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.asymmetric_loss(input, target, gamma_pos=self.gamma_pos,
                                 gamma_neg=self.gamma_neg, clip=self.clip, eps=self.eps,
                                 detach_focal_weight=self.detach_focal_weight,
                                 weight=self.weight, reduction=self.reduction,
                                 backend=self.backend)

    def extra_repr(self) -> str:
        return (f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, "
                f"eps={self.eps}, detach_focal_weight={self.detach_focal_weight}, "
                f"reduction={self.reduction!r}, backend={self.backend!r}")


class SoftmaxFocalLoss(nn.Module):
    r"""Softmax focal loss over class indices; see :func:`fused_losses.softmax_focal_loss`.

    ``loss = (1-p_y)^γ · CE_ε``, CE_ε being ``F.cross_entropy``'s (weighted,
    smoothed) row loss; ``alpha`` ([C]) is a buffer.

    Shapes: input ``[N, C, d...]``, target ``[N, d...]`` class indices; output
    ``[]`` or target's shape for ``reduction="none"``.

    Example:
        >>> import torch
        >>> from fused_losses import SoftmaxFocalLoss
        >>> criterion = SoftmaxFocalLoss(gamma=2.0, alpha=torch.rand(10))
        >>> logits = torch.randn(16, 10, requires_grad=True)
        >>> criterion(logits, torch.randint(0, 10, (16,))).backward()
    """

    def __init__(self, gamma: float = 2.0, alpha=None, ignore_index: int = -100,
                 label_smoothing: float = 0.0, reduction: str = "mean", backend: str = "auto"):
        super().__init__()
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.reduction = reduction
        self.backend = backend
        self.register_buffer("alpha", alpha)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.softmax_focal_loss(input, target, gamma=self.gamma, alpha=self.alpha,
                                    ignore_index=self.ignore_index,
                                    label_smoothing=self.label_smoothing,
                                    reduction=self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, ignore_index={self.ignore_index}, "
                f"label_smoothing={self.label_smoothing}, reduction={self.reduction!r}, "
                f"backend={self.backend!r}")


class SelfAdjustingDiceLoss(nn.Module):
    r"""Per-sample self-adjusting DSC; see :func:`fused_losses.self_adjusting_dice_loss`.

    ``p~ = (1-p)^α·p``, ``loss = 1 - (2p~ + smooth)/(p~ + 1 + smooth)`` with
    p = softmax(x)[y]. Shapes: input ``[N, C]``, target ``[N]``; output ``[]``
    or ``[N]``.

    Example:
        >>> import torch
        >>> from fused_losses import SelfAdjustingDiceLoss
        >>> criterion = SelfAdjustingDiceLoss(alpha=1.0, smooth=1.0)
        >>> logits = torch.randn(16, 10, requires_grad=True)
        >>> criterion(logits, torch.randint(0, 10, (16,))).backward()
    """

    def __init__(self, alpha: float = 1.0, smooth: float = 1.0, reduction: str = "mean",
                 backend: str = "auto"):
        super().__init__()
        self.alpha = alpha
        self.smooth = smooth
        self.reduction = reduction
        self.backend = backend

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.self_adjusting_dice_loss(input, target, alpha=self.alpha, smooth=self.smooth,
                                          reduction=self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, smooth={self.smooth}, reduction={self.reduction!r}, "
                f"backend={self.backend!r}")

"""nn.Module forms of the losses, with torch.nn-style signatures.

Each class is generated from its loss's spec (``_api.make_module``): the
constructor checks every argument at construction, tensor arguments are
registered as buffers (they follow ``.to()`` and appear in ``state_dict``),
and ``extra_repr`` lists the options. GHMC adds its EMA state.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from . import functional as F
from ._api import SpecLoss, make_module
from ._validate import check_reduction
from .spec import SPECS, ghmc


class _GhmcBase(SpecLoss):
    """GHMC's state: ``acc_sum`` (float32 ``[bins]``, zeros at start) is a buffer,
    the EMA of the bin counts when ``momentum`` > 0. As BatchNorm does with its
    running statistics, the module updates it only in training mode: in
    ``eval()`` mode the loss is computed exactly as a training step would compute
    it (with this batch's counts folded into a copy of the EMA) and the buffer is
    left unchanged, so a validation loss leaves the training statistics alone.
    (mmdet's GHMC updates its EMA in every mode; the functional ``ghmc`` always
    updates the ``acc_sum`` it is given.) ``sync_distributed=True``
    sums the histogram over the default ``torch.distributed`` group (or pass a
    process group), so every rank uses the global histogram and keeps an
    identical ``acc_sum``. ``label_weight`` is an argument of ``forward``."""

    def __init__(self, bins: int = 10, momentum: float = 0.0, reduction: str = "mean",
                 backend: str = "auto", sync_distributed: Any = False) -> None:
        super().__init__(bins=bins, momentum=momentum, reduction=reduction, backend=backend)
        self.sync_distributed = sync_distributed
        self.register_buffer("acc_sum", torch.zeros(self.bins, dtype=torch.float32))

    @classmethod
    def held_params(cls):
        return [cls.spec.param("bins"), cls.spec.param("momentum")]

    def _apply(self, fn, recurse=True):
        # .to(device) moves the EMA; a dtype cast (.double(), .half()) does not
        # reach it: the kernels keep their EMA state in float32.
        super()._apply(fn, recurse)
        if self.acc_sum.dtype != torch.float32:
            self.acc_sum = self.acc_sum.float()
        return self

    def _process_group(self):
        if self.sync_distributed is False or self.sync_distributed is None:
            return None
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("GHMC(sync_distributed=...) needs an initialised "
                               "torch.distributed process group")
        return dist.group.WORLD if self.sync_distributed is True else self.sync_distributed

    def forward(self, input: torch.Tensor, target: torch.Tensor,
                label_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        # eval(): a copy takes the update ([bins] floats), the buffer does not.
        acc_sum = self.acc_sum if self.training else self.acc_sum.clone()
        return F.ghmc(input, target, bins=self.bins, momentum=self.momentum,
                      acc_sum=acc_sum, label_weight=label_weight,
                      reduction=self.reduction, backend=self.backend,
                      process_group=self._process_group())


# FocalBCE, GHMC, AsymmetricLoss, DiceLoss, SoftmaxFocalLoss, SelfAdjustingDiceLoss:
# one per spec, named by its ``module``; a loss with state brings its own base.
_BASES = {ghmc.SPEC.stem: _GhmcBase}
for _spec in SPECS:
    make_module(_spec, getattr(F, _spec.function), base=_BASES.get(_spec.stem, SpecLoss),
                namespace=globals())


class BCEWithLogitsLoss(torch.nn.Module):
    r"""Drop-in for ``torch.nn.BCEWithLogitsLoss``: :class:`FocalBCE` with ``gamma=0``.

    Same constructor as torch's, positional order included:
    ``(weight, size_average, reduce, reduction, pos_weight)``. The loss is
    :func:`fused_losses.binary_cross_entropy_with_logits`,
    ℓ = −w · (p · y · log σ(x) + (1 − y) · log(1 − σ(x))) per element with
    w = ``weight`` and p = ``pos_weight``, then reduced. ``size_average`` and
    ``reduce`` are torch's deprecated flags: when either is not None they set
    ``reduction`` as torch does (``reduce`` False → ``"none"``, else
    ``size_average`` False → ``"sum"``, else ``"mean"``) and warn as torch does;
    a string or tensor in their place (the old ``weight, reduction, pos_weight``
    order) raises ``TypeError``.
    ``weight`` and ``pos_weight`` are buffers (``None`` when not given), so the
    ``state_dict`` keys are torch's.

    Example:
        >>> import torch
        >>> from fused_losses import BCEWithLogitsLoss
        >>> criterion = BCEWithLogitsLoss(pos_weight=torch.full((5,), 2.0))
        >>> criterion(torch.randn(3, 5), torch.rand(3, 5)).shape
        torch.Size([])
    """

    weight: torch.Tensor | None
    pos_weight: torch.Tensor | None

    def __init__(self, weight: torch.Tensor | None = None,
                 size_average: bool | None = None, reduce: bool | None = None,
                 reduction: str = "mean", pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        # torch's rule and warning; a str or tensor flag (the old order) raises
        reduction = F._legacy_reduction(size_average, reduce, reduction)
        self.reduction = check_reduction(reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            input, target, weight=self.weight, reduction=self.reduction,
            pos_weight=self.pos_weight)


__all__ = [spec.module for spec in SPECS] + ["BCEWithLogitsLoss"]

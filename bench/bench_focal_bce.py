"""Focal-BCE benchmark cases: multilabel logits with rare positives.

Each case is logits ``[N, 270]`` (float32 or bfloat16) with bool targets that
are ~2% positive, a float32 ``pos_weight[270]``, gamma=2, alpha=0.25 and
``reduction="mean"``. The candidates are ``_case.LossBench``'s, with
``fused_losses.focal_bce`` and ``reference.focal_bce``; the ``anchor``
(backend ``torchvision``) is torchvision's ``sigmoid_focal_loss`` formula,
written out here in plain torch ops (with ``pos_weight`` added) so torchvision
is not needed.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import fused_losses
from fused_losses import reference

from ._case import LossBench, multilabel_inputs

GAMMA, ALPHA, REDUCTION = 2.0, 0.25, "mean"


def _pos_weight(gen, shape, device) -> dict:
    # Roughly the negatives-to-positives ratio a user would derive from label counts.
    return {"pos_weight": 1.0 + 49.0 * torch.rand(shape[-1], generator=gen, device=device)}


def torchvision_focal(x, target, pos_weight, gamma: float = GAMMA, alpha: float = ALPHA):
    """torchvision's ``sigmoid_focal_loss`` formula plus ``pos_weight``, mean-reduced.

    Deliberately the same op-by-op chain torchvision runs (in the logits' dtype),
    since that chain is what the anchor baseline costs.
    """
    t = target.to(x.dtype)
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pos_weight)
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return (alpha_t * loss).mean()


BENCH = LossBench(
    "focal_bce", shapes=((65536, 270), (262144, 270)), quick_shapes=((4096, 270),),
    make_inputs=functools.partial(multilabel_inputs, more=_pos_weight),
    fused=fused_losses.focal_bce, reference=reference.focal_bce,
    anchor=("torchvision", torchvision_focal),
    options=dict(gamma=GAMMA, alpha=ALPHA, reduction=REDUCTION))

"""Dice benchmark cases: multilabel logits with rare positives.

Each case is logits ``[N, 270]`` (float32 or bfloat16) with bool targets that
are ~2% positive, smooth=1, alpha=0 (plain soft dice) and ``reduction="mean"``.
The candidates are ``_case.LossBench``'s, with ``fused_losses.dice_loss`` and
``reference.dice_loss``; the ``anchor`` (backend ``user-dice``) is the soft dice
a user typically writes in plain torch ops (sigmoid, sums over dim 0, the
ratio), in the logits' dtype.
"""
from __future__ import annotations

import torch

import fused_losses
from fused_losses import reference

from ._case import LossBench, multilabel_inputs

SMOOTH, ALPHA, REDUCTION = 1.0, 0.0, "mean"


def user_dice(x, target, smooth: float = SMOOTH):
    """Soft dice as users write it: per-class sums over the batch, mean over classes."""
    p = torch.sigmoid(x)
    t = target.to(x.dtype)
    intersection = (p * t).sum(dim=0)
    dice = (2 * intersection + smooth) / (p.sum(dim=0) + t.sum(dim=0) + smooth)
    return (1 - dice).mean()


BENCH = LossBench(
    "dice", shapes=((65536, 270),), quick_shapes=((4096, 270),), make_inputs=multilabel_inputs,
    fused=fused_losses.dice_loss, reference=reference.dice_loss, anchor=("user-dice", user_dice),
    options=dict(smooth=SMOOTH, alpha=ALPHA, reduction=REDUCTION))

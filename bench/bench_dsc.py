"""Self-adjusting DSC benchmark cases: logits ``[65536, 270]`` (float32,
bfloat16), int64 class indices, alpha=1, smooth=1, ``reduction="mean"``.

The candidates are ``_case.LossBench``'s, with
``fused_losses.self_adjusting_dice_loss`` and ``reference.dsc``; the ``anchor``
(backend ``torch-formula``) is the formula written out in plain torch ops below
(softmax, gather, pow, the ratio), as a user would.
"""
from __future__ import annotations

import torch

import fused_losses
from fused_losses import reference

from ._case import LossBench, class_index_inputs

ALPHA, SMOOTH, REDUCTION = 1.0, 1.0, "mean"


def plain_dsc(x, target, alpha: float = ALPHA, smooth: float = SMOOTH):
    """The paper's formula in plain torch ops, in the logits' dtype, mean-reduced."""
    p = torch.softmax(x, dim=-1).gather(-1, target[:, None])[:, 0]
    p_tilde = (1 - p).pow(alpha) * p
    return (1 - (2 * p_tilde + smooth) / (p_tilde + 1 + smooth)).mean()


BENCH = LossBench("dsc", shapes=((65536, 270),), quick_shapes=((2048, 270),),
                  make_inputs=class_index_inputs, fused=fused_losses.self_adjusting_dice_loss,
                  reference=reference.dsc, anchor=("torch-formula", plain_dsc),
                  options=dict(alpha=ALPHA, smooth=SMOOTH, reduction=REDUCTION))

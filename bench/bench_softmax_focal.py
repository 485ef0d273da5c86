"""Softmax focal benchmark cases: multiclass logits, one class index per row.

Cases: logits ``[65536, 270]`` and ``[8192, 32000]`` (float32, bfloat16),
int64 targets with ~1% ignored (-100), gamma=2, ``reduction="mean"``. The
candidates are ``_case.LossBench``'s, with ``fused_losses.softmax_focal_loss``
and ``reference.softmax_focal``; the ``anchor`` (backend ``cross_entropy``) is
``F.cross_entropy`` on the same logits: the cost the focal loss has to match
(the issue's target).
"""
from __future__ import annotations

import functools

import torch.nn.functional as F

import fused_losses
from fused_losses import reference

from ._case import LossBench, class_index_inputs

GAMMA, REDUCTION, IGNORE_RATE = 2.0, "mean", 0.01

BENCH = LossBench(
    "softmax_focal",
    # (1024, 32000): the large-vocabulary case that fits a CPU run (see _case.CPU_MAX_NUMEL).
    shapes=((65536, 270), (8192, 32000), (1024, 32000)), quick_shapes=((2048, 270), (256, 32000)),
    make_inputs=functools.partial(class_index_inputs, ignore_rate=IGNORE_RATE),
    fused=fused_losses.softmax_focal_loss, reference=reference.softmax_focal,
    anchor=("cross_entropy", functools.partial(F.cross_entropy, reduction=REDUCTION)),
    options=dict(gamma=GAMMA, reduction=REDUCTION))

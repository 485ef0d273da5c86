"""Asymmetric-loss (ASL) benchmark cases: multilabel logits with rare positives.

Each case is logits ``[N, 270]`` (float32 or bfloat16) with bool targets that
are ~2% positive and the paper's defaults (γ₊=1, γ₋=4, clip=0.05, eps=1e-8,
detached focal weight, ``reduction="sum"``), which are also the library's, so
no options are passed. The candidates are ``_case.LossBench``'s, with
``fused_losses.asymmetric_loss`` and ``reference.asl``; the ``anchor`` (backend
``official``) is the official ASL formula written out below op by op in plain
torch, with the focal weight built under ``torch.no_grad()`` (the official
code's detach semantics, without its global grad-mode toggle).
"""
from __future__ import annotations

import torch

import fused_losses
from fused_losses import ops, reference
from fused_losses.spec import BY_STEM

from ._case import LossBench, multilabel_inputs

GAMMA_POS, GAMMA_NEG, CLIP, EPS = 1.0, 4.0, 0.05, 1e-8


def official_asl(x, target, gamma_pos=GAMMA_POS, gamma_neg=GAMMA_NEG, clip=CLIP, eps=EPS):
    """The official ASL forward (Ben-Baruch et al.), op by op in the logits' dtype."""
    y = target.to(x.dtype)
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    loss = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    with torch.no_grad():
        pt = xs_pos * y + xs_neg * (1 - y)
        w = torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
    return -(loss * w).sum()


def _has_kernels(backend: str) -> bool:
    # available_backends is per installation, not per loss: an extension built
    # before ASL existed is listed but lacks ASL's ops.
    return ops.has_backend(BY_STEM["asl"], backend)


BENCH = LossBench("asl", shapes=((65536, 270),), quick_shapes=((4096, 270),),
                  make_inputs=multilabel_inputs, fused=fused_losses.asymmetric_loss,
                  reference=reference.asl, anchor=("official", official_asl),
                  has_kernels=_has_kernels)

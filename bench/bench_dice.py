"""Dice benchmark cases: multilabel logits with rare positives.

Each case is logits ``[N, 270]`` (float32 or bfloat16) with bool targets that
are ~2% positive, smooth=1, alpha=0 (plain soft dice) and ``reduction="mean"``.
Every candidate runs forward and ``loss.backward()``:

- ``fused-<backend>``: ``fused_losses.dice_loss(backend=...)`` for each fused
  backend native to the device (``triton`` and ``cuda`` on a GPU, ``cpu`` on a CPU);
- ``eager``: ``fused_losses.dice_loss(backend="torch")``, the pure-PyTorch reference;
- ``compile``: ``torch.compile`` of ``fused_losses.reference.dice_loss``;
- ``anchor`` (backend ``user-dice``): the soft dice a user typically writes in
  plain torch ops (sigmoid, sums over dim 0, the ratio), in the logits' dtype.
"""
from __future__ import annotations

import functools

import torch

import fused_losses
from fused_losses import reference
from fused_losses._backend import resolve_backend

from ._case import Candidate, Case, grid
from .bench_focal_bce import fused_backends

LOSS = "dice"
NUM_CLASSES = 270
SHAPES = ((65536, NUM_CLASSES),)
QUICK_SHAPES = ((4096, NUM_CLASSES),)
DTYPES = (torch.float32, torch.bfloat16)
POSITIVE_RATE = 0.02
SMOOTH, ALPHA, REDUCTION = 1.0, 0.0, "mean"

_compiled_reference = None


def _make_inputs(shape, dtype, device) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(shape, generator=gen, device=device).to(dtype)
    target = torch.rand(shape, generator=gen, device=device) < POSITIVE_RATE
    return {"input": logits.requires_grad_(), "target": target}


def cases(device, quick: bool = False) -> list:
    """The (shape, dtype) points on ``device``; ``quick`` gives small shapes for smoke tests."""
    return grid(LOSS, QUICK_SHAPES if quick else SHAPES, DTYPES, device, _make_inputs)


def user_dice(x, target, smooth: float = SMOOTH):
    """Soft dice as users write it: per-class sums over the batch, mean over classes."""
    p = torch.sigmoid(x)
    t = target.to(x.dtype)
    intersection = (p * t).sum(dim=0)
    dice = (2 * intersection + smooth) / (p.sum(dim=0) + t.sum(dim=0) + smooth)
    return (1 - dice).mean()


def _compiled():
    # dynamic=False: one specialised graph per (shape, dtype), as a fixed-shape loop gets.
    global _compiled_reference
    if _compiled_reference is None:
        _compiled_reference = torch.compile(reference.dice_loss, dynamic=False)
    return _compiled_reference


def _fused(inputs, backend="auto"):
    fused_losses.dice_loss(inputs["input"], inputs["target"], smooth=SMOOTH, alpha=ALPHA,
                           reduction=REDUCTION, backend=backend).backward()


def _eager(inputs):
    _fused(inputs, backend="torch")


def _compile(inputs):
    _compiled()(inputs["input"], inputs["target"], smooth=SMOOTH, alpha=ALPHA,
                reduction=REDUCTION).backward()


def _user(inputs):
    user_dice(inputs["input"], inputs["target"]).backward()


def candidates(case: Case) -> list:
    """One ``fused-<backend>`` row per fused backend, then eager, compile and the anchor."""
    fused = [Candidate(f"fused-{b}", b, functools.partial(_fused, backend=b))
             for b in fused_backends(case.device)]
    if not fused:  # nothing fused here: show what auto gives
        auto = resolve_backend("auto", case.device.type, case.dtype != torch.float64)
        fused = [Candidate("fused", auto, _fused)]
    return fused + [
        Candidate("eager", "torch", _eager),
        Candidate("compile", "inductor", _compile),
        Candidate("anchor", "user-dice", _user),
    ]

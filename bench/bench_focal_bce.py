"""Focal-BCE benchmark cases: multilabel logits with rare positives.

Each case is logits ``[N, 270]`` (float32 or bfloat16) with bool targets that
are ~2% positive, a float32 ``pos_weight[270]``, gamma=2, alpha=0.25 and
``reduction="mean"``. Every candidate runs forward and ``loss.backward()``:

- ``fused-<backend>``: ``fused_losses.focal_bce(backend=...)`` for each fused
  backend native to the device (``triton`` and ``cuda`` on a GPU, ``cpu`` on a CPU);
- ``eager``: ``fused_losses.focal_bce(backend="torch")``, the pure-PyTorch reference;
- ``compile``: ``torch.compile`` of ``fused_losses.reference.focal_bce``;
- ``anchor`` (backend ``torchvision``): torchvision's ``sigmoid_focal_loss`` formula, written out
  here in plain torch ops (with ``pos_weight`` added) so torchvision is not needed.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import fused_losses
from fused_losses import reference
from fused_losses._backend import resolve_backend

from ._case import Candidate, Case, grid

LOSS = "focal_bce"
NUM_CLASSES = 270
SHAPES = ((65536, NUM_CLASSES), (262144, NUM_CLASSES))
QUICK_SHAPES = ((4096, NUM_CLASSES),)
DTYPES = (torch.float32, torch.bfloat16)
POSITIVE_RATE = 0.02
GAMMA, ALPHA, REDUCTION = 2.0, 0.25, "mean"

_compiled_reference = None


def _make_inputs(shape, dtype, device) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(shape, generator=gen, device=device).to(dtype)
    target = torch.rand(shape, generator=gen, device=device) < POSITIVE_RATE
    # Roughly the negatives-to-positives ratio a user would derive from label counts.
    pos_weight = 1.0 + 49.0 * torch.rand(shape[-1], generator=gen, device=device)
    return {"input": logits.requires_grad_(), "target": target, "pos_weight": pos_weight}


def cases(device, quick: bool = False) -> list:
    """The (shape, dtype) points on ``device``; ``quick`` gives tiny shapes for smoke tests."""
    return grid(LOSS, QUICK_SHAPES if quick else SHAPES, DTYPES, device, _make_inputs)


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


def _compiled():
    # One compiled callable for every case; dynamic=False gives each (shape, dtype)
    # its own specialised graph, as a training loop with a fixed batch shape would.
    global _compiled_reference
    if _compiled_reference is None:
        _compiled_reference = torch.compile(reference.focal_bce, dynamic=False)
    return _compiled_reference


def _fused(inputs, backend="auto"):
    fused_losses.focal_bce(inputs["input"], inputs["target"], gamma=GAMMA, alpha=ALPHA,
                           pos_weight=inputs["pos_weight"], reduction=REDUCTION,
                           backend=backend).backward()


def _eager(inputs):
    fused_losses.focal_bce(inputs["input"], inputs["target"], gamma=GAMMA, alpha=ALPHA,
                           pos_weight=inputs["pos_weight"], reduction=REDUCTION,
                           backend="torch").backward()


def _compile(inputs):
    _compiled()(inputs["input"], inputs["target"], gamma=GAMMA, alpha=ALPHA,
                pos_weight=inputs["pos_weight"], reduction=REDUCTION).backward()


def _torchvision(inputs):
    torchvision_focal(inputs["input"], inputs["target"], inputs["pos_weight"]).backward()


def fused_backends(device: torch.device) -> list:
    """Every fused backend that runs natively on ``device`` (interpreted Triton
    on a CPU is a test vehicle, not a contender)."""
    native = ("triton", "cuda") if device.type == "cuda" else ("cpu",)
    return [b for b in fused_losses.available_backends(device) if b in native]


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
        Candidate("anchor", "torchvision", _torchvision),
    ]

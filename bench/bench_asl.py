"""Asymmetric-loss (ASL) benchmark cases: multilabel logits with rare positives.

Each case is logits ``[N, 270]`` (float32 or bfloat16) with bool targets that
are ~2% positive and the paper's defaults (γ₊=1, γ₋=4, clip=0.05, eps=1e-8,
detached focal weight, ``reduction="sum"``). Every candidate runs forward and
``loss.backward()``:

- ``fused-<backend>``: ``fused_losses.asymmetric_loss(backend=...)`` for each
  fused backend native to the device (``triton`` and ``cuda`` on a GPU, ``cpu`` on a CPU);
- ``eager``: ``fused_losses.asymmetric_loss(backend="torch")``, the reference;
- ``compile``: ``torch.compile`` of ``fused_losses.reference.asl``;
- ``anchor`` (backend ``official``): the official ASL formula written out below
  op by op in plain torch, with the focal weight built under ``torch.no_grad()``
  (the official code's detach semantics, without its global grad-mode toggle).
"""
from __future__ import annotations

import functools

import torch

import fused_losses
from fused_losses import reference
from fused_losses._backend import resolve_backend

from ._case import Candidate, Case, grid

LOSS = "asl"
NUM_CLASSES = 270
SHAPES = ((65536, NUM_CLASSES),)
QUICK_SHAPES = ((4096, NUM_CLASSES),)
DTYPES = (torch.float32, torch.bfloat16)
POSITIVE_RATE = 0.02
GAMMA_POS, GAMMA_NEG, CLIP, EPS = 1.0, 4.0, 0.05, 1e-8

_compiled_reference = None


def _make_inputs(shape, dtype, device) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(shape, generator=gen, device=device).to(dtype)
    target = torch.rand(shape, generator=gen, device=device) < POSITIVE_RATE
    return {"input": logits.requires_grad_(), "target": target}


def cases(device, quick: bool = False) -> list:
    """The (shape, dtype) points on ``device``; ``quick`` gives a small shape for smoke tests."""
    return grid(LOSS, QUICK_SHAPES if quick else SHAPES, DTYPES, device, _make_inputs)


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


def _compiled():
    # One compiled callable; dynamic=False specialises per (shape, dtype) like a
    # training loop with a fixed batch shape.
    global _compiled_reference
    if _compiled_reference is None:
        _compiled_reference = torch.compile(reference.asl, dynamic=False)
    return _compiled_reference


def _fused(inputs, backend="auto"):
    fused_losses.asymmetric_loss(inputs["input"], inputs["target"], backend=backend).backward()


def _eager(inputs):
    fused_losses.asymmetric_loss(inputs["input"], inputs["target"], backend="torch").backward()


def _compile(inputs):
    _compiled()(inputs["input"], inputs["target"]).backward()


def _official(inputs):
    official_asl(inputs["input"], inputs["target"]).backward()


def fused_backends(device: torch.device) -> list:
    """Fused backends native to ``device`` (interpreted Triton on a CPU is a test vehicle)."""
    from fused_losses.ops import asl as asl_ops
    native = ("triton", "cuda") if device.type == "cuda" else ("cpu",)
    return [b for b in fused_losses.available_backends(device)
            if b in native and asl_ops.has_backend(b)]


def candidates(case: Case) -> list:
    """One ``fused-<backend>`` row per fused backend, then eager, compile and the anchor."""
    fused = [Candidate(f"fused-{b}", b, functools.partial(_fused, backend=b))
             for b in fused_backends(case.device)]
    if not fused:
        auto = resolve_backend("auto", case.device.type, case.dtype != torch.float64)
        fused = [Candidate("fused", auto, _fused)]
    return fused + [
        Candidate("eager", "torch", _eager),
        Candidate("compile", "inductor", _compile),
        Candidate("anchor", "official", _official),
    ]

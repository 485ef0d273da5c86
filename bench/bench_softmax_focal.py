"""Softmax focal benchmark cases: multiclass logits, one class index per row.

Cases: logits ``[65536, 270]`` and ``[8192, 32000]`` (float32, bfloat16),
int64 targets with ~1% ignored (-100), gamma=2, ``reduction="mean"``. Every
candidate runs forward and ``loss.backward()``:

- ``fused-<backend>``: ``fused_losses.softmax_focal_loss(backend=...)`` for each
  fused backend native to the device;
- ``eager``: the pure-PyTorch reference (``backend="torch"``);
- ``compile``: ``torch.compile`` of ``fused_losses.reference.softmax_focal``;
- ``anchor`` (backend ``cross_entropy``): ``F.cross_entropy`` on the same
  logits: the cost the focal loss has to match (the issue's target).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import fused_losses
from fused_losses import reference
from fused_losses._backend import resolve_backend

from ._case import Candidate, Case, grid

LOSS = "softmax_focal"
# (1024, 32000): the large-vocabulary case that fits a CPU run (see _case.CPU_MAX_NUMEL).
SHAPES = ((65536, 270), (8192, 32000), (1024, 32000))
QUICK_SHAPES = ((2048, 270), (256, 32000))
DTYPES = (torch.float32, torch.bfloat16)
GAMMA, REDUCTION, IGNORE_RATE = 2.0, "mean", 0.01

_compiled_reference = None


def _make_inputs(shape, dtype, device) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(shape, generator=gen, device=device).to(dtype)
    target = torch.randint(0, shape[1], (shape[0],), generator=gen, device=device)
    ignored = torch.rand(shape[0], generator=gen, device=device) < IGNORE_RATE
    target = torch.where(ignored, torch.full_like(target, -100), target)
    return {"input": logits.requires_grad_(), "target": target}


def cases(device, quick: bool = False) -> list:
    return grid(LOSS, QUICK_SHAPES if quick else SHAPES, DTYPES, device, _make_inputs)


def _compiled():
    global _compiled_reference
    if _compiled_reference is None:
        _compiled_reference = torch.compile(reference.softmax_focal, dynamic=False)
    return _compiled_reference


def _fused(inputs, backend="auto"):
    fused_losses.softmax_focal_loss(inputs["input"], inputs["target"], gamma=GAMMA,
                                    reduction=REDUCTION, backend=backend).backward()


def _eager(inputs):
    _fused(inputs, backend="torch")


def _compile(inputs):
    _compiled()(inputs["input"], inputs["target"], gamma=GAMMA, reduction=REDUCTION).backward()


def _cross_entropy(inputs):
    F.cross_entropy(inputs["input"], inputs["target"], reduction=REDUCTION).backward()


def fused_backends(device: torch.device) -> list:
    native = ("triton", "cuda") if device.type == "cuda" else ("cpu",)
    return [b for b in fused_losses.available_backends(device) if b in native]


def candidates(case: Case) -> list:
    fused = [Candidate(f"fused-{b}", b, functools.partial(_fused, backend=b))
             for b in fused_backends(case.device)]
    if not fused:
        auto = resolve_backend("auto", case.device.type, case.dtype != torch.float64)
        fused = [Candidate("fused", auto, _fused)]
    return fused + [
        Candidate("eager", "torch", _eager),
        Candidate("compile", "inductor", _compile),
        Candidate("anchor", "cross_entropy", _cross_entropy),
    ]

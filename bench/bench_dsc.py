"""Self-adjusting DSC benchmark cases: logits ``[65536, 270]`` (float32,
bfloat16), int64 class indices, alpha=1, smooth=1, ``reduction="mean"``.

Candidates (forward + ``loss.backward()``): ``fused-<backend>`` per native fused
backend, ``eager`` (the reference), ``compile`` (``torch.compile`` of the
reference) and ``anchor`` (backend ``torch-formula``): the formula written out
in plain torch ops below (softmax, gather, pow, the ratio), as a user would.
"""
from __future__ import annotations

import functools

import torch

import fused_losses
from fused_losses import reference
from fused_losses._backend import resolve_backend

from ._case import Candidate, Case, grid

LOSS = "dsc"
SHAPES = ((65536, 270),)
QUICK_SHAPES = ((2048, 270),)
DTYPES = (torch.float32, torch.bfloat16)
ALPHA, SMOOTH, REDUCTION = 1.0, 1.0, "mean"

_compiled_reference = None


def _make_inputs(shape, dtype, device) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(shape, generator=gen, device=device).to(dtype)
    target = torch.randint(0, shape[1], (shape[0],), generator=gen, device=device)
    return {"input": logits.requires_grad_(), "target": target}


def cases(device, quick: bool = False) -> list:
    return grid(LOSS, QUICK_SHAPES if quick else SHAPES, DTYPES, device, _make_inputs)


def plain_dsc(x, target, alpha: float = ALPHA, smooth: float = SMOOTH):
    """The paper's formula in plain torch ops, in the logits' dtype, mean-reduced."""
    p = torch.softmax(x, dim=-1).gather(-1, target[:, None])[:, 0]
    p_tilde = (1 - p).pow(alpha) * p
    return (1 - (2 * p_tilde + smooth) / (p_tilde + 1 + smooth)).mean()


def _compiled():
    global _compiled_reference
    if _compiled_reference is None:
        _compiled_reference = torch.compile(reference.dsc, dynamic=False)
    return _compiled_reference


def _fused(inputs, backend="auto"):
    fused_losses.self_adjusting_dice_loss(inputs["input"], inputs["target"], alpha=ALPHA,
                                          smooth=SMOOTH, reduction=REDUCTION,
                                          backend=backend).backward()


def _eager(inputs):
    _fused(inputs, backend="torch")


def _compile(inputs):
    _compiled()(inputs["input"], inputs["target"], alpha=ALPHA, smooth=SMOOTH,
                reduction=REDUCTION).backward()


def _plain(inputs):
    plain_dsc(inputs["input"], inputs["target"]).backward()


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
        Candidate("anchor", "torch-formula", _plain),
    ]

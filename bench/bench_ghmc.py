"""GHM-C benchmark cases: mmdet's per-bin loop against the fused passes.

Each case is logits ``[N, 270]`` (float32 or bfloat16), float 0/1 targets
(~2% positive), bins=10, momentum=0.75 with an ``acc_sum`` state, ``mean``.
Every candidate runs forward and ``loss.backward()``:

- ``fused-<backend>``: ``fused_losses.ghmc(backend=...)`` per native fused backend;
- ``eager``: ``fused_losses.ghmc(backend="torch")``, the vectorised reference;
- ``compile``: ``torch.compile`` of ``fused_losses.reference.ghmc``;
- ``anchor`` (backend ``mmdet``): mmdet's ``GHMC`` algorithm, a Python loop
  over bins with a host sync per bin, written out here;
- ``focal_bce-<backend>``: fused ``focal_bce`` on the same data, the cost of
  a plain one-pass loss (the issue's ceiling is 1.5x it on GPU, 2x on CPU).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import fused_losses
from fused_losses import reference

from ._case import Candidate, Case, grid
from .bench_focal_bce import fused_backends

LOSS = "ghmc"
NUM_CLASSES = 270
SHAPES = ((65536, NUM_CLASSES), (262144, NUM_CLASSES))
QUICK_SHAPES = ((4096, NUM_CLASSES),)
DTYPES = (torch.float32, torch.bfloat16)
BINS, MOMENTUM = 10, 0.75

_compiled_reference = None


def _make_inputs(shape, dtype, device) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    logits = (2 * torch.randn(shape, generator=gen, device=device)).to(dtype)
    target = (torch.rand(shape, generator=gen, device=device) < 0.02).float()
    return {"input": logits.requires_grad_(), "target": target,
            "acc_sum": torch.zeros(BINS, device=device)}


def cases(device, quick: bool = False) -> list:
    return grid(LOSS, QUICK_SHAPES if quick else SHAPES, DTYPES, device, _make_inputs)


def mmdet_ghmc(pred, target, acc_sum, bins: int = BINS, momentum: float = MOMENTUM):
    """mmdet's GHMC.forward (no label_weight): one masked pass and two host
    syncs per bin, as people run it today."""
    edges = torch.arange(bins + 1, device=pred.device).float() / bins
    edges[-1] += 1e-6
    weights = torch.zeros_like(pred)
    g = torch.abs(pred.sigmoid().detach() - target)
    tot = max(float(pred.numel()), 1.0)
    n = 0
    for i in range(bins):
        inds = (g >= edges[i]) & (g < edges[i + 1])
        num_in_bin = inds.sum().item()
        if num_in_bin > 0:
            acc_sum[i] = momentum * acc_sum[i] + (1 - momentum) * num_in_bin
            # Cast: mmdet's code assumes fp32 logits and fails on bf16 here.
            weights[inds] = (tot / acc_sum[i]).to(weights.dtype)
            n += 1
    if n > 0:
        weights = weights / n
    return F.binary_cross_entropy_with_logits(pred, target, weights, reduction="sum") / tot


def _compiled():
    global _compiled_reference
    if _compiled_reference is None:
        _compiled_reference = torch.compile(reference.ghmc, dynamic=False)
    return _compiled_reference


def _ghmc(inputs, backend):
    fused_losses.ghmc(inputs["input"], inputs["target"], bins=BINS, momentum=MOMENTUM,
                      acc_sum=inputs["acc_sum"], backend=backend).backward()


def _compile(inputs):
    _compiled()(inputs["input"], inputs["target"], bins=BINS, momentum=MOMENTUM,
                acc_sum=inputs["acc_sum"]).backward()


def _mmdet(inputs):
    mmdet_ghmc(inputs["input"], inputs["target"].to(inputs["input"].dtype),
               inputs["acc_sum"]).backward()


def _focal(inputs, backend):
    fused_losses.focal_bce(inputs["input"], inputs["target"], backend=backend).backward()


def candidates(case: Case) -> list:
    natives = fused_backends(case.device)
    return ([Candidate(f"fused-{b}", b, functools.partial(_ghmc, backend=b)) for b in natives]
            + [Candidate("eager", "torch", functools.partial(_ghmc, backend="torch")),
               Candidate("compile", "inductor", _compile),
               Candidate("anchor", "mmdet", _mmdet)]
            + [Candidate(f"focal_bce-{b}", b, functools.partial(_focal, backend=b))
               for b in natives])

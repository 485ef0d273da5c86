"""GHM-C benchmark cases: mmdet's per-bin loop against the fused passes.

Each case is logits ``[N, 270]`` (float32 or bfloat16; ``2 * randn``), float
0/1 targets (~2% positive), bins=10, momentum=0.75 with an ``acc_sum`` state,
``mean``. The candidates are ``_case.LossBench``'s, with ``fused_losses.ghmc``
and ``reference.ghmc`` (but no ``fused`` row with what auto gives where no
fused backend is native); the ``anchor`` (backend ``mmdet``) is mmdet's
``GHMC`` algorithm, a Python loop over bins with a host sync per bin, written
out here. After them, ``focal_bce-<backend>``: fused ``focal_bce`` on the same
data, the cost of a plain one-pass loss (the issue's ceiling is 1.5x it on GPU,
2x on CPU).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import fused_losses
from fused_losses import reference

from ._case import Candidate, Case, LossBench, multilabel_inputs

BINS, MOMENTUM = 10, 0.75


def mmdet_ghmc(pred, target, acc_sum, bins: int = BINS, momentum: float = MOMENTUM):
    """mmdet's GHMC.forward (no label_weight), in the logits' dtype: one masked
    pass and two host syncs per bin, as people run it today."""
    target = target.to(pred.dtype)
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


def _acc_sum(gen, shape, device) -> dict:
    return {"acc_sum": torch.zeros(BINS, device=device)}


def _focal(inputs, backend):
    fused_losses.focal_bce(inputs["input"], inputs["target"], backend=backend).backward()


class _GhmcBench(LossBench):
    def candidates(self, case: Case) -> list:
        return super().candidates(case) + [
            Candidate(f"focal_bce-{b}", b, functools.partial(_focal, backend=b))
            for b in self.native_backends(case.device)]


BENCH = _GhmcBench("ghmc", shapes=((65536, 270), (262144, 270)), quick_shapes=((4096, 270),),
                   make_inputs=functools.partial(multilabel_inputs, logit_scale=2.0,
                                                 target_dtype=torch.float32, more=_acc_sum),
                   fused=fused_losses.ghmc, reference=reference.ghmc,
                   anchor=("mmdet", mmdet_ghmc), options=dict(bins=BINS, momentum=MOMENTUM),
                   auto_fallback=False)

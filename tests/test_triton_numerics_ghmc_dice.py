"""Per-element accuracy of the Triton GHM-C and dice kernels against the float64
reference, under the numerics contract of DESIGN.md: fp32 loss and gradient
within 2e-5 relative (with the formula's own 2-ulp conditioning as slack, the
same measure as ``test_triton_numerics.py``), logits of ±1e4 finite.

GHM-C's weights depend on which bin each g = |σ(x) - t| falls in, and an fp32
g one ulp from an edge may fall on the other side than the float64 one: the
inputs keep every g at least 1e-4 away from the interior edges (g = 0 and
g = 1, the ±1e4 logits, cannot cross an edge: every g lies in [0, 1]).
"""
from __future__ import annotations

import importlib

import pytest
import torch

import fused_losses
from fused_losses import reference
from helpers import triton_device
from test_triton_numerics import MEASURED, _check, _f32, _inputs

pytestmark = pytest.mark.skipif(
    "triton" not in fused_losses.available_backends(triton_device()),
    reason="triton backend unavailable")


def _away_from_edges(x, t, bins):
    """Move logits whose float64 g is within 1e-4 of an interior bin edge."""
    g = (torch.sigmoid(x.double()) - t.double()).abs() * bins
    near = ((g - g.round()).abs() < 1e-4 * bins) & (g.round() >= 1) & (g.round() <= bins - 1)
    safe = float(torch.logit(torch.tensor(0.5 / bins, dtype=torch.float64)))
    return torch.where(near, torch.where(t.double() > 0.5, -safe, safe).to(x.dtype), x)


def _ghmc_oracle(x, t, lw, bins, reduction):
    """The reference's bins and weights, with bce = t·softplus(-x) + (1-t)·softplus(x):
    ``reference.ghmc`` takes bce from torch's binary_cross_entropy_with_logits,
    whose log(1 + ...) rounds softplus(-50) = 2e-22 to 0 even in float64."""
    mod = importlib.import_module("fused_losses.reference.ghmc")
    index, hist = mod.ghmc_histogram(x, t, lw, bins)
    weights = mod.ghmc_weights(hist, None, 0.0, reduction == "mean")
    w = torch.cat([weights.to(x.dtype), weights.new_zeros(2, dtype=x.dtype)])[index]
    t = t.to(x.dtype)
    loss = w * (t * torch.nn.functional.softplus(-x) + (1 - t) * torch.nn.functional.softplus(x))
    return loss if reduction == "none" else loss.sum()


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("bins", [10, 30])
@pytest.mark.parametrize("label_weight", [None, "class"])
def test_ghmc_accuracy(kind, bins, label_weight):
    x, t, pw = _inputs(kind)
    x = _away_from_edges(x, t, bins)
    dev = triton_device()
    lw = None if label_weight is None else (torch.arange(x.shape[1]) % 3 != 1).float()

    def fused(z, t, pw, reduction):
        return fused_losses.ghmc(z.to(dev), t.to(dev), bins=bins, reduction=reduction,
                                 label_weight=None if lw is None else lw.to(dev),
                                 backend="triton").cpu()

    def ref(z, t, pw, reduction):
        return _ghmc_oracle(z, t, None if lw is None else lw.to(z.dtype), bins, reduction)

    _check(f"ghmc {kind} bins={bins} lw={label_weight}", fused, ref, x, t, pw)


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("square", [False, True])
def test_dice_accuracy(kind, alpha, square):
    x, t, pw = _inputs(kind)
    dev = triton_device()
    kw = dict(alpha=_f32(alpha), square_denominator=square, smooth=1.0)

    def fused(z, t, pw, reduction):
        return fused_losses.dice_loss(z.to(dev), t.to(dev), reduction=reduction,
                                      backend="triton", **kw).cpu()

    def ref(z, t, pw, reduction):
        return reference.dice_loss(z, t, reduction=reduction, **kw)

    _check(f"dice {kind} a={alpha} sq={square}", fused, ref, x, t, pw)


def test_extreme_logits_finite():
    """±1e4 logits: GHM-C and dice losses and gradients stay finite."""
    x = torch.tensor([[1e4, -1e4, 1e4, -1e4, 3e4, -3e4, 0.3, 1e-30]])
    t = torch.tensor([[True, False, False, True, True, False, True, False]])
    dev = triton_device()
    for fn in (lambda z: fused_losses.ghmc(z, t.to(dev), reduction="none", backend="triton"),
               lambda z: fused_losses.dice_loss(z, t.to(dev), reduction="none",
                                                backend="triton"),
               lambda z: fused_losses.dice_loss(z, t.to(dev), alpha=0.5, reduction="none",
                                                backend="triton")):
        z = x.to(dev).requires_grad_(True)
        loss = fn(z)
        loss.sum().backward()
        assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()


def test_report(capsys):
    """The largest measured errors (run with -s to see them)."""
    mine = {k: v for k, v in MEASURED.items() if k.startswith(("ghmc", "dice"))}
    if mine:
        worst = [max(v[i] for v in mine.values()) for i in range(4)]
        print(f"ghmc/dice max: bound loss {worst[0]:.2e} grad {worst[1]:.2e}; plain relative "
              f"loss {worst[2]:.2e} grad {worst[3]:.2e}")

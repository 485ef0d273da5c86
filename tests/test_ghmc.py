"""GHM-C: every backend against a plain transcription of mmdet's loop.

Argument checks, the module, opcheck and determinism are in the conformance
battery (tests/test_conformance*.py)."""
import pytest
import torch
import torch.nn.functional as F

import fused_losses
from fused_losses import GHMC
from fused_losses.spec import BY_STEM
from helpers import assert_close

BACKENDS = ["torch", "triton", "cpu", "cuda"]
REDUCTIONS = ["mean", "sum", "none"]


def mmdet_ghmc(pred, target, label_weight, bins, momentum, acc_sum, reduction):
    """The algorithm as written in the issue: a Python loop over bins, with
    host syncs (``.item()``), in fp32. ``acc_sum`` is updated in place."""
    edges = torch.arange(bins + 1).float() / bins
    edges[-1] += 1e-6
    x, t = pred.float(), target.float()
    g = (torch.sigmoid(x.detach()) - t).abs()
    valid = torch.ones_like(g, dtype=torch.bool) if label_weight is None else \
        (label_weight > 0).expand_as(g)
    tot = max(valid.float().sum().item(), 1.0)
    weights = torch.zeros_like(g)
    n = 0
    for i in range(bins):
        inds = (g >= edges[i]) & (g < edges[i + 1]) & valid
        count = inds.sum().item()
        if count > 0:
            if momentum > 0:
                acc_sum[i] = momentum * acc_sum[i] + (1 - momentum) * count
                weights[inds] = tot / acc_sum[i]
            else:
                weights[inds] = tot / count
            n += 1
    if n > 0:
        weights = weights / n
    loss = F.binary_cross_entropy_with_logits(x, t, weights, reduction="none")
    return {"none": loss, "sum": loss.sum(), "mean": loss.sum() / tot}[reduction]


def device_for(backend):
    if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def skip_unless(backend):
    if backend not in fused_losses.available_backends(device_for(backend)):
        pytest.skip(f"{backend} backend unavailable here")
    if not fused_losses.ops.has_backend(BY_STEM["ghmc"], backend):
        pytest.skip(f"this build of the {backend} backend has no GHM-C kernels")


def away_from_edges(x, t, bins):
    """Replace logits whose g = |σ(x) - t| lies within 1e-3 of a bin edge by one
    in the middle of the first bin, so fp32 rounding cannot move an element
    across an edge (float32 vs other orders of operations)."""
    g = (torch.sigmoid(x.float()) - t.float()).abs()
    near = ((g * bins) - (g * bins).round()).abs() < 1e-3 * bins
    safe = torch.logit(torch.tensor(0.5 / bins)).to(x.dtype)
    return torch.where(near, torch.where(t.float() > 0.5, -safe, safe), x)


def make(shape, dtype=torch.float32, bins=10, seed=0, hard=True):
    gen = torch.Generator().manual_seed(seed)
    t = (torch.rand(shape, generator=gen) < 0.1).float()
    if not hard:
        t = torch.where(torch.rand(shape, generator=gen) < 0.5, t, torch.rand(shape, generator=gen))
    x = (torch.randn(shape, generator=gen) * 3).to(dtype)
    return away_from_edges(x, t, bins), t


def run_steps(backend, x, t, bins, momentum, label_weight, reduction, steps):
    """Losses and input gradients over ``steps`` calls, plus the final acc_sum."""
    dev = device_for(backend)
    acc = torch.zeros(bins, device=dev)
    xs = x.to(dev).detach().requires_grad_(True)
    lw = None if label_weight is None else label_weight.to(dev)
    out = []
    for _ in range(steps):
        xs.grad = None
        if backend == "mmdet":
            loss = mmdet_ghmc(xs, t, label_weight, bins, momentum, acc, reduction)
        else:
            loss = fused_losses.ghmc(xs, t.to(dev), bins=bins, momentum=momentum,
                                     acc_sum=acc if momentum else None, label_weight=lw,
                                     reduction=reduction, backend=backend)
        upstream = torch.linspace(0.5, 1.5, loss.numel(), device=dev).reshape(loss.shape)
        (loss * upstream.to(loss.dtype)).sum().backward()
        out.append((loss.detach().cpu(), xs.grad.cpu()))
    return out, acc.cpu()


def compare(backend, x, t, bins, momentum=0.0, label_weight=None, reduction="mean", steps=1):
    skip_unless(backend)
    got, acc = run_steps(backend, x, t, bins, momentum, label_weight, reduction, steps)
    want, want_acc = run_steps("mmdet", x, t, bins, momentum, label_weight, reduction, steps)
    for (loss, grad), (loss_ref, grad_ref) in zip(got, want):
        assert_close(loss, loss_ref.to(loss.dtype), x.dtype, "loss")
        assert_close(grad, grad_ref.to(grad.dtype), x.dtype, "grad")
    assert_close(acc, want_acc, torch.float32, "acc_sum")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("momentum", [0.0, 0.75])
@pytest.mark.parametrize("bins", [1, 10, 30, 64])
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_transcription_over_steps(backend, bins, momentum, reduction):
    x, t = make((37, 270), bins=bins, hard=bins != 30)
    mask = (torch.rand(37, 270, generator=torch.Generator().manual_seed(4)) > 0.1).float()
    compare(backend, x, t, bins, momentum, mask, reduction, steps=3)


@pytest.mark.parametrize("lw", ["none", "row", "bool", "all_zero"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_label_weight_masks(backend, lw):
    x, t = make((3, 5, 7))
    gen = torch.Generator().manual_seed(2)
    weights = {"none": None, "row": (torch.rand(3, 5, 1, generator=gen) > 0.3).float(),
               "bool": torch.rand(3, 5, 7, generator=gen) > 0.4,
               "all_zero": torch.zeros(3, 5, 7)}[lw]
    for reduction in REDUCTIONS:
        compare(backend, x, t, 10, 0.5, weights, reduction, steps=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_logit_dtypes(backend, dtype):
    interpreted = backend == "triton" and device_for(backend) == "cpu"  # ~100x slower
    x, t = make((37, 270) if interpreted else (129, 1001), dtype, bins=10)
    for reduction in REDUCTIONS:
        compare(backend, x, t, 10, 0.0, None, reduction)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_in_one_bin_and_odd_shapes(backend):
    t = torch.zeros(64, 33)
    x = torch.full((64, 33), float(torch.logit(torch.tensor(0.35))))
    compare(backend, x, t, 10, 0.75, None, "mean", steps=2)
    for shape in [(1, 1), (1001,), (23, 41)]:
        x, t = make(shape)
        compare(backend, x, t, 10, 0.0, None, "sum")


def test_momentum_needs_an_acc_sum():
    with pytest.raises(ValueError, match="acc_sum"):
        fused_losses.ghmc(torch.randn(4, 6), torch.rand(4, 6), momentum=0.5)


def test_module_without_process_group_says_so():
    with pytest.raises(RuntimeError, match="torch.distributed"):
        GHMC(sync_distributed=True)(torch.randn(2, 3), torch.rand(2, 3))

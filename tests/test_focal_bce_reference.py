"""The pure-PyTorch reference against torch, the torchvision formula and calculus."""
import pytest
import torch
import torch.nn.functional as F

import fused_losses
from helpers import assert_close, forward_backward, make_inputs

REDUCTIONS = ["none", "mean", "sum"]


def torchvision_focal(x, t, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss's formula, written out (alpha < 0: none)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighting", ["plain", "weight", "pos_weight", "both", "row_weight"])
@pytest.mark.parametrize("target_kind", ["soft", "hard"])
def test_gamma0_equals_torch_bce(reduction, weighting, target_kind):
    x, t = make_inputs((37, 270), target_dtype=torch.float32 if target_kind == "soft"
                       else torch.bool)
    tf = t.float()
    gen = torch.Generator().manual_seed(3)
    w = {"weight": torch.rand(270, generator=gen), "row_weight": torch.rand(37, 1, generator=gen)}
    pw = torch.rand(270, generator=gen) * 4
    weight = w.get(weighting, w["weight"] if weighting == "both" else None)
    pos_weight = pw if weighting in ("pos_weight", "both") else None
    for fn in (lambda z: fused_losses.binary_cross_entropy_with_logits(
                   z, tf, weight=weight, reduction=reduction, pos_weight=pos_weight),
               lambda z: fused_losses.focal_bce(z, t, gamma=0.0, weight=weight,
                                                pos_weight=pos_weight, reduction=reduction,
                                                backend="torch")):
        got = forward_backward(fn, x)
        ref = forward_backward(lambda z: F.binary_cross_entropy_with_logits(
            z, tf, weight=weight, reduction=reduction, pos_weight=pos_weight), x)
        assert_close(got[0], ref[0], what="loss")
        assert_close(got[1], ref[1], what="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha", [None, 0.25, 0.9])
@pytest.mark.parametrize("gamma", [2.0, 0.5, 1.3])
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool])
def test_equals_torchvision_formula(reduction, alpha, gamma, target_dtype):
    x, t = make_inputs((37, 270), torch.float64, target_dtype)
    got = forward_backward(lambda z: fused_losses.focal_bce(
        z, t, gamma=gamma, alpha=alpha, reduction=reduction, backend="torch"), x)
    ref = forward_backward(lambda z: torchvision_focal(
        z, t.double(), -1 if alpha is None else alpha, gamma, reduction), x)
    assert_close(got[0], ref[0], torch.float64, "loss")
    assert_close(got[1], ref[1], torch.float64, "grad")


@pytest.mark.parametrize("options", [
    dict(gamma=2.0), dict(gamma=0.5, alpha=0.3), dict(gamma=1.7, label_smoothing=0.1),
    dict(gamma=2.0, pos_weight="pw", weight="w", alpha="alpha"),
    dict(gamma=2.0, ignore_index=-1, reduction="mean"),
])
@pytest.mark.parametrize("target_dtype", [torch.float64, torch.int64])
def test_gradcheck_float64(options, target_dtype):
    x, t = make_inputs((5, 7), torch.float64, target_dtype, scale=2.0)
    if "ignore_index" in options:
        t = t.clone()
        t[0, :3] = -1
    gen = torch.Generator().manual_seed(5)
    extra = {"pw": torch.rand(7, generator=gen, dtype=torch.float64) + 0.5,
             "w": torch.rand(5, 1, generator=gen, dtype=torch.float64),
             "alpha": torch.rand(7, generator=gen, dtype=torch.float64)}
    opts = {k: extra.get(v, v) if isinstance(v, str) and k != "reduction" else v
            for k, v in options.items()}
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: fused_losses.focal_bce(z, t, backend="torch", **opts), (x,))


def test_gradcheck_target_gamma0_matches_torch():
    x, t = make_inputs((4, 6), torch.float64, torch.float64)
    t.requires_grad_(True)
    ours = fused_losses.binary_cross_entropy_with_logits(x, t, reduction="sum")
    theirs = F.binary_cross_entropy_with_logits(x, t, reduction="sum")
    g_ours, = torch.autograd.grad(ours, t)
    g_theirs, = torch.autograd.grad(theirs, t)
    assert_close(g_ours, g_theirs, what="target grad")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignore_index_semantics(reduction):
    x, t = make_inputs((37, 270), target_dtype=torch.int64)
    t[::3] = -100
    keep = t != -100
    got = forward_backward(lambda z: fused_losses.focal_bce(
        z, t, ignore_index=-100, reduction=reduction, backend="torch"), x)
    full = fused_losses.focal_bce(x, t.clamp_min(0), reduction="none", backend="torch")
    expected = {"none": full * keep, "sum": (full * keep).sum(),
                "mean": (full * keep).sum() / keep.sum()}[reduction]
    assert_close(got[0], expected, what="loss")
    assert (got[1][~keep] == 0).all()


def test_all_ignored_is_zero_not_nan():
    x, t = make_inputs((4, 3), target_dtype=torch.int64)
    t.fill_(-1)
    loss, grad = forward_backward(lambda z: fused_losses.focal_bce(
        z, t, ignore_index=-1, backend="torch"), x)
    assert loss.item() == 0.0 and (grad == 0).all()


def test_label_smoothing_is_target_rescaling():
    x, t = make_inputs((8, 9), target_dtype=torch.bool)
    eps = 0.2
    got = fused_losses.focal_bce(x, t, label_smoothing=eps, backend="torch")
    expected = fused_losses.focal_bce(x, t.float() * (1 - eps) + eps / 2, backend="torch")
    assert_close(got, expected)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0, 2.5])
@pytest.mark.parametrize("dtype,big", [(torch.float32, 1e4), (torch.float16, 6e4),
                                       (torch.bfloat16, 1e4)])
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool])
def test_extreme_logits_stay_finite(gamma, dtype, big, target_dtype):
    x = torch.tensor([[-big, big, -big, big, 0.0, 30.0, -30.0, 90.0]], dtype=dtype)
    t = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0.0]]).to(target_dtype)
    loss, grad = forward_backward(lambda z: fused_losses.focal_bce(
        z, t, gamma=gamma, reduction="none", backend="torch"), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_nan_logit_propagates():
    x, t = make_inputs((4, 5))
    x[1, 2] = float("nan")
    assert fused_losses.focal_bce(x, t, backend="torch").isnan()

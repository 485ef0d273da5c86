"""The ASL reference against the paper's official formula, calculus and the
equivalences it has with BCE and focal BCE."""
import pytest
import torch
import torch.nn.functional as F

import fused_losses
from helpers import assert_close, forward_backward, make_inputs

REDUCTIONS = ["none", "mean", "sum"]


def official_asl(x, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8, detach=True,
                 weight=None, reduction="sum"):
    """The official AsymmetricLoss.forward written out (negated per element), except
    that the detached focal weight is built under ``torch.no_grad()``, which
    restores the outer grad mode instead of forcing it on."""
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    loss = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            pt = xs_pos * y + xs_neg * (1 - y)
            w = torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
        loss = loss * w
    loss = -loss
    if weight is not None:
        loss = loss * weight
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


def close_to_official(got, ref, what):
    """float64 comparison, loose enough for the official code's own rounding: its
    log(1 - σ(x)) cancels (relative error ~1e-16/σ(-x)), ours does not."""
    assert torch.isfinite(got).all(), what
    # The official gradient is NaN where 1 - p_t = 0 and γ < 1 (pow's backward
    # forms inf·0); ours takes 0 there. Compare where it is defined.
    keep = torch.isfinite(ref)
    got, ref = got[keep], ref[keep]
    scale = ref.abs().max().item() if ref.numel() else 0.0
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-9 * max(scale, 1e-30), msg=what)


def asl_ref(x, t, **kw):
    return fused_losses.asymmetric_loss(x, t, backend="torch", **kw)


CONFIGS = {
    "paper": dict(),
    "no-detach": dict(detach_focal_weight=False),
    "no-clip": dict(clip=0.0, gamma_pos=0.0, gamma_neg=2.0),
    "gamma<1": dict(gamma_pos=0.5, gamma_neg=0.7, clip=0.1, detach_focal_weight=False),
    "gamma-nonint": dict(gamma_pos=1.3, gamma_neg=2.6, clip=0.02),
    "gamma0": dict(gamma_pos=0.0, gamma_neg=0.0),
    "big-eps": dict(eps=1e-3, clip=0.0, detach_focal_weight=False),
}


def _official_kwargs(kw):
    return dict(gamma_pos=kw.get("gamma_pos", 1.0), gamma_neg=kw.get("gamma_neg", 4.0),
                clip=kw.get("clip", 0.05), eps=kw.get("eps", 1e-8),
                detach=kw.get("detach_focal_weight", True))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_dtype", [torch.float64, torch.bool])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_equals_official_formula_float64(name, target_dtype, reduction):
    kw = CONFIGS[name]
    x, t = make_inputs((37, 270), torch.float64, target_dtype, scale=4.0)
    x[0, :6] = torch.tensor([-30.0, 30.0, -25.0, 25.0, -3.0, 3.0], dtype=torch.float64)
    w = torch.rand(270, dtype=torch.float64)
    got = forward_backward(lambda z: asl_ref(z, t, weight=w, reduction=reduction, **kw), x)
    ref = forward_backward(lambda z: official_asl(z, t.double(), weight=w, reduction=reduction,
                                                  **_official_kwargs(kw)), x)
    close_to_official(got[0], ref[0], "loss")
    close_to_official(got[1], ref[1], "grad")


@pytest.mark.parametrize("target_dtype", [torch.float64, torch.int64])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradcheck_float64(name, target_dtype):
    """The undetached loss's gradient is its derivative (a detached focal
    weight is, by design, not differentiated)."""
    x, t = make_inputs((5, 7), torch.float64, target_dtype, scale=2.0)
    w = torch.rand(5, 1, dtype=torch.float64)
    x.requires_grad_(True)
    kw = dict(CONFIGS[name], detach_focal_weight=False)
    assert torch.autograd.gradcheck(
        lambda z: asl_ref(z, t, weight=w, reduction="sum", **kw), (x,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool])
def test_no_focus_no_clip_equals_bce(reduction, target_dtype):
    x, t = make_inputs((37, 270), torch.float32, target_dtype)
    w = torch.rand(37, 1)
    got = forward_backward(lambda z: asl_ref(z, t, gamma_pos=0.0, gamma_neg=0.0, clip=0.0,
                                             eps=0.0, weight=w, reduction=reduction), x)
    ref = forward_backward(lambda z: F.binary_cross_entropy_with_logits(
        z, t.float(), weight=w, reduction=reduction), x)
    assert_close(got[0], ref[0], what="loss")
    assert_close(got[1], ref[1], what="grad")


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.5])
@pytest.mark.parametrize("target_dtype", [torch.float64, torch.bool])
def test_symmetric_undetached_equals_focal_bce(gamma, target_dtype):
    x, t = make_inputs((37, 270), torch.float64, target_dtype)
    got = forward_backward(lambda z: asl_ref(z, t, gamma_pos=gamma, gamma_neg=gamma, clip=0.0,
                                             eps=0.0, detach_focal_weight=False), x)
    ref = forward_backward(lambda z: fused_losses.focal_bce(
        z, t, gamma=gamma, reduction="sum", backend="torch"), x)
    assert_close(got[0], ref[0], torch.float64, "loss")
    assert_close(got[1], ref[1], torch.float64, "grad")


def test_detach_differs_by_the_focal_derivative():
    """grad(detach=False) - grad(detach=True) = -Σ A·d(1-p_t)^γ/dx, A held constant."""
    x, t = make_inputs((37, 270), torch.float64, torch.bool)
    def grad(**kw):
        z = x.detach().clone().requires_grad_(True)
        return torch.autograd.grad(asl_ref(z, t, **kw), z)[0]

    g_det, g_full = grad(), grad(detach_focal_weight=False)
    z = x.detach().clone().requires_grad_(True)
    tf = t.double()
    p = torch.sigmoid(z)
    p_m = (1 - p + 0.05).clamp(max=1)
    a = (tf * torch.log(p.clamp(min=1e-8)) + (1 - tf) * torch.log(p_m.clamp(min=1e-8)))
    focal = (1 - (p * tf + p_m * (1 - tf))) ** (1.0 * tf + 4.0 * (1 - tf))
    g_focal, = torch.autograd.grad((-a.detach() * focal).sum(), z)
    assert (g_full - g_det).abs().max() > 1e-3  # the two really differ
    assert_close(g_full - g_det, g_focal, torch.float64, "focal part")


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_outer_no_grad_stays_intact(backend):
    x, t = make_inputs((6, 9))
    x.requires_grad_(True)
    with torch.no_grad():
        loss = fused_losses.asymmetric_loss(x, t, backend=backend)
        assert not torch.is_grad_enabled()
        assert not loss.requires_grad
    assert torch.is_grad_enabled()
    with torch.enable_grad():
        fused_losses.asymmetric_loss(x, t, backend=backend).backward()
        assert torch.is_grad_enabled()


def test_soft_targets_follow_the_formula():
    x, t = make_inputs((37, 270), torch.float64, torch.float64)
    assert ((t > 0) & (t < 1)).any()
    for detach in (True, False):
        got = forward_backward(lambda z: asl_ref(z, t, detach_focal_weight=detach), x)
        ref = forward_backward(lambda z: official_asl(z, t, detach=detach), x)
        close_to_official(got[0], ref[0], "loss")
        close_to_official(got[1], ref[1], "grad")


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool])
def test_fp16_logits_finite_including_large(detach, target_dtype):
    """The official code gives NaN in fp16 (eps underflows, log(0)·0); ours must not."""
    x, t = make_inputs((16, 33), torch.float16, target_dtype, scale=8.0)
    x[0, :8] = torch.tensor([-65000, 65000, -65000, 65000, -20, 20, 0, 1e4], dtype=torch.float16)
    t[0, :8] = torch.tensor([0, 0, 1, 1, 1, 0, 1, 1]).to(target_dtype)
    for reduction in ("none", "mean"):
        loss, grad = forward_backward(lambda z: asl_ref(
            z, t, reduction=reduction, detach_focal_weight=detach), x)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        ref = forward_backward(lambda z: asl_ref(
            z.float(), t, reduction=reduction, detach_focal_weight=detach), x)
        assert_close(loss, ref[0].half(), torch.float16, "loss")
        assert_close(grad, ref[1].half(), torch.float16, "grad")


@pytest.mark.parametrize("clip", [0.0, 0.05])
@pytest.mark.parametrize("gamma_neg", [0.0, 0.3, 4.0])
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool])
def test_extreme_logits_and_gamma_below_one_stay_finite(clip, gamma_neg, target_dtype):
    x = torch.tensor([[-1e4, 1e4, -1e4, 1e4, 0.0, 30.0, -30.0, 90.0, -90.0, -2.9444, 17.0]])
    t = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 1, 0, 0, 1.0]]).to(target_dtype)
    for detach in (True, False):
        loss, grad = forward_backward(lambda z: asl_ref(
            z, t, gamma_pos=0.4, gamma_neg=gamma_neg, clip=clip, detach_focal_weight=detach,
            reduction="none"), x)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_nan_logit_propagates():
    x, t = make_inputs((4, 5))
    x[1, 2] = float("nan")
    assert asl_ref(x, t).isnan()

"""The ASL reference against the paper's official formula, timm's additions
(pos_weight, label smoothing, batchmean) written out, calculus and the
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


# -- timm's additions: pos_weight, label_smoothing, batchmean -------------------
def timm_asl(x, y, *, gamma_pos=1.0, gamma_neg=4.0, clip=0.05, eps=1e-8, detach=True,
             weight=None, pos_weight=None, smoothing=0.0, reduction="sum"):
    """The formula of timm's AsymmetricLossMultiLabel, written out naively in
    float64 (independent of the library): y' = y(1-ε) + ε/2;
    loss = -w·(p_w·y'·log max(p, eps) + (1-y')·log max(p_m, eps))·(1 - p_t)^γ,
    p_m = min(1 - p + clip, 1), p_t = p·y' + p_m·(1-y'), γ = γ₊y' + γ₋(1-y');
    a detached focal weight is ``.detach()``-ed."""
    x, y = x.double(), y.double()
    y = y * (1.0 - smoothing) + smoothing / 2
    p = torch.sigmoid(x)
    p_m = 1.0 - p
    if clip > 0:
        p_m = torch.clamp(p_m + clip, max=1.0)
    pos_term = y * torch.log(torch.clamp(p, min=eps))
    if pos_weight is not None:
        pos_term = pos_term * (pos_weight.double() if torch.is_tensor(pos_weight)
                               else pos_weight)
    total = pos_term + (1.0 - y) * torch.log(torch.clamp(p_m, min=eps))
    if gamma_pos > 0 or gamma_neg > 0:
        focal = torch.pow(1.0 - (p * y + p_m * (1.0 - y)), gamma_pos * y + gamma_neg * (1.0 - y))
        total = total * (focal.detach() if detach else focal)
    total = -total
    if weight is not None:
        total = total * weight.double()
    return {"none": total, "mean": total.mean(), "sum": total.sum(),
            "batchmean": total.sum() / x.shape[0]}[reduction]


TIMM_REDUCTIONS = ["none", "mean", "sum", "batchmean"]
POS_WEIGHTS = {"none": None, "float": 2.5, "tensor": "per-class"}


def pos_weight_value(kind, n_classes, dtype=torch.float32, device="cpu"):
    """None, a float, or a per-class [C] tensor in [0, 3] (one class at 0)."""
    if POS_WEIGHTS[kind] != "per-class":
        return POS_WEIGHTS[kind]
    gen = torch.Generator().manual_seed(5)
    w = torch.rand(n_classes, generator=gen, dtype=torch.float64) * 3.0
    w[0] = 0.0
    return w.to(dtype).to(device)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("pw", list(POS_WEIGHTS))
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("target_dtype", [torch.float64, torch.bool])
def test_timm_additions_equal_the_formula_float64(target_dtype, detach, pw, smoothing):
    x, t = make_inputs((37, 41), torch.float64, target_dtype, scale=4.0)
    x[0, :6] = torch.tensor([-30.0, 30.0, -25.0, 25.0, -3.0, 3.0], dtype=torch.float64)
    pos_weight = pos_weight_value(pw, 41, torch.float64)
    w = torch.rand(41, dtype=torch.float64)
    for reduction in TIMM_REDUCTIONS:
        got = forward_backward(lambda z: asl_ref(
            z, t, weight=w, pos_weight=pos_weight, label_smoothing=smoothing,
            detach_focal_weight=detach, reduction=reduction), x)
        ref = forward_backward(lambda z: timm_asl(
            z, t, weight=w, pos_weight=pos_weight, smoothing=smoothing, detach=detach,
            reduction=reduction), x)
        close_to_official(got[0], ref[0], f"loss {reduction}")
        close_to_official(got[1], ref[1], f"grad {reduction}")


@pytest.mark.parametrize("target_dtype", [torch.float64, torch.int64])
def test_gradcheck_pos_weight_and_smoothing_float64(target_dtype):
    """Undetached, with a per-class pos_weight and smoothing: the gradient w.r.t.
    the logits and w.r.t. the pos_weight tensor (the reference differentiates it)."""
    x, t = make_inputs((5, 7), torch.float64, target_dtype, scale=2.0)
    pw = (torch.rand(7, dtype=torch.float64) * 2).requires_grad_(True)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z, p: asl_ref(
        z, t, pos_weight=p, label_smoothing=0.2, gamma_pos=1.5, detach_focal_weight=False),
        (x, pw))


def test_smoothing_makes_hard_labels_soft():
    """ε moves bool labels to ε/2 and 1-ε/2: the same as those soft float labels."""
    x, t = make_inputs((37, 41), torch.float64, torch.bool)
    soft = t.double() * 0.8 + 0.1
    for detach in (True, False):
        got = forward_backward(lambda z: asl_ref(z, t, label_smoothing=0.2,
                                                 detach_focal_weight=detach), x)
        ref = forward_backward(lambda z: asl_ref(z, soft, detach_focal_weight=detach), x)
        assert_close(got[0], ref[0], torch.float64, "loss")
        assert_close(got[1], ref[1], torch.float64, "grad")


def test_pos_weight_one_is_none_and_batchmean_is_sum_over_rows():
    x, t = make_inputs((2, 3, 5), torch.float64)
    base = asl_ref(x, t, reduction="sum")
    assert_close(asl_ref(x, t, pos_weight=1.0), base, torch.float64)
    assert_close(asl_ref(x, t, pos_weight=torch.ones(5, dtype=torch.float64)), base,
                 torch.float64)
    assert_close(asl_ref(x, t, reduction="batchmean"), base / 2, torch.float64)

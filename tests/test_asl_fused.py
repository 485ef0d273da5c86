"""ASL on every fused backend (the ``fused`` fixture) where its numerics are
hardest: soft targets at p -> 1 and p near the clip, exponents below one; and
timm's additions (pos_weight, label smoothing, batchmean) against the float64
formula of test_asl_reference.timm_asl. Parity over shapes, dtypes and options
is in the conformance battery (tests/test_conformance.py)."""
import pytest
import torch

import fused_losses
from helpers import assert_close, forward_backward, make_inputs, parity_fn
from test_asl_reference import TIMM_REDUCTIONS, pos_weight_value, timm_asl


def test_soft_targets_near_certain(fused):
    backend, dev = fused
    x = torch.tensor([40.0, -40.0, 17.0, -17.0, 60.0, -2.9, -2.95], device=dev)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.999, 0.3, 0.0], device=dev)
    opts = dict(gamma_pos=0.25, gamma_neg=0.5, detach_focal_weight=False, reduction="none")
    loss, grad = forward_backward(lambda z: fused_losses.asymmetric_loss(
        z, t, backend=backend, **opts), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    parity_fn(fused_losses.asymmetric_loss, x, t, backend, **opts)


def check_against_timm(backend, dev, dtype, target_dtype, pw, smoothing, detach,
                       shape=(7, 13)):
    """Loss and gradient of ``backend`` (and the torch reference) in every
    reduction against the float64 formula on the same (rounded) logits."""
    x, t = make_inputs(shape, dtype, target_dtype, seed=2)
    pos_weight = pos_weight_value(pw, shape[-1])
    opts = dict(label_smoothing=smoothing, detach_focal_weight=detach)
    for reduction in TIMM_REDUCTIONS:
        want = forward_backward(lambda z: timm_asl(
            z, t, pos_weight=pos_weight, smoothing=smoothing, detach=detach,
            reduction=reduction), x.double())
        for b, d in ((backend, dev), ("torch", "cpu")):
            pwd = pos_weight.to(d) if torch.is_tensor(pos_weight) else pos_weight
            got = forward_backward(lambda z: fused_losses.asymmetric_loss(
                z, t.to(d), pos_weight=pwd, reduction=reduction, backend=b, **opts), x.to(d))
            assert got[0].dtype == dtype and got[1].dtype == dtype
            what = f"{b} {reduction}"
            assert_close(got[0], want[0].to(dtype), dtype, f"{what} loss")
            assert_close(got[1], want[1].to(dtype), dtype, f"{what} grad")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("pw", ["none", "float", "tensor"])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("target_dtype", [torch.bool, torch.float32])
def test_timm_formula_float32(fused, target_dtype, detach, pw, smoothing):
    check_against_timm(*fused, torch.float32, target_dtype, pw, smoothing, detach)


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("target_dtype", [torch.bool, torch.float32])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_timm_formula_half_logits(fused, dtype, target_dtype, detach):
    check_against_timm(*fused, dtype, target_dtype, "tensor", 0.1, detach)
    check_against_timm(*fused, dtype, target_dtype, "float", 0.0, detach)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_smoothed_bool_labels_take_the_soft_path(fused, smoothing):
    """Bool labels with ε > 0 equal the soft labels ε/2 and 1-ε/2 (a kernel
    that kept its hard-label select path would give the unsmoothed loss)."""
    backend, dev = fused
    x, t = make_inputs((9, 11), target_dtype=torch.bool, device=dev, seed=4)
    soft = t.float() * (1 - smoothing) + smoothing / 2
    for detach in (True, False):
        opts = dict(detach_focal_weight=detach, pos_weight=1.7, reduction="sum")
        got = forward_backward(lambda z: fused_losses.asymmetric_loss(
            z, t, label_smoothing=smoothing, backend=backend, **opts), x)
        ref = forward_backward(lambda z: fused_losses.asymmetric_loss(
            z, soft, backend=backend, **opts), x)
        assert_close(got[0], ref[0], torch.float32, "loss")
        assert_close(got[1], ref[1], torch.float32, "grad")

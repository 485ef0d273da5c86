"""The asymmetric loss's own API facts: the paper's defaults, how its
reductions relate (timm's batchmean included) and how the module holds and
checks timm's pos_weight and label_smoothing. Generic argument checks,
backends, modules, threads and compile are in the conformance battery
(tests/test_conformance*.py)."""
import math

import pytest
import torch

import fused_losses
from fused_losses import AsymmetricLoss
from helpers import assert_close, make_inputs

X, T = make_inputs((4, 6), target_dtype=torch.bool)


def test_module_defaults_are_the_papers():
    crit = AsymmetricLoss()
    assert (crit.gamma_pos, crit.gamma_neg, crit.clip, crit.eps) == (1.0, 4.0, 0.05, 1e-8)
    assert crit.detach_focal_weight is True and crit.reduction == "sum"
    assert_close(crit(X, T), fused_losses.asymmetric_loss(X, T))


def test_any_shape_and_reductions():
    x, t = make_inputs((2, 3, 4, 5))
    none = fused_losses.asymmetric_loss(x, t, reduction="none")
    assert none.shape == x.shape
    assert_close(fused_losses.asymmetric_loss(x, t, reduction="sum"), none.sum())
    assert_close(fused_losses.asymmetric_loss(x, t, reduction="mean"), none.mean())


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 5), (7,)])
def test_batchmean_is_the_sum_over_the_first_dim(shape):
    x, t = make_inputs(shape)
    total = fused_losses.asymmetric_loss(x, t, reduction="sum")
    got = fused_losses.asymmetric_loss(x, t, reduction="batchmean")
    assert_close(got, total / shape[0])
    assert_close(AsymmetricLoss(reduction="batchmean")(x, t), total / shape[0])


def test_module_holds_a_pos_weight_tensor_as_a_buffer():
    pw = torch.tensor([1.0, 2.0, 0.5, 3.0, 0.0, 1.5])
    crit = AsymmetricLoss(pos_weight=pw, label_smoothing=0.1)
    assert dict(crit.named_buffers())["pos_weight"] is pw
    assert torch.equal(crit.state_dict()["pos_weight"], pw)
    assert "pos_weight=tensor(6,)" in repr(crit) and "label_smoothing=0.1" in repr(crit)
    want = fused_losses.asymmetric_loss(X, T, pos_weight=pw, label_smoothing=0.1)
    assert_close(crit(X, T), want)
    crit.to(torch.float64)  # follows .to() (a dtype move here: no GPU needed)
    assert crit.pos_weight.dtype == torch.float64
    other = AsymmetricLoss(pos_weight=torch.zeros(6))
    other.load_state_dict(crit.state_dict())
    assert_close(other.pos_weight, pw.double())


def test_module_keeps_a_float_pos_weight_as_a_float():
    crit = AsymmetricLoss(pos_weight=2)
    assert type(crit.pos_weight) is float and crit.pos_weight == 2.0
    assert "pos_weight" not in crit.state_dict()
    assert_close(crit(X, T), fused_losses.asymmetric_loss(
        X, T, pos_weight=torch.full((6,), 2.0)))
    assert AsymmetricLoss().pos_weight is None and AsymmetricLoss().label_smoothing == 0.0


BAD = [
    ("pos_weight", -0.5, ValueError), ("pos_weight", math.nan, ValueError),
    ("pos_weight", math.inf, ValueError), ("pos_weight", "2", TypeError),
    ("pos_weight", torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0, 1.0]), ValueError),
    ("pos_weight", torch.tensor([1.0, math.nan, 1.0, 1.0, 1.0, 1.0]), ValueError),
    ("pos_weight", torch.full((6,), math.inf), ValueError),
    ("pos_weight", torch.ones(6, dtype=torch.int64), TypeError),
    ("label_smoothing", 1.0, ValueError), ("label_smoothing", -0.1, ValueError),
    ("label_smoothing", math.nan, ValueError), ("label_smoothing", None, TypeError),
]


@pytest.mark.parametrize("name,value,exc", BAD, ids=lambda v: repr(v)[:24])
def test_bad_values_raise_at_construction_and_call_naming_them(name, value, exc):
    with pytest.raises(exc, match=name):
        AsymmetricLoss(**{name: value})
    with pytest.raises(exc, match=name):
        fused_losses.asymmetric_loss(X, T, **{name: value})


@pytest.mark.parametrize("shape", [(5,), (2, 6), (4, 6, 1)])
def test_pos_weight_of_a_wrong_shape_raises_at_call(shape):
    crit = AsymmetricLoss(pos_weight=torch.ones(shape))  # the target's shape is not known yet
    for call in (lambda: crit(X, T), lambda: fused_losses.asymmetric_loss(
            X, T, pos_weight=torch.ones(shape))):
        with pytest.raises(ValueError, match="pos_weight"):
            call()

"""The dice reference against textbook transcriptions, calculus and edge cases."""
import pytest
import torch

import fused_losses
from helpers import assert_close, forward_backward, make_inputs

REDUCTIONS = ["none", "mean", "sum"]


def textbook_dice(x, t, smooth=1.0, alpha=0.0, square=False, reduction="mean"):
    """The issue's formula written out with σ and powers, classes moved to the front."""
    c = x.shape[1]
    p = torch.sigmoid(x.movedim(1, 0).reshape(c, -1))
    t = t.movedim(1, 0).reshape(c, -1).to(p.dtype)
    p = (1 - p) ** alpha * p
    k = 2 if square else 1
    dice = 1 - (2 * (p * t).sum(1) + smooth) / ((p ** k).sum(1) + (t ** k).sum(1) + smooth)
    return {"none": dice, "mean": dice.mean(), "sum": dice.sum()}[reduction]


def user_dice(x, t, smooth=1.0):
    """A typical user's soft dice: sigmoid, sums over dim 0, the ratio, mean."""
    p = torch.sigmoid(x)
    inter = (p * t).sum(0)
    return (1 - (2 * inter + smooth) / (p.sum(0) + t.sum(0) + smooth)).mean()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha,square", [(0.0, False), (0.0, True), (0.3, False),
                                          (1.0, True), (2.5, False)])
@pytest.mark.parametrize("shape", [(37, 27), (4, 3, 5, 7), (1, 1), (6, 2, 9)])
@pytest.mark.parametrize("target_dtype", [torch.float64, torch.bool])
def test_equals_textbook_float64(shape, alpha, square, reduction, target_dtype):
    x, t = make_inputs(shape, torch.float64, target_dtype)
    got = forward_backward(lambda z: fused_losses.dice_loss(
        z, t, smooth=0.7, alpha=alpha, square_denominator=square, reduction=reduction,
        backend="torch"), x)
    ref = forward_backward(lambda z: textbook_dice(z, t, 0.7, alpha, square, reduction), x)
    assert_close(got[0], ref[0], torch.float64, "loss")
    assert_close(got[1], ref[1], torch.float64, "grad")


def test_alpha0_equals_typical_user_dice():
    x, t = make_inputs((64, 270), torch.float32, torch.float32)
    got = forward_backward(lambda z: fused_losses.dice_loss(z, t, backend="torch"), x)
    ref = forward_backward(lambda z: user_dice(z, t), x)
    assert_close(got[0], ref[0], what="loss")
    assert_close(got[1], ref[1], what="grad")


def test_spatial_equals_channels_last_rows():
    """[N, C, H, W] reduces over N, H, W: the same as [N·H·W, C] rows."""
    x, t = make_inputs((3, 4, 5, 6), torch.float64, torch.float64)
    rows = lambda z: z.movedim(1, -1).reshape(-1, 4)  # noqa: E731
    for reduction in REDUCTIONS:
        a = fused_losses.dice_loss(x, t, alpha=0.4, reduction=reduction, backend="torch")
        b = fused_losses.dice_loss(rows(x), rows(t), alpha=0.4, reduction=reduction,
                                   backend="torch")
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("square", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(alpha, square, reduction):
    x, t = make_inputs((6, 4, 3), torch.float64, torch.float64, scale=2.0)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: fused_losses.dice_loss(
        z, t, smooth=0.5, alpha=alpha, square_denominator=square, reduction=reduction,
        backend="torch"), (x,))


def test_gradcheck_target_float64():
    x, t = make_inputs((5, 3), torch.float64, torch.float64)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u: fused_losses.dice_loss(
        x, u, alpha=0.3, square_denominator=True, backend="torch"), (t,))


def test_perfect_prediction_is_near_zero_and_smooth_handles_empty_class():
    t = torch.zeros(50, 3)
    t[:10, 0] = 1
    t[:, 1] = 1
    x = (t * 2 - 1) * 30.0  # σ = 0 or 1 to fp32 precision
    loss = fused_losses.dice_loss(x, t, reduction="none", backend="torch")
    # Class 2 has no positives and predicts none: (0 + s) / (0 + 0 + s) -> 0.
    assert loss.abs().max() < 1e-6


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 2.0])
@pytest.mark.parametrize("dtype,big", [(torch.float32, 1e4), (torch.float16, 6e4),
                                       (torch.bfloat16, 1e4)])
def test_extreme_logits_stay_finite(alpha, dtype, big):
    x = torch.tensor([[-big, big], [big, -big], [0.0, 30.0], [90.0, -90.0]], dtype=dtype)
    t = torch.tensor([[0, 1], [1, 0], [1, 1], [0, 1.0]])
    for square in (False, True):
        loss, grad = forward_backward(lambda z: fused_losses.dice_loss(
            z, t, alpha=alpha, square_denominator=square, reduction="none", backend="torch"), x)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_nan_logit_propagates_to_its_class():
    x, t = make_inputs((6, 4))
    x[2, 1] = float("nan")
    loss = fused_losses.dice_loss(x, t, reduction="none", backend="torch")
    assert loss[1].isnan() and not loss[[0, 2, 3]].isnan().any()

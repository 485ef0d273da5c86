"""Self-adjusting DSC oracles: the reference against the paper's formula and
float64 gradcheck. Every fused backend against the reference, bad input and
the module are in the conformance battery (tests/test_conformance*.py)."""
import pytest
import torch

import fused_losses
from helpers import assert_close, forward_backward, make_class_inputs

REDUCTIONS = ["none", "mean", "sum"]
fn = fused_losses.self_adjusting_dice_loss


def paper_formula(x, y, alpha, smooth, reduction):
    """Li et al.'s per-sample DSC written out in float64: softmax, gather, pow."""
    p = torch.softmax(x.double(), -1).gather(-1, y[:, None].long())[:, 0]
    p_tilde = (1 - p) ** alpha * p
    loss = 1 - (2 * p_tilde + smooth) / (p_tilde + 1 + smooth)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha,smooth", [(1.0, 1.0), (0.0, 1.0), (0.3, 0.0), (2.5, 0.5)])
def test_reference_equals_paper_formula(alpha, smooth, reduction):
    x, t = make_class_inputs((37, 11), torch.float64)
    got = forward_backward(lambda z: fn(z, t, alpha=alpha, smooth=smooth, reduction=reduction,
                                        backend="torch"), x)
    ref = forward_backward(lambda z: paper_formula(z, t, alpha, smooth, reduction), x)
    assert_close(got[0], ref[0], torch.float64, "loss")
    assert_close(got[1], ref[1], torch.float64, "grad")


@pytest.mark.parametrize("alpha,reduction", [(1.0, "mean"), (0.4, "none"), (0.0, "sum")])
def test_gradcheck_float64(alpha, reduction):
    x, t = make_class_inputs((5, 4), torch.float64, scale=2.0)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: fn(z, t, alpha=alpha, reduction=reduction, backend="torch"), (x,))

"""Softmax focal oracles on every fused backend (the ``fused`` fixture): gamma=0
is ``F.cross_entropy`` in every mode (weights, smoothing, ignore_index,
spatial), down to its 0/0 when every row is ignored. Parity over shapes,
dtypes and options is in the conformance battery (tests/test_conformance.py).
"""
import pytest
import torch
import torch.nn.functional as F

import fused_losses
from helpers import assert_close, forward_backward, make_class_inputs

REDUCTIONS = ["none", "mean", "sum"]
fn = fused_losses.softmax_focal_loss


def _alpha(shape, dev):
    c = shape[1] if len(shape) > 1 else shape[0]
    return (torch.rand(c, generator=torch.Generator().manual_seed(4)) + 0.1).to(dev)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_alpha,eps", [(False, 0.0), (False, 0.1), (True, 0.0), (True, 0.1)])
@pytest.mark.parametrize("shape", [(17, 300), (2, 7, 3, 4)])
def test_gamma0_equals_cross_entropy(fused, shape, with_alpha, eps, reduction):
    backend, dev = fused
    x, t = make_class_inputs(shape, device=dev, ignore_index=-100)
    alpha = _alpha(shape, dev) if with_alpha else None
    got = forward_backward(lambda z: fn(z, t, gamma=0.0, alpha=alpha, label_smoothing=eps,
                                        reduction=reduction, backend=backend), x)
    ref = forward_backward(lambda z: F.cross_entropy(z, t, weight=alpha, label_smoothing=eps,
                                                     reduction=reduction), x)
    assert_close(got[0], ref[0], what="loss")
    assert_close(got[1], ref[1], what="grad")


def test_all_ignored_and_empty(fused):
    backend, dev = fused
    x, t = make_class_inputs((6, 5), device=dev)
    t.fill_(-100)
    loss, grad = forward_backward(lambda z: fn(z, t, backend=backend), x)
    ref = F.cross_entropy(x, t)
    assert loss.isnan() and ref.isnan() and (grad == 0).all()  # torch's 0/0
    assert fn(x, t, reduction="sum", backend=backend).item() == 0.0
    x, t = make_class_inputs((0, 5), device=dev)
    assert fn(x, t, backend=backend, reduction="sum").item() == 0.0
    assert fn(x, t, backend=backend).isnan()


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_negative_weight_sum_keeps_the_gradient(fused, gamma):
    """Σ α_y < 0 is a real divisor (the kernels once zeroed the gradient for
    any Σ α_y <= 0, although the loss matched cross_entropy's)."""
    backend, dev = fused
    x, _ = make_class_inputs((6, 4), device=dev)
    t = torch.tensor([0, 1, 0, 1, 2, 0], device=dev)
    alpha = torch.tensor([-1.0, 0.5, 0.2, 1.0], device=dev)  # Σ α_y = -2.0
    got = forward_backward(lambda z: fn(z, t, gamma=gamma, alpha=alpha, backend=backend), x)
    ref = forward_backward(lambda z: fn(z, t, gamma=gamma, alpha=alpha, backend="torch"), x)
    assert got[1].abs().sum() > 0
    assert_close(got[0], ref[0], what="loss")
    assert_close(got[1], ref[1], what="grad")
    if gamma == 0.0:
        ce = forward_backward(lambda z: F.cross_entropy(z, t, weight=alpha), x)
        assert_close(got[1], ce[1], what="grad vs cross_entropy")

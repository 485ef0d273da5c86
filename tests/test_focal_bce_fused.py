"""focal_bce oracles on every fused backend (the ``fused`` fixture): gamma=0 is
torch's BCE-with-logits, and gamma < 1 stays finite at p_t -> 1.

Parity with the reference over shapes, dtypes, options and edge cases is in
the conformance battery (tests/test_conformance.py).
"""
import pytest
import torch
import torch.nn.functional as F

import fused_losses
from helpers import assert_close, forward_backward, make_inputs
from helpers import parity

REDUCTIONS = ["none", "mean", "sum"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gamma0_equals_torch_bce(fused, reduction):
    backend, dev = fused
    n, c = (37, 270) if (backend, dev) == ("triton", "cpu") else (129, 1001)  # interpreter
    x, t = make_inputs((n, c), target_dtype=torch.float32, device=dev)
    pw = torch.rand(c, device=dev) * 3
    w = torch.rand(n, 1, device=dev)
    got = forward_backward(lambda z: fused_losses.focal_bce(
        z, t, gamma=0.0, pos_weight=pw, weight=w, reduction=reduction, backend=backend), x)
    ref = forward_backward(lambda z: F.binary_cross_entropy_with_logits(
        z, t, pos_weight=pw, weight=w, reduction=reduction), x)
    assert_close(got[0], ref[0], what="loss")
    assert_close(got[1], ref[1], what="grad")


def test_soft_target_gamma_below_one_near_certain(fused):
    backend, dev = fused
    x = torch.tensor([40.0, -40.0, 17.0, -17.0, 60.0], device=dev)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.999], device=dev)
    loss, grad = forward_backward(lambda z: fused_losses.focal_bce(
        z, t, gamma=0.25, reduction="none", backend=backend), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    parity(x, t, backend, gamma=0.25, reduction="none")

"""ASL on every fused backend (the ``fused`` fixture) where its numerics are
hardest: soft targets at p -> 1 and p near the clip, exponents below one.
Parity over shapes, dtypes and options is in the conformance battery
(tests/test_conformance.py)."""
import torch

import fused_losses
from helpers import forward_backward, parity_fn


def test_soft_targets_near_certain(fused):
    backend, dev = fused
    x = torch.tensor([40.0, -40.0, 17.0, -17.0, 60.0, -2.9, -2.95], device=dev)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.999, 0.3, 0.0], device=dev)
    opts = dict(gamma_pos=0.25, gamma_neg=0.5, detach_focal_weight=False, reduction="none")
    loss, grad = forward_backward(lambda z: fused_losses.asymmetric_loss(
        z, t, backend=backend, **opts), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    parity_fn(fused_losses.asymmetric_loss, x, t, backend, **opts)

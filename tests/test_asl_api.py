"""The asymmetric loss's own API facts: the paper's defaults and how its
reductions relate. Argument checks, backends, modules, threads and compile are
in the conformance battery (tests/test_conformance*.py)."""
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

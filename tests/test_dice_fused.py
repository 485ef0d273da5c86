"""Dice on every fused backend (the ``fused`` fixture): what its per-class
sums imply. Parity over shapes, dtypes and options is in the conformance
battery (tests/test_conformance.py)."""
import fused_losses
from helpers import make_inputs


def test_nan_logit_stays_in_its_class(fused):
    """A NaN logit poisons its class's sums, and only those."""
    backend, dev = fused
    x, t = make_inputs((37, 20), device=dev)
    x[5, 17] = float("nan")
    loss = fused_losses.dice_loss(x, t, reduction="none", backend=backend)
    assert loss[17].isnan() and not loss[:17].isnan().any() and not loss[18:].isnan().any()

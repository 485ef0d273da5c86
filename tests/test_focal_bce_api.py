"""focal_bce's drop-ins for torch's BCE-with-logits, and a degraded install.

Argument checks, backends, modules and parity are in the conformance battery
(tests/test_conformance*.py), which every loss runs.
"""
import pytest
import torch
import torch.nn.functional as F

import fused_losses
from fused_losses import BCEWithLogitsLoss
from helpers import assert_close, make_inputs

X, T = make_inputs((4, 6))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_module_drop_in(reduction):
    pw, w = torch.rand(6) * 3, torch.rand(4, 1)
    ours = BCEWithLogitsLoss(weight=w, reduction=reduction, pos_weight=pw)
    theirs = torch.nn.BCEWithLogitsLoss(weight=w, reduction=reduction, pos_weight=pw)
    assert_close(ours(X, T), theirs(X, T))
    assert set(ours.state_dict()) == set(theirs.state_dict())


def test_functional_drop_in_positional_signature():
    pw = torch.rand(6)
    ours = fused_losses.binary_cross_entropy_with_logits(X, T, None, None, None, "sum", pw)
    assert_close(ours, F.binary_cross_entropy_with_logits(X, T, None, reduction="sum",
                                                          pos_weight=pw))


def test_reference_supports_target_grad_for_bce():
    t = T.detach().clone().requires_grad_()
    fused_losses.binary_cross_entropy_with_logits(X, t).backward()
    t2 = T.detach().clone().requires_grad_()
    F.binary_cross_entropy_with_logits(X, t2).backward()
    assert_close(t.grad, t2.grad)


def test_degraded_install_without_triton_or_extension():
    """With neither triton nor fused_losses._C importable, the package still
    imports, offers only the reference, and says why a fused backend is missing."""
    import subprocess
    import sys
    code = (
        "import sys; sys.modules['triton'] = None; sys.modules['fused_losses._C'] = None\n"
        "import torch, fused_losses\n"
        "assert fused_losses.available_backends('cpu') == ['torch'], fused_losses.available_backends('cpu')\n"
        "x = torch.randn(3, 4, requires_grad=True)\n"
        "fused_losses.focal_bce(x, torch.rand(3, 4)).backward()\n"
        "assert x.grad is not None\n"
        "for backend, why in (('triton', 'triton is not importable'), ('cpu', 'not built')):\n"
        "    try:\n"
        "        fused_losses.focal_bce(x, torch.rand(3, 4), backend=backend)\n"
        "    except fused_losses.BackendUnavailableError as e:\n"
        "        assert why in str(e), str(e)\n"
        "    else:\n"
        "        raise AssertionError(backend)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr

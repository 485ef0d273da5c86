"""dice_loss / DiceLoss: module behaviour, backend selection and bad input."""
import pytest
import torch

import fused_losses
from fused_losses import DiceLoss
from helpers import assert_close, make_inputs


def test_module_matches_functional_and_repr():
    x, t = make_inputs((8, 3, 4, 4), target_dtype=torch.bool)
    crit = DiceLoss(smooth=0.5, alpha=0.2, square_denominator=True, reduction="none",
                    backend="torch")
    expected = fused_losses.dice_loss(x, t, smooth=0.5, alpha=0.2, square_denominator=True,
                                      reduction="none", backend="torch")
    assert_close(crit(x, t), expected)
    assert crit(x, t).shape == (3,)
    assert "alpha=0.2" in repr(crit) and "square_denominator=True" in repr(crit)


def test_auto_uses_reference_for_float64_and_target_grad():
    x, t = make_inputs((5, 4), torch.float64, torch.float64)
    assert fused_losses.dice_loss(x, t).dtype == torch.float64
    t32 = t.float().requires_grad_(True)
    loss = fused_losses.dice_loss(x.float(), t32)
    loss.backward()
    assert t32.grad is not None


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_fused_backend_refuses_float64_and_target_grad(backend):
    if backend not in fused_losses.available_backends("cpu"):
        pytest.skip(f"{backend} unavailable")
    x, t = make_inputs((5, 4), torch.float64)
    with pytest.raises(ValueError, match="float64"):
        fused_losses.dice_loss(x, t, backend=backend)
    with pytest.raises(ValueError, match="requires_grad"):
        fused_losses.dice_loss(x.float(), t.float().requires_grad_(True), backend=backend)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(smooth=-1.0), ValueError, "smooth"),
    (dict(smooth=float("inf")), ValueError, "smooth"),
    (dict(smooth="1"), TypeError, "smooth"),
    (dict(alpha=-0.1), ValueError, "alpha"),
    (dict(alpha=float("nan")), ValueError, "alpha"),
    (dict(alpha=None), TypeError, "alpha"),
    (dict(square_denominator=1), TypeError, "square_denominator"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(backend="gpu"), ValueError, "backend"),
])
def test_bad_options(kwargs, exc, match):
    x, t = make_inputs((4, 3))
    with pytest.raises(exc, match=match):
        fused_losses.dice_loss(x, t, **kwargs)


@pytest.mark.parametrize("make,exc,match", [
    (lambda x, t: (x[:, :2], t), ValueError, "target shape"),
    (lambda x, t: (x.long(), t), TypeError, "input"),
    (lambda x, t: (x, t.to(torch.complex64)), TypeError, "target"),
    (lambda x, t: (x[0], t[0]), ValueError, r"\[N, C\]"),
    (lambda x, t: (x[0, 0], t[0, 0]), ValueError, r"\[N, C\]"),
    (lambda x, t: ([[1.0]], t), TypeError, "input"),
    (lambda x, t: (x, t.to("meta")), ValueError, "one device"),
])
def test_bad_tensors(make, exc, match):
    x, t = make_inputs((4, 3))
    x, t = make(x, t)
    with pytest.raises(exc, match=match):
        fused_losses.dice_loss(x, t)


def test_unavailable_backend_says_why():
    x, t = make_inputs((4, 3))
    with pytest.raises(fused_losses.BackendUnavailableError, match="cuda"):
        fused_losses.dice_loss(x, t, backend="cuda")


@pytest.mark.skipif("cpu" not in fused_losses.available_backends("cpu"),
                    reason="fused_losses._C is not built")
def test_direct_op_call_rejects_bad_input():
    ops = torch.ops.fused_losses
    x, t = make_inputs((4, 6))
    with pytest.raises(RuntimeError, match="target shape"):
        ops.dice_fwd(x, t[:, :5], 1.0, 0.0, False, "mean")
    with pytest.raises(RuntimeError, match=r"\[N, C\]"):
        ops.dice_fwd(x[0], t[0], 1.0, 0.0, False, "mean")
    with pytest.raises(RuntimeError, match="reduction"):
        ops.dice_fwd(x, t, 1.0, 0.0, False, "avg")
    with pytest.raises(RuntimeError, match="sums"):
        ops.dice_bwd(torch.ones(()), x, t, torch.zeros(3, 5), 1.0, 0.0, False, "mean")
    with pytest.raises(RuntimeError, match="grad_output"):
        ops.dice_bwd(torch.ones(4), x, t, torch.zeros(3, 6), 1.0, 0.0, False, "mean")

"""Public API of focal_bce: modules, drop-ins, backends and bad input."""
import pytest
import torch
import torch.nn.functional as F

import fused_losses
from fused_losses import BCEWithLogitsLoss, FocalBCE
from helpers import assert_close, make_inputs

X, T = make_inputs((4, 6))


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(target=torch.rand(4, 5)), ValueError, ["target shape", "(4, 5)", "(4, 6)"]),
    (dict(target=torch.rand(6, 4)), ValueError, ["target shape"]),
    (dict(pos_weight=torch.rand(5)), ValueError, ["pos_weight", "(5,)", "(4, 6)"]),
    (dict(weight=torch.rand(3, 6)), ValueError, ["weight", "(3, 6)"]),
    (dict(weight=torch.rand(2, 4, 6)), ValueError, ["weight", "(2, 4, 6)"]),
    (dict(alpha=torch.rand(7)), ValueError, ["alpha", "(7,)"]),
    (dict(reduction="avg"), ValueError, ["reduction", "'avg'"]),
    (dict(backend="gpu"), ValueError, ["backend", "'gpu'"]),
    (dict(gamma=-0.5), ValueError, ["gamma", "-0.5"]),
    (dict(gamma=float("nan")), ValueError, ["gamma"]),
    (dict(gamma="2"), TypeError, ["gamma"]),
    (dict(alpha=1.5), ValueError, ["alpha", "1.5"]),
    (dict(alpha=-0.1), ValueError, ["alpha", "-0.1"]),
    (dict(alpha="0.25"), TypeError, ["alpha"]),
    (dict(label_smoothing=1.0), ValueError, ["label_smoothing", "1.0"]),
    (dict(label_smoothing=-0.1), ValueError, ["label_smoothing"]),
    (dict(input=torch.ones(4, 6, dtype=torch.int64)), TypeError, ["input", "int64"]),
    (dict(input=torch.ones(4, 6, dtype=torch.bool)), TypeError, ["input", "bool"]),
    (dict(input=X.numpy()), TypeError, ["input", "ndarray"]),
    (dict(target=[0, 1]), TypeError, ["target", "list"]),
    (dict(pos_weight=torch.ones(6, dtype=torch.int64)), TypeError, ["pos_weight", "int64"]),
    (dict(ignore_index=0.5), TypeError, ["ignore_index"]),
    (dict(target=T.clone().requires_grad_()), ValueError, ["target.requires_grad", "gamma=0"]),
])
def test_bad_input_raises_clearly(kwargs, exc, words):
    args = dict(input=X, target=T.detach())
    args.update(kwargs)
    with pytest.raises(exc) as info:
        fused_losses.focal_bce(args.pop("input"), args.pop("target"), **args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_devices_must_match():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device type")
    with pytest.raises(ValueError, match="one device"):
        fused_losses.focal_bce(X.cuda(), T)
    with pytest.raises(ValueError, match="pos_weight on cuda"):
        fused_losses.focal_bce(X, T, pos_weight=torch.ones(6, device="cuda"))


def test_devices_checked_with_meta_tensors():
    with pytest.raises(ValueError, match="one device"):
        fused_losses.focal_bce(X, T, weight=torch.ones(6, device="meta"))


def test_unavailable_backend_says_why():
    with pytest.raises(fused_losses.BackendUnavailableError, match="cuda"):
        fused_losses.focal_bce(X, T, backend="cuda")
    assert "torch" in fused_losses.available_backends("cpu")
    assert fused_losses.available_backends(X) == fused_losses.available_backends("cpu")


def test_fused_backend_refuses_what_only_reference_does():
    backends = [b for b in fused_losses.available_backends("cpu") if b != "torch"]
    for backend in backends:
        with pytest.raises(ValueError, match="float64"):
            fused_losses.focal_bce(X.double(), T, backend=backend)
    w = torch.rand(6, requires_grad=True)
    fused_losses.focal_bce(X, T, weight=w).backward()  # auto falls back to the reference
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_module_buffers_follow_state_dict_and_to():
    pw, w, a = torch.rand(6), torch.rand(6), torch.rand(6)
    crit = FocalBCE(gamma=1.0, alpha=a, pos_weight=pw, weight=w, reduction="sum")
    assert set(crit.state_dict()) == {"alpha", "pos_weight", "weight"}
    crit = crit.to(torch.float64)
    assert crit.pos_weight.dtype == torch.float64 and crit.alpha.dtype == torch.float64
    expected = fused_losses.focal_bce(X, T, gamma=1.0, alpha=a, pos_weight=pw, weight=w,
                                      reduction="sum")
    assert_close(crit(X, T), expected)
    assert "gamma=1.0" in repr(crit)


def test_module_float_alpha_and_defaults():
    crit = FocalBCE()
    assert crit.gamma == 2.0 and crit.alpha is None and crit.reduction == "mean"
    assert crit.state_dict() == {}
    assert_close(FocalBCE(alpha=0.25)(X, T), fused_losses.focal_bce(X, T, alpha=0.25))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_module_drop_in(reduction):
    pw, w = torch.rand(6) * 3, torch.rand(4, 1)
    ours = BCEWithLogitsLoss(weight=w, reduction=reduction, pos_weight=pw)
    theirs = torch.nn.BCEWithLogitsLoss(weight=w, reduction=reduction, pos_weight=pw)
    assert_close(ours(X, T), theirs(X, T))
    assert set(ours.state_dict()) == set(theirs.state_dict())


def test_functional_drop_in_positional_signature():
    pw = torch.rand(6)
    ours = fused_losses.binary_cross_entropy_with_logits(X, T, None, "sum", pw)
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

"""Public API of the softmax focal loss: module, backends and bad input."""
import pytest
import torch

import fused_losses
from fused_losses import SoftmaxFocalLoss
from helpers import assert_close, make_class_inputs

X, T = make_class_inputs((4, 6))


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(target=torch.randint(0, 6, (5,))), ValueError, ["target shape", "(5,)", "(4,)"]),
    (dict(target=torch.randint(0, 6, (4, 6))), ValueError, ["target shape"]),
    (dict(target=torch.rand(4)), TypeError, ["target", "class indices", "float32"]),
    (dict(target=torch.ones(4, dtype=torch.bool)), TypeError, ["target", "bool"]),
    (dict(alpha=torch.rand(5)), ValueError, ["alpha", "(6,)", "(5,)"]),
    (dict(alpha=torch.ones(6, dtype=torch.int64)), TypeError, ["alpha", "int64"]),
    (dict(alpha=0.25), TypeError, ["alpha", "float"]),
    (dict(reduction="avg"), ValueError, ["reduction", "'avg'"]),
    (dict(backend="gpu"), ValueError, ["backend", "'gpu'"]),
    (dict(gamma=-1.0), ValueError, ["gamma", "-1.0"]),
    (dict(label_smoothing=1.5), ValueError, ["label_smoothing", "1.5"]),
    (dict(ignore_index=0.5), TypeError, ["ignore_index"]),
    (dict(input=torch.ones(4, 6, dtype=torch.int64)), TypeError, ["input", "int64"]),
    (dict(input=torch.ones(4, 0)), ValueError, ["C >= 1"]),
])
def test_bad_input_raises_clearly(kwargs, exc, words):
    args = dict(input=X, target=T)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        fused_losses.softmax_focal_loss(args.pop("input"), args.pop("target"), **args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_devices_checked_with_meta_tensors():
    with pytest.raises(ValueError, match="one device"):
        fused_losses.softmax_focal_loss(X, T, alpha=torch.ones(6, device="meta"))


def test_unavailable_backend_says_why():
    with pytest.raises(fused_losses.BackendUnavailableError, match="cuda"):
        fused_losses.softmax_focal_loss(X, T, backend="cuda")


def test_fused_backend_refuses_float64_and_alpha_grad():
    for backend in [b for b in fused_losses.available_backends("cpu") if b != "torch"]:
        with pytest.raises(ValueError, match="float64"):
            fused_losses.softmax_focal_loss(X.double(), T, backend=backend)
        with pytest.raises(ValueError, match="alpha"):
            fused_losses.softmax_focal_loss(X, T, alpha=torch.rand(6, requires_grad=True),
                                            backend=backend)
    a = torch.rand(6, requires_grad=True)
    fused_losses.softmax_focal_loss(X, T, alpha=a).backward()  # auto: the reference
    assert a.grad is not None


def test_module_buffer_and_repr():
    a = torch.rand(6)
    crit = SoftmaxFocalLoss(gamma=1.0, alpha=a, label_smoothing=0.1, reduction="sum")
    assert set(crit.state_dict()) == {"alpha"}
    expected = fused_losses.softmax_focal_loss(X, T, gamma=1.0, alpha=a, label_smoothing=0.1,
                                               reduction="sum")
    assert_close(crit(X, T), expected)
    assert "gamma=1.0" in repr(crit)
    assert SoftmaxFocalLoss().state_dict() == {}

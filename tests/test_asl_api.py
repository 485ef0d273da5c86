"""Public API of the asymmetric loss: module, defaults, backends, bad input and
the C++ op beyond parity (threads, torch.compile, direct calls)."""
import pytest
import torch

import fused_losses
from fused_losses import AsymmetricLoss
from fused_losses.ops import asl as asl_ops
from helpers import assert_compiled_step_matches_eager, assert_close, forward_backward, make_inputs

X, T = make_inputs((4, 6), target_dtype=torch.bool)
HAS_CPU = "cpu" in fused_losses.available_backends("cpu") and asl_ops.has_backend("cpu")


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(target=torch.rand(4, 5)), ValueError, ["target shape", "(4, 5)", "(4, 6)"]),
    (dict(weight=torch.rand(5)), ValueError, ["weight", "(5,)", "(4, 6)"]),
    (dict(weight=torch.rand(2, 4, 6)), ValueError, ["weight", "(2, 4, 6)"]),
    (dict(weight=torch.ones(6, dtype=torch.int64)), TypeError, ["weight", "int64"]),
    (dict(reduction="avg"), ValueError, ["reduction", "'avg'"]),
    (dict(backend="gpu"), ValueError, ["backend", "'gpu'"]),
    (dict(gamma_pos=-1.0), ValueError, ["gamma_pos", "-1.0"]),
    (dict(gamma_neg=float("nan")), ValueError, ["gamma_neg"]),
    (dict(gamma_neg="4"), TypeError, ["gamma_neg"]),
    (dict(clip=-0.1), ValueError, ["clip", "-0.1"]),
    (dict(clip=1.5), ValueError, ["clip", "1.5"]),
    (dict(eps=1.0), ValueError, ["eps", "1.0"]),
    (dict(eps=-1e-8), ValueError, ["eps"]),
    (dict(detach_focal_weight=1), TypeError, ["detach_focal_weight", "int"]),
    (dict(input=torch.ones(4, 6, dtype=torch.int64)), TypeError, ["input", "int64"]),
    (dict(input=X.numpy()), TypeError, ["input", "ndarray"]),
    (dict(target=[0, 1]), TypeError, ["target", "list"]),
    (dict(target=torch.rand(4, 6, requires_grad=True)), ValueError, ["target.requires_grad"]),
])
def test_bad_input_raises_clearly(kwargs, exc, words):
    args = dict(input=X, target=T)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        fused_losses.asymmetric_loss(args.pop("input"), args.pop("target"), **args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_devices_checked_with_meta_tensors():
    with pytest.raises(ValueError, match="one device"):
        fused_losses.asymmetric_loss(X, T, weight=torch.ones(6, device="meta"))


def test_unavailable_backend_says_why():
    with pytest.raises(fused_losses.BackendUnavailableError, match="cuda"):
        fused_losses.asymmetric_loss(X, T, backend="cuda")


def test_fused_backend_refuses_what_only_reference_does():
    for backend in [b for b in fused_losses.available_backends("cpu") if b != "torch"]:
        with pytest.raises(ValueError, match="float64"):
            fused_losses.asymmetric_loss(X.double(), T, backend=backend)
    w = torch.rand(6, requires_grad=True)
    fused_losses.asymmetric_loss(X, T, weight=w).backward()  # auto: the reference
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_module_defaults_buffer_and_repr():
    crit = AsymmetricLoss()
    assert (crit.gamma_pos, crit.gamma_neg, crit.clip, crit.eps) == (1.0, 4.0, 0.05, 1e-8)
    assert crit.detach_focal_weight is True and crit.reduction == "sum"
    assert crit.state_dict() == {}
    assert_close(crit(X, T), fused_losses.asymmetric_loss(X, T))
    w = torch.rand(6)
    crit = AsymmetricLoss(gamma_neg=2.0, clip=0.0, weight=w, reduction="mean")
    assert set(crit.state_dict()) == {"weight"}
    assert crit.to(torch.float64).weight.dtype == torch.float64
    assert_close(crit(X, T), fused_losses.asymmetric_loss(X, T, gamma_neg=2.0, clip=0.0,
                                                          weight=w, reduction="mean"))
    assert "gamma_neg=2.0" in repr(crit) and "clip=0.0" in repr(crit)


def test_any_shape_and_reductions():
    x, t = make_inputs((2, 3, 4, 5))
    none = fused_losses.asymmetric_loss(x, t, reduction="none")
    assert none.shape == x.shape
    assert_close(fused_losses.asymmetric_loss(x, t, reduction="sum"), none.sum())
    assert_close(fused_losses.asymmetric_loss(x, t, reduction="mean"), none.mean())


needs_cpu = pytest.mark.skipif(not HAS_CPU, reason="fused_losses._C has no ASL kernels")


@needs_cpu
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_cpu_bit_identical_for_one_and_two_threads(reduction):
    before = torch.get_num_threads()
    x, t = make_inputs((300, 1001), torch.float32, torch.float32)
    runs = []
    try:
        for n in (1, 2, 1, 2):
            torch.set_num_threads(n)
            runs.append(forward_backward(lambda z: fused_losses.asymmetric_loss(
                z, t, reduction=reduction, backend="cpu"), x))
    finally:
        torch.set_num_threads(before)
    for loss, grad in runs[1:]:
        assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1])


@needs_cpu
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_cpu_compile_fullgraph_training_step(reduction):
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 270)
    crit = AsymmetricLoss(weight=torch.rand(270), reduction=reduction, backend="cpu")
    h, y = torch.randn(64, 16), torch.rand(64, 270) < 0.05

    def forward(h, y):
        loss = crit(model(h), y)
        return loss.mean() if reduction == "none" else loss

    assert_compiled_step_matches_eager(model, forward, h, y)


@needs_cpu
def test_direct_op_call_rejects_bad_input():
    x, t = make_inputs((4, 6))
    op = torch.ops.fused_losses.asl_fwd
    with pytest.raises(RuntimeError, match="target shape"):
        op(x, t[:, :5], None, 1.0, 4.0, 0.05, 1e-8, True, "sum", False)
    with pytest.raises(RuntimeError, match="input must be"):
        op(x.long(), t, None, 1.0, 4.0, 0.05, 1e-8, True, "sum", False)
    with pytest.raises(RuntimeError, match="clip"):
        op(x, t, None, 1.0, 4.0, 2.0, 1e-8, True, "sum", False)
    with pytest.raises(RuntimeError, match="reduction"):
        op(x, t, None, 1.0, 4.0, 0.05, 1e-8, True, "avg", False)
    with pytest.raises(RuntimeError):
        op(x, t, torch.ones(5), 1.0, 4.0, 0.05, 1e-8, True, "sum", False)


@needs_cpu
def test_auto_picks_cpu_kernel():
    x, t = make_inputs((4, 6))
    assert_close(fused_losses.asymmetric_loss(x, t),
                 fused_losses.asymmetric_loss(x, t, backend="cpu"))

"""Every fused backend against the reference: Triton (interpreter on CPU, real
on GPU), the C++ CPU kernel in each capability build, and the CUDA kernel."""
import pytest
import torch
import torch.nn.functional as F

import fused_losses
from helpers import (LOGIT_DTYPES, SHAPES, TARGET_DTYPES, assert_close, forward_backward,
                     make_inputs)
from helpers import parity

REDUCTIONS = ["none", "mean", "sum"]

def full_options(shape, device):
    """Every tensor option at once, each with a different broadcast pattern."""
    gen = torch.Generator().manual_seed(7)
    c = shape[-1] if shape else 1
    lead = shape[:-1]
    return dict(gamma=1.5, pos_weight=(torch.rand(c, generator=gen) * 3 + 0.2).to(device),
                weight=torch.rand(*lead, 1, generator=gen).to(device),
                alpha=torch.rand(c, generator=gen).to(device))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("logit_dtype", LOGIT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_parity_shapes_dtypes(fused, shape, logit_dtype, reduction):
    backend, dev = fused
    x, t = make_inputs(shape, logit_dtype, torch.bool, device=dev)
    parity(x, t, backend, reduction=reduction, **full_options(shape, dev))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_dtype", TARGET_DTYPES)
def test_parity_target_dtypes(fused, target_dtype, reduction):
    backend, dev = fused
    x, t = make_inputs((37, 270), torch.float32, target_dtype, device=dev)
    parity(x, t, backend, reduction=reduction, gamma=2.0, alpha=0.25)


OPTIONS = {
    "bce": dict(gamma=0.0),
    "focal": dict(gamma=2.0),
    "gamma<1": dict(gamma=0.4),
    "gamma-nonint": dict(gamma=2.7, alpha=0.8),
    "alpha-float": dict(alpha=0.25),
    "alpha-tensor": dict(alpha="alpha_c"),
    "pos_weight": dict(pos_weight="pw_c"),
    "weight-full": dict(weight="w_full"),
    "weight-scalar": dict(weight="w_0d"),
    "weight-middle": dict(weight="w_mid"),
    "smoothing": dict(label_smoothing=0.1),
    "ignore": dict(ignore_index=-1),
    "everything": dict(gamma=2.0, alpha="alpha_c", pos_weight="pw_c", weight="w_full",
                       label_smoothing=0.05, ignore_index=-1),
}


def _resolve(options, shape, target, dev):
    gen = torch.Generator().manual_seed(11)
    c = shape[-1]
    tensors = {"alpha_c": torch.rand(c, generator=gen), "pw_c": torch.rand(c, generator=gen) * 4,
               "w_full": torch.rand(shape, generator=gen), "w_0d": torch.tensor(0.7),
               "w_mid": torch.rand(*shape[:-2], shape[-2], 1, generator=gen)}
    out = {k: (tensors[v].to(dev) if isinstance(v, str) else v) for k, v in options.items()}
    if "ignore_index" in out:
        target = target.clone()
        target.view(-1)[::5] = -1
    return out, target


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.int64])
@pytest.mark.parametrize("shape", [(37, 270), (3, 5, 7)])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_parity_options(fused, name, shape, target_dtype, reduction):
    backend, dev = fused
    x, t = make_inputs(shape, torch.float32, target_dtype, device=dev)
    options, t = _resolve(OPTIONS[name], shape, t, dev)
    parity(x, t, backend, reduction=reduction, **options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gamma0_equals_torch_bce(fused, reduction):
    backend, dev = fused
    x, t = make_inputs((129, 1001), target_dtype=torch.float32, device=dev)
    pw = torch.rand(1001, device=dev) * 3
    w = torch.rand(129, 1, device=dev)
    got = forward_backward(lambda z: fused_losses.focal_bce(
        z, t, gamma=0.0, pos_weight=pw, weight=w, reduction=reduction, backend=backend), x)
    ref = forward_backward(lambda z: F.binary_cross_entropy_with_logits(
        z, t, pos_weight=pw, weight=w, reduction=reduction), x)
    assert_close(got[0], ref[0], what="loss")
    assert_close(got[1], ref[1], what="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [None, -1])
def test_repeated_calls_bit_identical(fused, reduction, ignore_index):
    backend, dev = fused
    x, t = make_inputs((129, 1001), torch.bfloat16, torch.int64, device=dev)
    t.view(-1)[::7] = -1
    run = lambda: forward_backward(lambda z: fused_losses.focal_bce(  # noqa: E731
        z, t, ignore_index=ignore_index, reduction=reduction, backend=backend), x)
    (l1, g1), (l2, g2) = run(), run()
    assert torch.equal(l1, l2) and torch.equal(g1, g2)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0, 2.5])
@pytest.mark.parametrize("dtype,big", [(torch.float32, 1e4), (torch.float16, 6e4),
                                       (torch.bfloat16, 1e4)])
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool])
def test_extreme_logits_finite_and_match(fused, gamma, dtype, big, target_dtype):
    backend, dev = fused
    x = torch.tensor([[-big, big, -big, big, 0.0, 30.0, -30.0, 90.0, -90.0]], dtype=dtype)
    t = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 1, 0.0]]).to(target_dtype)
    x, t = x.to(dev), t.to(dev)
    for reduction in REDUCTIONS:
        loss, grad = forward_backward(lambda z: fused_losses.focal_bce(
            z, t, gamma=gamma, reduction=reduction, backend=backend), x)
        assert torch.isfinite(grad).all()
        # A sum of several 6e4 losses really does overflow float16.
        assert torch.isfinite(loss).all() or (reduction == "sum" and dtype == torch.float16)
        parity(x, t, backend, gamma=gamma, reduction=reduction)


def test_soft_target_gamma_below_one_near_certain(fused):
    backend, dev = fused
    x = torch.tensor([40.0, -40.0, 17.0, -17.0, 60.0], device=dev)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.999], device=dev)
    loss, grad = forward_backward(lambda z: fused_losses.focal_bce(
        z, t, gamma=0.25, reduction="none", backend=backend), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    parity(x, t, backend, gamma=0.25, reduction="none")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nan_logit_propagates(fused, reduction):
    backend, dev = fused
    x, t = make_inputs((37, 270), device=dev)
    x[5, 17] = float("nan")
    assert fused_losses.focal_bce(x, t, reduction=reduction, backend=backend).isnan()


def test_all_ignored_and_empty(fused):
    backend, dev = fused
    x, t = make_inputs((6, 5), target_dtype=torch.int64, device=dev)
    t.fill_(-1)
    loss, grad = forward_backward(lambda z: fused_losses.focal_bce(
        z, t, ignore_index=-1, backend=backend), x)
    assert loss.item() == 0.0 and (grad == 0).all()
    x, t = make_inputs((0, 5), device=dev)
    assert fused_losses.focal_bce(x, t, backend=backend, reduction="sum").item() == 0.0
    assert fused_losses.focal_bce(x, t, backend=backend).isnan()  # torch's empty mean


def test_no_grad_skips_gradient_and_matches(fused):
    backend, dev = fused
    x, t = make_inputs((37, 270), device=dev)
    with torch.no_grad():
        got = fused_losses.focal_bce(x.requires_grad_(), t, backend=backend)
    assert_close(got, fused_losses.focal_bce(x.detach(), t, backend="torch"))


def test_opcheck(fused):
    """torch.library.opcheck on the backend's forward and backward ops. Interpreted
    Triton kernels cannot run under the AOT-dispatch check; the CUDA suite runs it."""
    backend, dev = fused
    names = {"triton": ("focal_bce_triton_fwd", "focal_bce_triton_bwd")}.get(
        backend, ("focal_bce_fwd", "focal_bce_bwd"))
    fwd, bwd = (getattr(torch.ops.fused_losses, n).default for n in names)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if backend != "triton" or dev == "cuda":
        utils += ("test_aot_dispatch_dynamic",)
    x, t = make_inputs((37, 270), device=dev)
    x.requires_grad_(True)
    pw = torch.rand(270, device=dev)
    for reduction in REDUCTIONS:
        torch.library.opcheck(fwd, (x, t, None, pw, None, 2.0, 0.25, 0.0, None, reduction, True),
                              test_utils=utils)
    torch.library.opcheck(bwd, (torch.rand_like(x), x.detach(), t, None, pw, None, 2.0, None,
                                0.1, -1), test_utils=utils)


def test_second_backward_with_retain_graph_raises_not_rescales(fused):
    """The forward's gradient is scaled in place, so a second backward must fail
    loudly (autograd's version check) rather than scale it twice."""
    backend, dev = fused
    x, t = make_inputs((5, 7), device=dev)
    x.requires_grad_(True)
    loss = fused_losses.focal_bce(x, t, backend=backend)
    (loss * 3).backward(retain_graph=True)
    z = x.detach().clone().requires_grad_(True)
    expected, = torch.autograd.grad(3 * fused_losses.focal_bce(z, t, backend="torch"), z)
    assert_close(x.grad, expected, what="grad")
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss * 3).backward()

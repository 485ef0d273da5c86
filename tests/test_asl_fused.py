"""Every fused ASL backend against the reference: Triton (interpreter on CPU,
real on GPU), the C++ CPU kernel in each capability build, and the CUDA kernel."""
import pytest
import torch

import fused_losses
from fused_losses.ops import asl as asl_ops
from helpers import (LOGIT_DTYPES, TARGET_DTYPES, assert_close, forward_backward,
                     make_inputs)

REDUCTIONS = ["none", "mean", "sum"]
SHAPES = [(1, 1), (37, 270), (3, 5, 7), (1001,), (23, 41), (3, 2500)]


@pytest.fixture
def backend(fused):
    """The ``fused`` fixture's (backend, device), skipped where it has no ASL kernels
    (an extension built before ASL existed)."""
    name, dev = fused
    if not asl_ops.has_backend(name):
        pytest.skip(f"{name} has no ASL kernels in this build")
    return name, dev


def parity(x, t, backend, dtype=None, **options):
    """``backend`` against the reference, loss and gradient, non-unit upstream gradient."""
    fn = fused_losses.asymmetric_loss
    got = forward_backward(lambda z: fn(z, t, backend=backend, **options), x)
    cpu = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in options.items()}
    ref = forward_backward(lambda z: fn(z.cpu(), t.cpu(), backend="torch", **cpu), x)
    assert_close(got[0], ref[0], dtype or x.dtype, "loss")
    assert_close(got[1], ref[1], dtype or x.dtype, "grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("logit_dtype", LOGIT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_parity_shapes_dtypes(backend, shape, logit_dtype, reduction):
    name, dev = backend
    x, t = make_inputs(shape, logit_dtype, torch.bool, device=dev)
    w = torch.rand(shape[-1], generator=torch.Generator().manual_seed(3)).to(dev)
    parity(x, t, name, reduction=reduction, weight=w, detach_focal_weight=False)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_dtype", TARGET_DTYPES)
def test_parity_target_dtypes(backend, target_dtype, reduction):
    name, dev = backend
    x, t = make_inputs((37, 270), torch.float32, target_dtype, device=dev)
    parity(x, t, name, reduction=reduction)


OPTIONS = {
    "paper": dict(),
    "no-detach": dict(detach_focal_weight=False),
    "no-clip": dict(clip=0.0),
    "no-clip-no-detach": dict(clip=0.0, detach_focal_weight=False),
    "gamma<1": dict(gamma_pos=0.4, gamma_neg=0.6, detach_focal_weight=False),
    "gamma-nonint": dict(gamma_pos=1.5, gamma_neg=2.7, clip=0.2),
    "gamma-pos-only": dict(gamma_pos=2.0, gamma_neg=0.0, detach_focal_weight=False),
    "gamma0": dict(gamma_pos=0.0, gamma_neg=0.0),
    "eps0": dict(eps=0.0, detach_focal_weight=False),
    "big-eps": dict(eps=0.02, clip=0.01, detach_focal_weight=False),
    "weight-full": dict(weight="w_full"),
    "weight-scalar": dict(weight="w_0d"),
    "weight-middle": dict(weight="w_mid", detach_focal_weight=False),
}


def _resolve(options, shape, dev):
    gen = torch.Generator().manual_seed(11)
    tensors = {"w_full": torch.rand(shape, generator=gen), "w_0d": torch.tensor(0.7),
               "w_mid": torch.rand(*shape[:-2], shape[-2], 1, generator=gen)}
    return {k: (tensors[v].to(dev) if isinstance(v, str) else v) for k, v in options.items()}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_parity_options(backend, name, target_dtype, reduction):
    bname, dev = backend
    shape = (3, 5, 7)  # larger and odd shapes: test_parity_shapes_dtypes
    x, t = make_inputs(shape, torch.float32, target_dtype, device=dev)
    parity(x, t, bname, reduction=reduction, **_resolve(OPTIONS[name], shape, dev))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_repeated_calls_bit_identical(backend, reduction):
    name, dev = backend
    x, t = make_inputs((37, 301), torch.bfloat16, torch.bool, device=dev)
    run = lambda: forward_backward(lambda z: fused_losses.asymmetric_loss(  # noqa: E731
        z, t, reduction=reduction, backend=name), x)
    (l1, g1), (l2, g2) = run(), run()
    assert torch.equal(l1, l2) and torch.equal(g1, g2)


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("clip", [0.0, 0.05])
@pytest.mark.parametrize("gamma", [(1.0, 4.0), (0.3, 0.6)])
@pytest.mark.parametrize("dtype,big", [(torch.float32, 1e4), (torch.float16, 6.5e4),
                                       (torch.bfloat16, 1e4)])
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool])
def test_extreme_logits_finite_and_match(backend, gamma, clip, detach, dtype, big,
                                         target_dtype):
    name, dev = backend
    x = torch.tensor([[-big, big, -big, big, 0.0, 30.0, -30.0, 90.0, -90.0, -2.9444, 17.0,
                       -19.0]], dtype=dtype)
    t = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1.0]]).to(target_dtype)
    x, t = x.to(dev), t.to(dev)
    opts = dict(gamma_pos=gamma[0], gamma_neg=gamma[1], clip=clip, detach_focal_weight=detach)
    for reduction in ("none", "sum"):  # a mean is the sum scaled
        loss, grad = forward_backward(lambda z: fused_losses.asymmetric_loss(
            z, t, reduction=reduction, backend=name, **opts), x)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        parity(x, t, name, reduction=reduction, **opts)


def test_soft_targets_near_certain(backend):
    name, dev = backend
    x = torch.tensor([40.0, -40.0, 17.0, -17.0, 60.0, -2.9, -2.95], device=dev)
    t = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.999, 0.3, 0.0], device=dev)
    opts = dict(gamma_pos=0.25, gamma_neg=0.5, detach_focal_weight=False, reduction="none")
    loss, grad = forward_backward(lambda z: fused_losses.asymmetric_loss(
        z, t, backend=name, **opts), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    parity(x, t, name, **opts)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool])
def test_nan_logit_propagates(backend, reduction, target_dtype):
    name, dev = backend
    x, t = make_inputs((37, 270), target_dtype=target_dtype, device=dev)
    x[5, 17] = float("nan")
    t[5, 17] = False
    assert fused_losses.asymmetric_loss(x, t, reduction=reduction, backend=name).isnan()


def test_empty_input(backend):
    name, dev = backend
    x, t = make_inputs((0, 5), device=dev)
    assert fused_losses.asymmetric_loss(x, t, backend=name).item() == 0.0
    assert fused_losses.asymmetric_loss(x, t, reduction="mean", backend=name).isnan()


def test_no_grad_skips_gradient_and_matches(backend):
    name, dev = backend
    x, t = make_inputs((37, 270), device=dev)
    with torch.no_grad():
        got = fused_losses.asymmetric_loss(x.requires_grad_(), t, backend=name)
        assert not torch.is_grad_enabled()
    assert_close(got, fused_losses.asymmetric_loss(x.detach(), t, backend="torch"))


def test_opcheck(backend):
    """torch.library.opcheck on the forward and backward ops (interpreted Triton
    cannot run the AOT-dispatch check; the GPU run covers it)."""
    name, dev = backend
    names = {"triton": ("asl_triton_fwd", "asl_triton_bwd")}.get(name, ("asl_fwd", "asl_bwd"))
    fwd, bwd = (getattr(torch.ops.fused_losses, n).default for n in names)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if name != "triton" or dev == "cuda":
        utils += ("test_aot_dispatch_dynamic",)
    x, t = make_inputs((37, 270), device=dev)
    x.requires_grad_(True)
    w = torch.rand(270, device=dev)
    for reduction in REDUCTIONS:
        torch.library.opcheck(fwd, (x, t, w, 1.0, 4.0, 0.05, 1e-8, True, reduction, True),
                              test_utils=utils)
    torch.library.opcheck(bwd, (torch.rand_like(x), x.detach(), t > 0.5, None, 0.5, 2.0, 0.0,
                                1e-8, False), test_utils=utils)

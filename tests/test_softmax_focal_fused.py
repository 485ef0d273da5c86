"""Every fused softmax focal backend against the reference (the ``fused``
fixture: Triton, the C++ CPU builds, CUDA)."""
import pytest
import torch
import torch.nn.functional as F

import fused_losses
from helpers import (LOGIT_DTYPES, assert_close, forward_backward, make_class_inputs,
                     parity_fn)

REDUCTIONS = ["none", "mean", "sum"]
# (1, 1): one class; (3, 5000): more classes than one column block; (2, 5, 3, 4): spatial.
SHAPES = [(1, 1), (37, 270), (19, 1001), (3, 5, 7), (3, 5000), (2, 5, 3, 4), (11,)]
fn = fused_losses.softmax_focal_loss


def _alpha(shape, dev):
    c = shape[1] if len(shape) > 1 else shape[0]
    return (torch.rand(c, generator=torch.Generator().manual_seed(4)) + 0.1).to(dev)


@pytest.mark.parametrize("logit_dtype,reduction", [(d, "mean") for d in LOGIT_DTYPES] + [
    (torch.float32, "none"), (torch.bfloat16, "sum")])
@pytest.mark.parametrize("shape", SHAPES)
def test_parity_shapes_dtypes(fused, shape, logit_dtype, reduction):
    backend, dev = fused
    x, t = make_class_inputs(shape, logit_dtype, device=dev,
                             ignore_index=-100 if len(shape) > 1 else None)
    parity_fn(fn, x, t, backend, gamma=1.5, alpha=_alpha(shape, dev), label_smoothing=0.1,
              reduction=reduction)


OPTIONS = {
    "ce": dict(gamma=0.0), "focal": dict(gamma=2.0), "gamma<1": dict(gamma=0.4),
    "alpha": dict(alpha="a"), "smoothing": dict(label_smoothing=0.2),
    "no-ignore": dict(ignore_index=None), "ignore-in-range": dict(ignore_index=3),
    "everything": dict(gamma=2.5, alpha="a", label_smoothing=0.05, ignore_index=-1),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_dtype", [torch.int64])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_parity_options(fused, name, target_dtype, reduction):
    backend, dev = fused
    options = dict(OPTIONS[name])
    ignore = options.get("ignore_index", -100)
    x, t = make_class_inputs((13, 200), device=dev, target_dtype=target_dtype,
                             ignore_index=ignore if target_dtype != torch.uint8 else None)
    if options.get("alpha") == "a":
        options["alpha"] = _alpha((13, 200), dev)
    parity_fn(fn, x, t, backend, reduction=reduction, **options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_alpha,eps", [(False, 0.0), (False, 0.1), (True, 0.0), (True, 0.1)])
@pytest.mark.parametrize("shape", [(17, 300), (2, 7, 3, 4)])
def test_gamma0_equals_cross_entropy(fused, shape, with_alpha, eps, reduction):
    backend, dev = fused
    x, t = make_class_inputs(shape, device=dev, ignore_index=-100)
    alpha = _alpha(shape, dev) if with_alpha else None
    got = forward_backward(lambda z: fn(z, t, gamma=0.0, alpha=alpha, label_smoothing=eps,
                                        reduction=reduction, backend=backend), x)
    ref = forward_backward(lambda z: F.cross_entropy(z, t, weight=alpha, label_smoothing=eps,
                                                     reduction=reduction), x)
    assert_close(got[0], ref[0], what="loss")
    assert_close(got[1], ref[1], what="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_repeated_calls_bit_identical(fused, reduction):
    backend, dev = fused
    x, t = make_class_inputs((19, 1001), torch.bfloat16, device=dev, ignore_index=-100)
    run = lambda: forward_backward(lambda z: fn(  # noqa: E731
        z, t, alpha=_alpha((19, 1001), dev), label_smoothing=0.1, reduction=reduction,
        backend=backend), x)
    (l1, g1), (l2, g2) = run(), run()
    assert torch.equal(l1, l2) and torch.equal(g1, g2)


@pytest.mark.parametrize("gamma,eps", [(0.3, 0.0), (2.0, 0.1)])
@pytest.mark.parametrize("dtype,big", [(torch.float32, 1e4), (torch.float16, 6e4),
                                       (torch.bfloat16, 1e4)])
def test_extreme_logits_finite_and_match(fused, gamma, eps, dtype, big):
    """Finite gradients, and a match with the float64 reference (the fp32
    reference itself loses digits when a row loss is ~1e4)."""
    backend, dev = fused
    x = torch.tensor([[big, -big, 0.0], [-big, big, 5.0], [90.0, -90.0, 0.0],
                      [0.0, 0.0, 0.0], [30.0, 29.0, -big]], dtype=dtype, device=dev)
    t = torch.tensor([0, 0, 0, 2, 1], device=dev)
    for reduction in REDUCTIONS:
        opts = dict(gamma=gamma, label_smoothing=eps, reduction=reduction)
        loss, grad = forward_backward(lambda z: fn(z, t, backend=backend, **opts), x)
        assert torch.isfinite(grad).all()
        # A 2e4 row loss does not fit float16.
        assert torch.isfinite(loss).all() or dtype == torch.float16
        ref = forward_backward(lambda z: fn(z.double().cpu(), t.cpu(), backend="torch",
                                            **opts).to(dtype), x)
        if dtype != torch.float16:
            assert_close(loss, ref[0], dtype, "loss")
        assert_close(grad, ref[1], dtype, "grad")


@pytest.mark.parametrize("target_dtype", [torch.int32, torch.uint8, torch.int16])
def test_parity_target_dtypes(fused, target_dtype):
    backend, dev = fused
    x, t = make_class_inputs((13, 200), device=dev, target_dtype=target_dtype)
    parity_fn(fn, x, t, backend, gamma=2.0, label_smoothing=0.1)


def test_nan_logit_and_out_of_range_target(fused):
    backend, dev = fused
    x, t = make_class_inputs((6, 9), device=dev)
    x[2, 4] = float("nan")
    assert fn(x, t, backend=backend).isnan()
    x, t = make_class_inputs((6, 9), device=dev)
    t[3] = 9
    t[4] = -7
    loss, grad = forward_backward(lambda z: fn(z, t, reduction="none", backend=backend), x)
    assert loss[3].isnan() and loss[4].isnan() and torch.isfinite(loss[[0, 1, 2, 5]]).all()
    assert grad[3].isnan().all() and torch.isfinite(grad[[0, 1, 2, 5]]).all()


def test_all_ignored_and_empty(fused):
    backend, dev = fused
    x, t = make_class_inputs((6, 5), device=dev)
    t.fill_(-100)
    loss, grad = forward_backward(lambda z: fn(z, t, backend=backend), x)
    ref = F.cross_entropy(x, t)
    assert loss.isnan() and ref.isnan() and (grad == 0).all()  # torch's 0/0
    assert fn(x, t, reduction="sum", backend=backend).item() == 0.0
    x, t = make_class_inputs((0, 5), device=dev)
    assert fn(x, t, backend=backend, reduction="sum").item() == 0.0
    assert fn(x, t, backend=backend).isnan()


def test_no_grad_matches(fused):
    backend, dev = fused
    x, t = make_class_inputs((37, 270), device=dev, ignore_index=-100)
    with torch.no_grad():
        got = fn(x.requires_grad_(), t, backend=backend)
    assert_close(got, fn(x.detach(), t, backend="torch"))


def test_opcheck(fused):
    backend, dev = fused
    names = {"triton": ("softmax_focal_triton_fwd", "softmax_focal_triton_bwd")}.get(
        backend, ("softmax_focal_fwd", "softmax_focal_bwd"))
    fwd, bwd = (getattr(torch.ops.fused_losses, n).default for n in names)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if backend != "triton" or dev == "cuda":
        utils += ("test_aot_dispatch_dynamic",)
    x, t = make_class_inputs((37, 270), device=dev, ignore_index=-100)
    x.requires_grad_(True)
    a = _alpha((37, 270), dev)
    for reduction in REDUCTIONS:
        # A mean's backward scales the op's `grad` output in place by 1/Σ α_y
        # (the protocol's saved-gradient reuse), so eager and AOT outputs then
        # differ by design; the AOT check runs on none and sum.
        checks = tuple(u for u in utils if reduction != "mean" or u != "test_aot_dispatch_dynamic")
        torch.library.opcheck(fwd, (x, t, a, 2.0, -100, 0.1, reduction, True), test_utils=checks)
    torch.library.opcheck(bwd, (torch.rand(37, device=dev), x.detach(), t, None, 2.0, -100, 0.0),
                          test_utils=utils)

"""Every fused dice backend against the reference: Triton (interpreter on CPU,
real on GPU), the C++ CPU kernel in each capability build, and the CUDA kernel."""
import pytest
import torch

import fused_losses
from helpers import LOGIT_DTYPES, assert_close, forward_backward, make_inputs

REDUCTIONS = ["none", "mean", "sum"]
# [N, C] with odd C (C = 1, C < one column block, C > one block) and spatial
# [N, C, d1, ...] shapes, including a spatial size of one.
SHAPES = [(1, 1), (37, 270), (129, 33), (3, 5, 7), (2, 3, 4, 5), (5, 4, 1), (300, 3),
          (1, 67)]
OPTIONS = {
    "soft-dice": dict(),
    "square": dict(square_denominator=True),
    "adjusted": dict(alpha=0.3),
    "adjusted-square": dict(alpha=1.0, square_denominator=True, smooth=0.0),
    "alpha-big": dict(alpha=2.5, smooth=2.0),
}


def dice_parity(x, t, backend, dtype=None, **options):
    """Loss and gradient (non-unit upstream) of ``backend`` against the reference."""
    fn = fused_losses.dice_loss
    got = forward_backward(lambda z: fn(z, t, backend=backend, **options), x)
    ref = forward_backward(lambda z: fn(z.cpu(), t.cpu(), backend="torch", **options), x)
    assert_close(got[0], ref[0], dtype or x.dtype, "loss")
    assert_close(got[1], ref[1], dtype or x.dtype, "grad")


@pytest.mark.parametrize("reduction", ["none", "mean"])  # sum: in test_parity_options
@pytest.mark.parametrize("logit_dtype", LOGIT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_parity_shapes_dtypes(fused, shape, logit_dtype, reduction):
    backend, dev = fused
    x, t = make_inputs(shape, logit_dtype, torch.float32, device=dev)
    dice_parity(x, t, backend, reduction=reduction, alpha=0.2)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_dtype", [torch.bfloat16, torch.uint8, torch.int64])
def test_parity_target_dtypes(fused, target_dtype, reduction):
    backend, dev = fused
    x, t = make_inputs((37, 270), torch.float32, target_dtype, device=dev)
    dice_parity(x, t, backend, reduction=reduction, alpha=0.3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_dtype", [torch.float32, torch.bool])
@pytest.mark.parametrize("shape", [(37, 270), (3, 5, 7)])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_parity_options(fused, name, shape, target_dtype, reduction):
    backend, dev = fused
    x, t = make_inputs(shape, torch.float32, target_dtype, device=dev)
    dice_parity(x, t, backend, reduction=reduction, **OPTIONS[name])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_repeated_calls_bit_identical(fused, reduction):
    backend, dev = fused
    x, t = make_inputs((300, 70), torch.bfloat16, torch.bool, device=dev)
    run = lambda: forward_backward(lambda z: fused_losses.dice_loss(  # noqa: E731
        z, t, alpha=0.5, reduction=reduction, backend=backend), x)
    (l1, g1), (l2, g2) = run(), run()
    assert torch.equal(l1, l2) and torch.equal(g1, g2)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 2.0])
@pytest.mark.parametrize("dtype,big", [(torch.float32, 1e4), (torch.float16, 6e4),
                                       (torch.bfloat16, 1e4)])
def test_extreme_logits_finite_and_match(fused, alpha, dtype, big):
    backend, dev = fused
    x = torch.tensor([[-big, big, 0.0], [big, -big, 30.0], [0.0, 30.0, -30.0],
                      [90.0, -90.0, 17.0]], dtype=dtype, device=dev)
    t = torch.tensor([[0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 1.0]], device=dev)
    for square in (False, True):
        for reduction in REDUCTIONS:
            options = dict(alpha=alpha, square_denominator=square, reduction=reduction)
            loss, grad = forward_backward(lambda z: fused_losses.dice_loss(
                z, t, backend=backend, **options), x)
            assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
            dice_parity(x, t, backend, **options)


def test_nan_logit_propagates(fused):
    backend, dev = fused
    x, t = make_inputs((37, 20), device=dev)
    x[5, 17] = float("nan")
    loss = fused_losses.dice_loss(x, t, reduction="none", backend=backend)
    assert loss[17].isnan() and not loss[:17].isnan().any()


def test_empty_batch_and_no_classes(fused):
    backend, dev = fused
    x, t = make_inputs((0, 5), device=dev)
    loss, grad = forward_backward(lambda z: fused_losses.dice_loss(
        z, t, reduction="none", backend=backend), x)
    assert loss.shape == (5,) and (loss == 0).all() and grad.shape == (0, 5)
    x, t = make_inputs((0, 5, 3), device=dev)
    assert fused_losses.dice_loss(x, t, backend=backend).item() == 0.0
    x, t = make_inputs((4, 0), device=dev)
    assert fused_losses.dice_loss(x, t, reduction="sum", backend=backend).item() == 0.0
    assert fused_losses.dice_loss(x, t, backend=backend).isnan()  # torch's empty mean


def test_no_grad_matches(fused):
    backend, dev = fused
    x, t = make_inputs((37, 27), device=dev)
    with torch.no_grad():
        got = fused_losses.dice_loss(x.requires_grad_(), t, alpha=0.1, backend=backend)
    assert_close(got, fused_losses.dice_loss(x.detach(), t, alpha=0.1, backend="torch"))


def test_sums_are_the_per_class_sums(fused):
    """The forward's saved sums are (Σ p̃·t, Σ p̃ᵏ, Σ tᵏ) of the reference."""
    from fused_losses.ops.dice import _FWD_OPS
    from fused_losses.reference.dice import dice_sums
    backend, dev = fused
    x, t = make_inputs((2, 6, 11), device=dev)
    for square in (False, True):
        _, sums = _FWD_OPS[backend](x, t, 1.0, 0.7, square, "none")
        ref = torch.stack(dice_sums(x.cpu(), t.cpu(), alpha=0.7, square_denominator=square))
        assert sums.dtype == torch.float32
        assert_close(sums, ref, what="sums")


def test_opcheck(fused):
    """opcheck on the backend's forward and backward ops (interpreted Triton
    kernels cannot run under the AOT-dispatch check; the GPU run covers it)."""
    backend, dev = fused
    names = {"triton": ("dice_triton_fwd", "dice_triton_bwd")}.get(backend,
                                                                    ("dice_fwd", "dice_bwd"))
    fwd, bwd = (getattr(torch.ops.fused_losses, n).default for n in names)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if backend != "triton" or dev == "cuda":
        utils += ("test_aot_dispatch_dynamic",)
    x, t = make_inputs((37, 27), device=dev)
    x.requires_grad_(True)
    for reduction in REDUCTIONS:
        torch.library.opcheck(fwd, (x, t, 1.0, 0.3, True, reduction), test_utils=utils)
    sums = torch.rand(3, 27, device=dev) * 10
    for g, reduction in ((torch.rand((), device=dev), "mean"), (torch.rand(27, device=dev), "none")):
        torch.library.opcheck(bwd, (g, x.detach(), t, sums, 1.0, 0.3, False, reduction),
                              test_utils=utils)

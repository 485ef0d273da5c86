"""Self-adjusting DSC: reference vs the paper's formula and gradcheck, every
fused backend vs the reference, bad input."""
import pytest
import torch

import fused_losses
from fused_losses import SelfAdjustingDiceLoss
from helpers import LOGIT_DTYPES, assert_close, forward_backward, make_class_inputs, parity_fn

REDUCTIONS = ["none", "mean", "sum"]
fn = fused_losses.self_adjusting_dice_loss


def paper_formula(x, y, alpha, smooth, reduction):
    """Li et al.'s per-sample DSC written out in float64: softmax, gather, pow."""
    p = torch.softmax(x.double(), -1).gather(-1, y[:, None].long())[:, 0]
    p_tilde = (1 - p) ** alpha * p
    loss = 1 - (2 * p_tilde + smooth) / (p_tilde + 1 + smooth)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha,smooth", [(1.0, 1.0), (0.0, 1.0), (0.3, 0.0), (2.5, 0.5)])
def test_reference_equals_paper_formula(alpha, smooth, reduction):
    x, t = make_class_inputs((37, 11), torch.float64)
    got = forward_backward(lambda z: fn(z, t, alpha=alpha, smooth=smooth, reduction=reduction,
                                        backend="torch"), x)
    ref = forward_backward(lambda z: paper_formula(z, t, alpha, smooth, reduction), x)
    assert_close(got[0], ref[0], torch.float64, "loss")
    assert_close(got[1], ref[1], torch.float64, "grad")


@pytest.mark.parametrize("alpha,reduction", [(1.0, "mean"), (0.4, "none"), (0.0, "sum")])
def test_gradcheck_float64(alpha, reduction):
    x, t = make_class_inputs((5, 4), torch.float64, scale=2.0)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: fn(z, t, alpha=alpha, reduction=reduction, backend="torch"), (x,))


@pytest.mark.parametrize("logit_dtype,reduction", [(d, "mean") for d in LOGIT_DTYPES] + [
    (torch.float32, "none"), (torch.float32, "sum")])
@pytest.mark.parametrize("shape", [(1, 1), (37, 270), (3, 5000), (19, 1001)])
def test_fused_parity(fused, shape, logit_dtype, reduction):
    backend, dev = fused
    x, t = make_class_inputs(shape, logit_dtype, device=dev)
    parity_fn(fn, x, t, backend, alpha=1.0, smooth=1.0, reduction=reduction)


@pytest.mark.parametrize("alpha,smooth", [(0.0, 1.0), (0.3, 0.0), (2.0, 0.5)])
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.int32])
def test_fused_parity_options(fused, alpha, smooth, target_dtype):
    backend, dev = fused
    x, t = make_class_inputs((13, 200), device=dev, target_dtype=target_dtype)
    for reduction in REDUCTIONS:
        parity_fn(fn, x, t, backend, alpha=alpha, smooth=smooth, reduction=reduction)


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_fused_extreme_logits(fused, alpha):
    backend, dev = fused
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [90.0, -90.0, 0.0],
                      [30.0, 29.0, -1e4]], device=dev)
    t = torch.tensor([0, 0, 0, 1], device=dev)
    loss, grad = forward_backward(lambda z: fn(z, t, alpha=alpha, reduction="none",
                                               backend=backend), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    ref = forward_backward(lambda z: fn(z.double().cpu(), t.cpu(), alpha=alpha,
                                        reduction="none", backend="torch").float(), x)
    assert_close(loss, ref[0], what="loss")
    assert_close(grad, ref[1], what="grad")


def test_fused_deterministic_out_of_range_and_empty(fused):
    backend, dev = fused
    x, t = make_class_inputs((19, 1001), torch.bfloat16, device=dev)
    run = lambda: forward_backward(lambda z: fn(z, t, backend=backend), x)  # noqa: E731
    (l1, g1), (l2, g2) = run(), run()
    assert torch.equal(l1, l2) and torch.equal(g1, g2)
    x, t = make_class_inputs((4, 6), device=dev)
    t[2] = 6
    loss, grad = forward_backward(lambda z: fn(z, t, reduction="none", backend=backend), x)
    assert loss[2].isnan() and torch.isfinite(loss[[0, 1, 3]]).all() and grad[2].isnan().all()
    x, t = make_class_inputs((0, 6), device=dev)
    assert fn(x, t, reduction="sum", backend=backend).item() == 0.0
    assert fn(x, t, backend=backend).isnan()


def test_opcheck(fused):
    backend, dev = fused
    names = {"triton": ("dsc_triton_fwd", "dsc_triton_bwd")}.get(backend, ("dsc_fwd", "dsc_bwd"))
    fwd, bwd = (getattr(torch.ops.fused_losses, n).default for n in names)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if backend != "triton" or dev == "cuda":
        utils += ("test_aot_dispatch_dynamic",)
    x, t = make_class_inputs((17, 40), device=dev)
    x.requires_grad_(True)
    for reduction in REDUCTIONS:
        torch.library.opcheck(fwd, (x, t, 1.0, 1.0, reduction, True), test_utils=utils)
    torch.library.opcheck(bwd, (torch.rand(17, device=dev), x.detach(), t, 0.5, 1.0),
                          test_utils=utils)


X, T = make_class_inputs((4, 6))


@pytest.mark.parametrize("kwargs,exc,words", [
    (dict(input=torch.randn(2, 3, 4)), ValueError, ["[N, C]", "(2, 3, 4)"]),
    (dict(target=torch.randint(0, 6, (5,))), ValueError, ["target shape", "(5,)"]),
    (dict(target=torch.rand(4)), TypeError, ["target", "float32"]),
    (dict(alpha=-1.0), ValueError, ["alpha", "-1.0"]),
    (dict(smooth=-0.5), ValueError, ["smooth", "-0.5"]),
    (dict(alpha="1"), TypeError, ["alpha"]),
    (dict(reduction="avg"), ValueError, ["reduction"]),
    (dict(backend="gpu"), ValueError, ["backend"]),
    (dict(input=torch.ones(4, 6, dtype=torch.int64)), TypeError, ["input", "int64"]),
])
def test_bad_input_raises_clearly(kwargs, exc, words):
    args = dict(input=X, target=T)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        fn(args.pop("input"), args.pop("target"), **args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_module_matches_functional():
    crit = SelfAdjustingDiceLoss(alpha=0.5, smooth=0.1, reduction="sum")
    assert_close(crit(X, T), fn(X, T, alpha=0.5, smooth=0.1, reduction="sum"))
    assert "alpha=0.5" in repr(crit) and crit.state_dict() == {}

"""The CUDA row losses on a GPU (marked ``cuda``, skipped without one): the
warp-per-row kernels (csrc/cuda/rows_warp.cuh, C <= 2048, contiguous rows) and
the block-per-row ones (longer or spatial rows) against the float64 reference,
with the divisor pre-pass (``scale`` = 1 for a mean), every column bucket, pairs
and scalar loads (odd C, a misaligned row start), ignore_index, per-class α,
label smoothing, out-of-range targets, Σ α_y = 0 and bitwise determinism.
"""
import math

import pytest
import torch

import fused_losses
from helpers import make_class_inputs, parity_fn

pytestmark = pytest.mark.cuda

# One shape per warp bucket (2, 4, ... 64 columns per lane), odd and even C,
# the first block-path C (2049), a long row and a spatial input.
SHAPES = [(1, 1), (5, 2), (33, 64), (17, 65), (37, 270), (40, 512), (129, 1001), (9, 1024),
          (16, 2048), (8, 2049), (4, 32000), (3, 5, 7)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FOCAL_OPTIONS = [dict(), dict(gamma=0.0), dict(gamma=0.5, label_smoothing=0.1),
                 dict(alpha=True, ignore_index=-100), dict(alpha=True, label_smoothing=0.2)]


def _alpha(c):
    return torch.linspace(0.2, 1.0, c, device="cuda")


def _focal_kwargs(opts, c):
    kw = dict(opts)
    if kw.pop("alpha", False):
        kw["alpha"] = _alpha(c)
    return kw


def _classes(shape):
    return shape[1] if len(shape) > 1 else shape[0]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", FOCAL_OPTIONS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_focal_matches_reference(shape, dtype, opts, reduction):
    x, t = make_class_inputs(shape, dtype, device="cuda", ignore_index=-100)
    kw = _focal_kwargs(opts, _classes(shape))
    if "ignore_index" not in kw:
        t = t.clamp_min(0)
    parity_fn(fused_losses.softmax_focal_loss, x, t, "cuda", reduction=reduction, **kw)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", [dict(), dict(alpha=0.0), dict(alpha=0.3, smooth=0.0)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [s for s in SHAPES if len(s) == 2], ids=str)
def test_dsc_matches_reference(shape, dtype, opts, reduction):
    x, t = make_class_inputs(shape, dtype, device="cuda")
    parity_fn(fused_losses.self_adjusting_dice_loss, x, t, "cuda", reduction=reduction, **opts)


@pytest.mark.parametrize("target_dtype", [torch.uint8, torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("cols", [270, 4096])
def test_index_types(target_dtype, cols):
    x, t = make_class_inputs((50, cols), device="cuda", target_dtype=torch.int64)
    t = (t % 200).to(target_dtype)
    parity_fn(fused_losses.softmax_focal_loss, x, t, "cuda", alpha=_alpha(cols))


@pytest.mark.parametrize("cols", [270, 1024])
def test_misaligned_rows_take_scalar_loads(cols):
    buf = torch.randn(64 * cols + 1, device="cuda")
    x = buf[1:].view(64, cols)  # contiguous, 4 bytes past an 8-byte boundary
    t = torch.randint(0, cols, (64,), device="cuda")
    parity_fn(fused_losses.softmax_focal_loss, x, t, "cuda", gamma=2.0)


def _fwd(x, t, alpha=None, gamma=2.0, ignore=-100, smoothing=0.0, reduction="mean"):
    options = [gamma, float("nan") if ignore is None else float(ignore), smoothing]
    return torch.ops.fused_losses.softmax_focal_fwd(x, t, alpha, options, reduction, True)


@pytest.mark.parametrize("cols", [270, 4096])
def test_weighted_mean_reports_scale_one(cols):
    x, t = make_class_inputs((300, cols), device="cuda", ignore_index=-100)
    loss, grad, scale = _fwd(x, t, alpha=_alpha(cols))
    assert float(scale) == 1.0
    ref = fused_losses.softmax_focal_loss(x.cpu().double().requires_grad_(), t.cpu(),
                                          alpha=_alpha(cols).cpu().double(), backend="torch")
    ref.backward()
    assert math.isclose(float(loss), float(ref), rel_tol=1e-4)


@pytest.mark.parametrize("cols", [270, 4096])
def test_zero_weight_sum_gives_nan_loss_zero_grad(cols):
    x, t = make_class_inputs((64, cols), device="cuda")
    loss, grad, scale = _fwd(x, t, alpha=torch.zeros(cols, device="cuda"))
    assert math.isnan(float(loss)) and float(scale) == 1.0
    assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("cols", [270, 4096])
def test_all_ignored_mean_is_nan(cols):
    x, _ = make_class_inputs((16, cols), device="cuda")
    t = torch.full((16,), -100, device="cuda")
    loss, grad, _ = _fwd(x, t)
    assert math.isnan(float(loss)) and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("cols", [270, 4096])
def test_out_of_range_target_is_nan(cols):
    x, t = make_class_inputs((8, cols), device="cuda")
    t[3] = cols
    loss, grad, _ = _fwd(x, t, reduction="sum")
    assert math.isnan(float(loss)) and grad[3].isnan().all() and not grad[2].isnan().any()


@pytest.mark.parametrize("shape", [(65536, 270), (3000, 2048), (70001, 37)])
def test_deterministic_bits(shape):
    x, t = make_class_inputs(shape, device="cuda", ignore_index=-100)
    a = _fwd(x, t, alpha=_alpha(shape[1]))
    b = _fwd(x, t, alpha=_alpha(shape[1]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

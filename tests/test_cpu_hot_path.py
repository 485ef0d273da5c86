"""The C++ CPU kernels' hot path (csrc/cpu/class_tables.h) and gradient cache.

Focal BCE and ASL take a chunk of 16384 elements through per-class coefficient
tables when all its targets are exactly 0 or 1 and every operand is per class;
other chunks take the general code. These tests drive both paths (and chunks of
each kind in one call) against the float64 reference, on every CPU build this
machine runs, and check the cache that hands a freed gradient block to the next
forward (csrc/grad_cache.h).
"""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import fused_losses
from fused_losses import reference
from helpers import assert_close

CAPABILITIES = ["default", "avx2", "avx512"]
CHUNK = 16384


@pytest.fixture(params=CAPABILITIES)
def capability(request, monkeypatch):
    if "cpu" not in fused_losses.available_backends("cpu"):
        pytest.skip("the C++ CPU backend is not built")
    monkeypatch.setenv("FUSED_LOSSES_CPU_CAPABILITY", request.param)
    if torch.ops.fused_losses._cpu_capability() != request.param:
        pytest.skip(f"this CPU cannot run the {request.param} build")
    return request.param


def _inputs(shape, seed=0, soft_at=None, dtype=torch.float32):
    """Logits ~ 3·N(0, 1) and float 0/1 targets (~10 % ones); soft_at: flat
    indices given the soft value 0.3 (their chunks leave the hot path)."""
    gen = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(shape, generator=gen)).to(dtype)
    t = (torch.rand(shape, generator=gen) < 0.1).float()
    if soft_at is not None:
        t.view(-1)[soft_at] = 0.3
    return x, t


def _step(fn, x, t, **kw):
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, t, **kw)
    loss.backward()
    return loss.detach(), x.grad


def _check(fn, ref, x, t, **kw):
    got = _step(lambda z, tt, **k: fn(z, tt, backend="cpu", **k), x, t, **kw)
    kw64 = {k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()}
    want = _step(ref, x.double(), t.double(), **kw64)
    assert_close(got[0], want[0], x.dtype, "loss")
    assert_close(got[1], want[1], x.dtype, "grad")


# (shape, flat indices of soft targets): one chunk; C < 8 and C = 1 (table
# periods shorter than a vector); numel not a multiple of 8; several chunks,
# all hot or one soft chunk between hot ones; a 1-d input.
SHAPES = [((37, 270), None), ((50, 3), None), ((9, 1), None), ((13, 7), None),
          ((70, 270), None), ((130, 270), [CHUNK + 5]), ((4099,), None)]


@pytest.mark.parametrize("shape,soft", SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("gamma", [0.0, 2.0, 1.5])
def test_focal_hot_path_matches_reference(capability, shape, soft, gamma):
    x, t = _inputs(shape, soft_at=soft)
    C = shape[-1]
    gen = torch.Generator().manual_seed(1)
    pw = 1 + 9 * torch.rand(C, generator=gen)
    alpha = torch.rand(C, generator=gen)
    w = 0.5 + torch.rand(C, generator=gen)
    for kw in (dict(), dict(pos_weight=pw, alpha=0.25), dict(alpha=alpha, weight=w),
               dict(pos_weight=pw, alpha=alpha, weight=w, reduction="sum")):
        _check(fused_losses.focal_bce, reference.focal_bce, x, t, gamma=gamma, **kw)


@pytest.mark.parametrize("shape,soft", SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("gammas", [(1.0, 4.0), (0.0, 0.0), (2.0, 3.0)])
def test_asl_hot_path_matches_reference(capability, shape, soft, gammas):
    x, t = _inputs(shape, soft_at=soft)
    C = shape[-1]
    gen = torch.Generator().manual_seed(2)
    pw = 1 + 9 * torch.rand(C, generator=gen)
    w = 0.5 + torch.rand(C, generator=gen)
    g_pos, g_neg = gammas
    for kw in (dict(), dict(pos_weight=pw, reduction="mean"), dict(weight=w, pos_weight=3.0),
               dict(clip=0.2, eps=1e-6)):
        _check(fused_losses.asymmetric_loss, reference.asl, x, t, gamma_pos=g_pos,
               gamma_neg=g_neg, **kw)


def test_hot_path_bf16_and_bool_targets(capability):
    x, t = _inputs((70, 270), dtype=torch.bfloat16)
    for tt in (t, t.bool(), t.to(torch.uint8)):
        _check(fused_losses.focal_bce, reference.focal_bce, x, tt, gamma=2.0, alpha=0.25)
        _check(fused_losses.asymmetric_loss, reference.asl, x, tt)


@pytest.mark.parametrize("fn", [fused_losses.focal_bce, fused_losses.asymmetric_loss])
def test_hot_path_extreme_and_nan_logits(capability, fn):
    x, t = _inputs((8, 270))
    x[0, :8] = torch.tensor([1e4, -1e4, 88.0, -88.0, 30.0, -30.0, 0.0, -0.0])
    t[0, :8] = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    got = fn(x, t, backend="cpu", reduction="none")
    want = fn(x, t, backend="torch", reduction="none")
    assert torch.isfinite(got).all()
    xr = x.clone().requires_grad_(True)
    fn(xr, t, backend="cpu").backward()
    assert torch.isfinite(xr.grad).all()
    _check(fn, reference.focal_bce if fn is fused_losses.focal_bce else reference.asl, x, t)
    assert_close(got, want, torch.float32, "none")
    x[3, 100] = float("nan")
    for tv in (0.0, 1.0):
        t[3, 100] = tv
        assert math.isnan(fn(x, t, backend="cpu").item())
        assert math.isnan(fn(x, t, backend="cpu", reduction="sum").item())


# -- the gradient cache -------------------------------------------------------
def _grad_ptr_after_step(x, t):
    x = x.detach().clone().requires_grad_(True)
    fused_losses.focal_bce(x, t, backend="cpu").backward()
    return x.grad.data_ptr(), x.grad


def test_freed_gradient_block_is_reused_and_values_are_fresh():
    if "cpu" not in fused_losses.available_backends("cpu"):
        pytest.skip("the C++ CPU backend is not built")
    ops = torch.ops.fused_losses
    ops._empty_cpu_cache()
    x, t = _inputs((2000, 270))  # 2.2 MB of fp32 gradient: cached
    ptr, grad = _grad_ptr_after_step(x, t)
    want = grad.clone()
    del grad
    assert ops._cpu_cache_bytes() == x.numel() * 4
    ptr2, grad2 = _grad_ptr_after_step(x, t)
    assert ptr2 == ptr and ops._cpu_cache_bytes() == 0
    assert torch.equal(grad2, want)
    # A different input in the reused block gets its own gradient.
    x3, t3 = _inputs((2000, 270), seed=5)
    del grad2
    _, grad3 = _grad_ptr_after_step(x3, t3)
    _, ref3 = _step(lambda z, tt: fused_losses.focal_bce(z, tt, backend="torch"), x3, t3)
    assert_close(grad3, ref3, torch.float32, "grad")
    grad3.resize_(10, 10)  # a cached block's storage stays resizable
    del grad3
    assert ops._empty_cpu_cache() >= 0 and ops._cpu_cache_bytes() == 0


def test_small_gradients_are_not_cached():
    if "cpu" not in fused_losses.available_backends("cpu"):
        pytest.skip("the C++ CPU backend is not built")
    torch.ops.fused_losses._empty_cpu_cache()
    x, t = _inputs((100, 270))  # 108 kB
    _grad_ptr_after_step(x, t)
    assert torch.ops.fused_losses._cpu_cache_bytes() == 0


def test_cache_off_by_environment_variable():
    code = ("import torch, fused_losses\n"
            "x = torch.randn(2000, 270, requires_grad=True); t = (torch.rand(2000, 270) < .1)\n"
            "fused_losses.focal_bce(x, t, backend='cpu').backward(); x.grad = None\n"
            "print(torch.ops.fused_losses._cpu_cache_bytes())\n")
    if "cpu" not in fused_losses.available_backends("cpu"):
        pytest.skip("the C++ CPU backend is not built")
    # On (the default) it holds the block: test_freed_gradient_block_is_reused...
    env = {"FUSED_LOSSES_CPU_GRAD_CACHE": "0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[-1] == "0"

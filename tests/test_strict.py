"""No silent wrong answers: the value checks, where they run (strict mode), the
constructors' checks and GHMC's eval-mode state. See fused_losses/_strict.py."""
import os
import subprocess
import sys

import pytest
import torch

import fused_losses
from fused_losses import _strict
from fused_losses.spec import SPECS

BINARY = [s for s in SPECS if s.targets == "binary"]
INDEX = [s for s in SPECS if s.targets == "index"]


def _fn(spec):
    return getattr(fused_losses, spec.function)


def _x(shape=(4, 3)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def pretend_gpu(monkeypatch):
    """Tensors behave as if reading them needed a device sync (as on a GPU)."""
    monkeypatch.setattr(_strict, "reads_without_sync", lambda tensor: False)
    previous = fused_losses.set_strict(False)
    yield
    fused_losses.set_strict(previous)


# -- binary targets: hard labels are 0/1, soft labels lie in [0, 1] ---------------
@pytest.mark.parametrize("spec", BINARY, ids=lambda s: s.stem)
@pytest.mark.parametrize("bad,dtype", [(255, torch.uint8), (2, torch.int64), (-1, torch.int32),
                                       (255.0, torch.float32), (1.5, torch.bfloat16),
                                       (float("nan"), torch.float32)])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_binary_target_out_of_range_is_refused(spec, bad, dtype, backend):
    t = torch.zeros(4, 3, dtype=dtype)
    t[1, 2] = bad
    word = "hard labels" if not dtype.is_floating_point else "soft labels"
    with pytest.raises(ValueError, match=f"target holds .*{word}"):
        _fn(spec)(_x(), t, backend=backend)


@pytest.mark.parametrize("spec", BINARY, ids=lambda s: s.stem)
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float32,
                                   torch.float16])
def test_valid_binary_targets_pass(spec, dtype):
    gen = torch.Generator().manual_seed(1)
    t = torch.rand(4, 3, generator=gen)
    t = (t > 0.5).to(dtype) if not dtype.is_floating_point else t.to(dtype)
    assert torch.isfinite(_fn(spec)(_x(), t))


def test_ignored_value_and_differentiable_target_are_not_refused():
    t = torch.tensor([[0, 1, -1], [1, -1, 0]])
    loss = fused_losses.focal_bce(_x((2, 3)), t, ignore_index=-1, reduction="none")
    assert (loss[t == -1] == 0).all()
    with pytest.raises(ValueError, match="or equal ignore_index=-2"):
        fused_losses.focal_bce(_x((2, 3)), t, ignore_index=-2)
    soft = torch.full((2, 3), 1.2, requires_grad=True)  # a free label: no range
    fused_losses.focal_bce(_x((2, 3)), soft, gamma=0.0).backward()
    assert soft.grad is not None


@pytest.mark.parametrize("spec", INDEX, ids=lambda s: s.stem)
def test_class_index_out_of_range_is_refused(spec):
    t = torch.tensor([0, 2, 3, 1])
    with pytest.raises(ValueError, match="class index 3, outside \\[0, 3\\)"):
        _fn(spec)(_x(), t)
    if "ignore_index" in [p.name for p in spec.params]:
        t[2] = -100  # the default ignore_index
        assert torch.isfinite(_fn(spec)(_x(), t))


def test_uint8_class_indices_above_255_classes_are_in_range():
    """The check once compared a uint8 target with C = 270, which wraps to 14."""
    x = torch.randn(3, 270)
    t = torch.tensor([0, 114, 255], dtype=torch.uint8)
    torch.testing.assert_close(fused_losses.softmax_focal_loss(x, t),
                               fused_losses.softmax_focal_loss(x, t.long()))
    fused_losses.check_class_targets(t, 270)


# -- tensor options: the option's range holds for a tensor's values too -----------
@pytest.mark.parametrize("alpha", [[0.25, 0.5, 2.0], [0.2, -0.1, 0.3], [0.1, float("nan"), 0.2]])
def test_focal_alpha_tensor_outside_unit_interval(alpha):
    alpha = torch.tensor(alpha)
    t = torch.rand(4, 3) < 0.5
    for backend in ("torch", "auto"):
        with pytest.raises(ValueError, match=r"alpha must hold values in \[0.0, 1.0\]"):
            fused_losses.focal_bce(_x(), t, alpha=alpha, backend=backend)
    with pytest.raises(ValueError, match="alpha must hold values"):
        fused_losses.FocalBCE(alpha=alpha)
    fused_losses.FocalBCE(alpha=alpha.clamp(0, 1).nan_to_num(0.5))  # in range: fine


# -- where value checks run ---------------------------------------------------------
def test_checks_skip_unsynced_devices_unless_strict(pretend_gpu):
    t = torch.full((4, 3), 255, dtype=torch.uint8)
    alpha = torch.tensor([0.2, 0.5, 2.0])
    assert not fused_losses.is_strict()
    fused_losses.focal_bce(_x(), t, alpha=alpha)  # not read: no sync, no error
    fused_losses.softmax_focal_loss(_x(), torch.tensor([0, 7, 1, 2]))
    with fused_losses.strict():
        assert fused_losses.is_strict()
        with pytest.raises(ValueError, match="hard labels"):
            fused_losses.focal_bce(_x(), t)
        with pytest.raises(ValueError, match="alpha must hold values"):
            fused_losses.focal_bce(_x(), t > 0, alpha=alpha)
        with pytest.raises(ValueError, match="class index 7"):
            fused_losses.softmax_focal_loss(_x(), torch.tensor([0, 7, 1, 2]))
    assert not fused_losses.is_strict()
    with pytest.raises(ValueError, match="alpha must hold values"):  # construction reads
        fused_losses.FocalBCE(alpha=alpha)


def test_set_strict_returns_previous_and_checks_its_argument():
    before = fused_losses.set_strict(True)
    try:
        assert fused_losses.set_strict(False) is True
        assert fused_losses.is_strict() is False
        with pytest.raises(TypeError, match="bool"):
            fused_losses.set_strict(1)
        with fused_losses.strict(False):
            assert not fused_losses.is_strict()
    finally:
        fused_losses.set_strict(before)


def test_environment_variable():
    # One process (each start costs seconds): the package imported with
    # FUSED_LOSSES_STRICT=1, then the module that reads it re-imported per value.
    values = {"1": True, "true": True, "0": False, "": False, "off": False}
    code = ("import importlib, os, sys, fused_losses\n"
            "print(fused_losses.is_strict())\n"
            "for v in sys.argv[1:]:\n"
            "    os.environ['FUSED_LOSSES_STRICT'] = v\n"
            "    print(importlib.reload(fused_losses._strict).is_strict())\n")
    env = dict(os.environ, FUSED_LOSSES_STRICT="1")
    out = subprocess.run([sys.executable, "-c", code, *values], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["True"] + [str(v) for v in values.values()]


@pytest.mark.cuda
def test_cuda_checks_only_in_strict_mode_and_never_sync_otherwise():
    x = torch.randn(64, 270, device="cuda")
    t = torch.zeros(64, 270, dtype=torch.uint8, device="cuda")
    t[3, 7] = 255
    alpha = torch.full((270,), 2.0, device="cuda")
    previous = fused_losses.set_strict(False)
    try:
        torch.cuda.set_sync_debug_mode("error")  # any host sync raises
        try:
            for backend in fused_losses.available_backends("cuda"):
                fused_losses.focal_bce(x, t, alpha=alpha, backend=backend)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        with fused_losses.strict():
            with pytest.raises(ValueError, match="hard labels"):
                fused_losses.focal_bce(x, t)
            with pytest.raises(ValueError, match="alpha must hold values"):
                fused_losses.focal_bce(x, t.clamp(max=1), alpha=alpha)
    finally:
        fused_losses.set_strict(previous)


# -- constructors check every argument ----------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: fused_losses.FocalBCE(gamma=-1), lambda: fused_losses.FocalBCE(reduction="batchmean"),
    lambda: fused_losses.FocalBCE(backend="gpu"), lambda: fused_losses.GHMC(momentum=1.5),
    lambda: fused_losses.AsymmetricLoss(clip=-0.1), lambda: fused_losses.DiceLoss(smooth=-1),
    lambda: fused_losses.SoftmaxFocalLoss(gamma=-1)],
    ids=["focal-gamma", "focal-reduction", "focal-backend", "ghmc-momentum", "asl-clip",
         "dice-smooth", "softmax-gamma"])
def test_constructors_refuse_the_issue_examples(make):
    with pytest.raises(ValueError):
        make()


# -- GHMC's EMA follows BatchNorm's convention ----------------------------------------
def test_ghmc_updates_its_ema_only_in_training_mode():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(32, 20, generator=gen), (torch.rand(32, 20, generator=gen) < 0.2).float()
    crit = fused_losses.GHMC(bins=10, momentum=0.75)
    crit(x, y)
    state = crit.acc_sum.clone()
    crit.eval()
    eval_loss = crit(x, y)
    with torch.no_grad():
        crit(x, y)
    assert torch.equal(crit.acc_sum, state)
    crit.train()
    with torch.no_grad():  # training mode: updated even without grad, as BatchNorm
        train_loss = crit(x, y)
    assert not torch.equal(crit.acc_sum, state)
    torch.testing.assert_close(eval_loss, train_loss)  # eval = the training step's loss
    acc = state.clone()  # the functional form always updates what it is given
    fused_losses.ghmc(x, y, bins=10, momentum=0.75, acc_sum=acc)
    assert not torch.equal(acc, state)

"""GPU-only checks of the ASL Triton and CUDA backends: torch.compile of a
training step, CUDA-graph capture and replay, autocast, large-shape
determinism. Parity and opcheck on CUDA run in test_asl_fused.py."""
import pytest
import torch

import fused_losses
from fused_losses.ops import asl as asl_ops
from helpers import (assert_compiled_step_matches_eager, assert_close, capture_training_step,
                     forward_backward, make_inputs)

pytestmark = pytest.mark.cuda
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(
    b not in fused_losses.available_backends("cuda") or not asl_ops.has_backend(b),
    reason=f"{b} backend unavailable")) for b in ("triton", "cuda")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("detach", [True, False])
def test_compile_fullgraph_training_step(backend, reduction, detach):
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 270).cuda()
    crit = fused_losses.AsymmetricLoss(weight=torch.rand(270, device="cuda"),
                                       detach_focal_weight=detach, reduction=reduction,
                                       backend=backend)
    h = torch.randn(64, 16, device="cuda")
    y = torch.rand(64, 270, device="cuda") < 0.05

    def forward(h, y):
        loss = crit(model(h), y)
        return loss.mean() if reduction == "none" else loss

    assert_compiled_step_matches_eager(model, forward, h, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_graph_capture(backend):
    x, t = make_inputs((257, 270), target_dtype=torch.bool, device="cuda")
    x.requires_grad_(True)
    crit = fused_losses.AsymmetricLoss(backend=backend)
    graph, loss = capture_training_step(lambda z: crit(z, t), x)
    with torch.no_grad():
        x.copy_(x * 0.5)
    graph.replay()
    torch.cuda.synchronize()
    ref_x = x.detach().clone().requires_grad_(True)
    ref_loss = fused_losses.asymmetric_loss(ref_x, t, backend="torch")
    ref_loss.backward()  # upstream 1, as in the captured step
    assert_close(loss.detach(), ref_loss.detach(), what="loss")
    assert_close(x.grad, ref_x.grad, what="grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast(backend, dtype):
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 270).cuda()
    h = torch.randn(512, 64, device="cuda") * 20  # large logits: fp16 must stay finite
    y = torch.rand(512, 270, device="cuda") < 0.02
    with torch.autocast("cuda", dtype=dtype):
        logits = model(h)
        assert logits.dtype == dtype
        loss = fused_losses.asymmetric_loss(logits, y, reduction="mean", backend=backend)
    loss.backward()
    assert loss.dtype == dtype and torch.isfinite(loss)
    assert torch.isfinite(model.weight.grad).all()
    ref = fused_losses.asymmetric_loss(logits.detach(), y, reduction="mean", backend="torch")
    assert_close(loss.detach(), ref, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_shape_deterministic_and_matches(backend):
    x, t = make_inputs((65536, 270), torch.float32, torch.bool, device="cuda")
    runs = [forward_backward(lambda z: fused_losses.asymmetric_loss(z, t, backend=backend), x)
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    ref = forward_backward(lambda z: fused_losses.asymmetric_loss(z, t, backend="torch"), x)
    assert_close(runs[0][0], ref[0], what="loss")
    assert_close(runs[0][1], ref[1], what="grad")

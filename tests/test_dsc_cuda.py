"""GPU-only checks of the self-adjusting DSC Triton and CUDA backends:
large-shape parity and determinism, compile, CUDA graphs, autocast."""
import pytest
import torch

import fused_losses
from helpers import (assert_compiled_step_matches_eager, assert_close, capture_training_step,
                     forward_backward, make_class_inputs)

pytestmark = pytest.mark.cuda
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(
    b not in fused_losses.available_backends("cuda"), reason=f"{b} backend unavailable"))
    for b in ("triton", "cuda")]
fn = fused_losses.self_adjusting_dice_loss


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(65536, 270), (64, 32000)])
def test_large_shapes_match_and_deterministic(backend, shape):
    x, t = make_class_inputs(shape, device="cuda")
    runs = [forward_backward(lambda z: fn(z, t, alpha=0.7, backend=backend), x)
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    ref = forward_backward(lambda z: fn(z, t, alpha=0.7, backend="torch"), x)
    assert_close(runs[0][0], ref[0], what="loss")
    assert_close(runs[0][1], ref[1], what="grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compile_fullgraph_training_step(backend, reduction):
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 270).cuda()
    crit = fused_losses.SelfAdjustingDiceLoss(alpha=1.0, reduction=reduction, backend=backend)
    h = torch.randn(64, 16, device="cuda")
    y = torch.randint(0, 270, (64,), device="cuda")

    def forward(h, y):
        loss = crit(model(h), y)
        return loss if reduction == "mean" else loss.mean()

    assert_compiled_step_matches_eager(model, forward, h, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_graph_capture(backend):
    x, t = make_class_inputs((257, 270), device="cuda")
    x.requires_grad_(True)
    crit = fused_losses.SelfAdjustingDiceLoss(backend=backend)
    graph, loss = capture_training_step(lambda z: crit(z, t), x)
    with torch.no_grad():
        x.copy_(x * 0.5)
    graph.replay()
    torch.cuda.synchronize()
    ref_x = x.detach().clone().requires_grad_(True)
    ref_loss = fn(ref_x, t, backend="torch")
    ref_loss.backward()  # upstream 1, as in the captured step
    assert_close(loss.detach(), ref_loss.detach(), what="loss")
    assert_close(x.grad, ref_x.grad, what="grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast(backend, dtype):
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 270).cuda()
    h = torch.randn(512, 64, device="cuda")
    y = torch.randint(0, 270, (512,), device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        logits = model(h)
        loss = fn(logits, y, backend=backend)
    loss.backward()
    assert loss.dtype == dtype and torch.isfinite(loss)
    assert_close(loss.detach(), fn(logits.detach(), y, backend="torch"), dtype)

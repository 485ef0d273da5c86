"""GPU-only dice checks for the Triton and CUDA backends: compile, CUDA graphs,
autocast and large-shape determinism. Parity and opcheck on CUDA run in
test_dice_fused.py (its Triton and cuda parameters target the GPU when present)."""
import pytest
import torch

import fused_losses
from helpers import (assert_compiled_step_matches_eager, assert_close, capture_training_step,
                     forward_backward, make_inputs)

pytestmark = pytest.mark.cuda
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(
    b not in fused_losses.available_backends("cuda"), reason=f"{b} backend unavailable"))
    for b in ("triton", "cuda")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("spatial", [False, True])
def test_compile_fullgraph_training_step(backend, reduction, spatial):
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 27).cuda()
    crit = fused_losses.DiceLoss(alpha=0.3, reduction=reduction, backend=backend)
    h = torch.randn(64, 4, 16, device="cuda") if spatial else torch.randn(64, 16, device="cuda")
    y = torch.rand(64, 4, 27, device="cuda") < 0.1 if spatial else \
        torch.rand(64, 27, device="cuda") < 0.1

    def forward(h, y):
        logits = model(h)
        if spatial:  # [N, S, C] -> [N, C, S]: classes on dim 1
            logits, y = logits.transpose(1, 2), y.transpose(1, 2)
        loss = crit(logits, y)
        return loss if reduction == "mean" else loss.mean()

    assert_compiled_step_matches_eager(model, forward, h, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_graph_capture(backend):
    x, t = make_inputs((257, 270), target_dtype=torch.bool, device="cuda")
    x.requires_grad_(True)
    crit = fused_losses.DiceLoss(alpha=0.2, backend=backend)
    graph, loss = capture_training_step(lambda z: crit(z, t), x)
    with torch.no_grad():
        x.copy_(x * 0.5)
    graph.replay()
    torch.cuda.synchronize()
    ref_x = x.detach().clone().requires_grad_(True)
    ref_loss = fused_losses.dice_loss(ref_x, t, alpha=0.2, backend="torch")
    ref_loss.backward()  # upstream 1, as in the captured step
    assert_close(loss.detach(), ref_loss.detach(), what="loss")
    assert_close(x.grad, ref_x.grad, what="grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast(backend, dtype):
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 270).cuda()
    h = torch.randn(512, 64, device="cuda")
    y = torch.rand(512, 270, device="cuda") < 0.02
    with torch.autocast("cuda", dtype=dtype):
        logits = model(h)
        assert logits.dtype == dtype
        loss = fused_losses.dice_loss(logits, y, backend=backend)
    loss.backward()
    assert loss.dtype == dtype and torch.isfinite(loss)
    ref = fused_losses.dice_loss(logits.detach(), y, backend="torch")
    assert_close(loss.detach(), ref, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(65536, 270), (8, 3, 128, 128)])
def test_large_shape_deterministic_and_matches(backend, shape):
    x, t = make_inputs(shape, torch.float32, torch.bool, device="cuda")
    run = lambda: forward_backward(lambda z: fused_losses.dice_loss(  # noqa: E731
        z, t, alpha=0.1, square_denominator=True, backend=backend), x)
    runs = [run() for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    ref = forward_backward(lambda z: fused_losses.dice_loss(
        z, t, alpha=0.1, square_denominator=True, backend="torch"), x)
    assert_close(runs[0][0], ref[0], what="loss")
    assert_close(runs[0][1], ref[1], what="grad")

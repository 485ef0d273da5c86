"""GPU-only GHM-C checks: CUDA-graph capture (no host sync anywhere), compile."""
import pytest
import torch

import fused_losses
from fused_losses.ops import ghmc as ghmc_ops
from helpers import assert_close, capture_training_step

pytestmark = pytest.mark.cuda
BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(
    b not in fused_losses.available_backends("cuda") or not ghmc_ops.has_backend(b),
    reason=f"{b} GHM-C unavailable")) for b in ("triton", "cuda")]


def _data():
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(512, 270, generator=gen) * 2).cuda()
    t = (torch.rand(512, 270, generator=gen) < 0.05).float().cuda()
    return x, t


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_graph_capture_with_momentum(backend):
    x, t = _data()
    x.requires_grad_(True)
    crit = fused_losses.GHMC(bins=10, momentum=0.75, backend=backend).cuda()
    graph, loss = capture_training_step(lambda z: crit(z, t), x)
    acc_before = crit.acc_sum.clone()
    graph.replay()
    torch.cuda.synchronize()
    ref_acc = acc_before.clone()
    z = x.detach().clone().requires_grad_(True)
    want = fused_losses.ghmc(z, t, momentum=0.75, acc_sum=ref_acc, backend="torch")
    want.backward()
    assert_close(loss.detach(), want.detach(), what="loss")
    assert_close(x.grad, z.grad, what="grad")
    assert_close(crit.acc_sum, ref_acc, what="acc_sum")


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph(backend):
    x, t = _data()
    model = torch.nn.Linear(270, 270).cuda()
    crit = fused_losses.GHMC(bins=10, momentum=0.5, backend=backend).cuda()
    ref = fused_losses.GHMC(bins=10, momentum=0.5, backend="torch").cuda()
    compiled = torch.compile(lambda h: crit(model(h), t), fullgraph=True)
    for _ in range(2):
        got = compiled(x)
        want = ref(model(x), t)
        assert_close(got.detach(), want.detach(), what="loss")
    assert_close(crit.acc_sum, ref.acc_sum, what="acc_sum")

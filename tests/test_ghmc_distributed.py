"""GHMC(sync_distributed=True): two gloo ranks with half a batch each must give
the weights, losses, gradients and EMA state of one process with the whole batch."""
import os

import pytest
import torch
import torch.distributed as dist

import fused_losses
from fused_losses.spec import BY_STEM
from helpers import assert_close, run_ranks

STEPS, BINS, MOMENTUM = 2, 10, 0.75


def batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 30, generator=gen) * 3
    t = (torch.rand(64, 30, generator=gen) < 0.2).float()
    return x, t


def steps(crit, x, t):
    """(loss, grad) per step for one GHMC module."""
    out = []
    for _ in range(STEPS):
        xs = x.clone().requires_grad_(True)
        loss = crit(xs, t)
        loss.backward()
        out.append((loss.detach(), xs.grad))
    return out


def _rank(rank, world, init_file, out_dir, backend):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        x, t = batch()
        half = x.shape[0] // world
        rows = slice(rank * half, (rank + 1) * half)
        crit = fused_losses.GHMC(bins=BINS, momentum=MOMENTUM, backend=backend,
                                 sync_distributed=True)
        torch.save({"steps": steps(crit, x[rows], t[rows]), "acc_sum": crit.acc_sum},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("backend", ["torch", "triton", "cpu"])
def test_two_ranks_equal_one_process(backend, tmp_path):
    if backend not in fused_losses.available_backends("cpu") or \
            not fused_losses.ops.has_backend(BY_STEM["ghmc"], backend):
        pytest.skip(f"{backend} GHM-C unavailable on CPU tensors here")
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    run_ranks(_rank, lambda attempt: (2, str(tmp_path / f"init{attempt}"), str(tmp_path), backend))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    x, t = batch()
    whole = fused_losses.GHMC(bins=BINS, momentum=MOMENTUM, backend=backend)
    for step, (loss, grad) in enumerate(steps(whole, x, t)):
        losses = [r["steps"][step][0] for r in ranks]
        grads = torch.cat([r["steps"][step][1] for r in ranks])
        assert_close(sum(losses), loss, what=f"step {step} loss")  # mean = Σ over ranks
        assert_close(grads, grad, what=f"step {step} grad")
    for r in ranks:
        assert torch.equal(r["acc_sum"], ranks[0]["acc_sum"])
        assert_close(r["acc_sum"], whole.acc_sum, what="acc_sum")

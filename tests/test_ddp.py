"""DistributedDataParallel on two gloo CPU processes: training with a fused loss
gives the same parameters on both ranks, and the parameters of one process
trained on the concatenated batch.

FocalBCE's mean is per rank, and DDP averages gradients over ranks, which is
the mean over the whole batch. GHMC(sync_distributed=True) already normalises
by the global element count, so each rank's loss is its share of the global
mean; DDP's averaging then needs the loss multiplied by the world size (what a
user of a globally normalised loss does under DDP).
"""
import datetime
import os

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import fused_losses
from helpers import assert_close, run_ranks

WORLD, STEPS, C = 2, 3, 20


def data():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(64, 16, generator=gen)
    y = (torch.rand(64, C, generator=gen) < 0.15).float()
    return h, y


def make_loss(name, backend, distributed):
    if name == "FocalBCE":
        return fused_losses.FocalBCE(alpha=0.25, pos_weight=torch.linspace(1, 4, C),
                                     backend=backend)
    return fused_losses.GHMC(bins=10, momentum=0.75, backend=backend,
                             sync_distributed=distributed)


def train(model, crit, h, y, scale=1.0):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        (crit(model(h), y) * scale).backward()
        opt.step()


def fresh_model():
    torch.manual_seed(1)
    return torch.nn.Linear(16, C)


def _rank(rank, init_file, out_dir, name, backend):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=120))
    try:
        h, y = data()
        rows = slice(rank * len(h) // WORLD, (rank + 1) * len(h) // WORLD)
        model = DistributedDataParallel(fresh_model())
        scale = WORLD if name == "GHMC" else 1.0
        # GHM-C's histogram all-reduce gets its own group, apart from DDP's
        # reducer: gloo collectives on one group from two threads can interleave
        # differently on the ranks (seen as an intermittent hang).
        sync = dist.new_group(list(range(WORLD))) if name == "GHMC" else True
        train(model, make_loss(name, backend, sync), h[rows], y[rows], scale)
        torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["FocalBCE", "GHMC"])
def test_ddp_matches_one_process(name, tmp_path):
    backend = "auto"  # the fused C++ kernel when built (each process spawn costs seconds)
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    run_ranks(_rank, lambda attempt: (str(tmp_path / f"init{attempt}"), str(tmp_path), name,
                                      backend), WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    single = fresh_model()
    train(single, make_loss(name, backend, False), *data())
    start = fresh_model().state_dict()
    for key, value in single.state_dict().items():
        assert not torch.equal(value, start[key])  # training moved the parameters
        for r in ranks:
            assert torch.equal(r[key], ranks[0][key]), f"{key} differs between ranks"
        assert_close(ranks[0][key], value, what=key)

"""Every loss module inside a training loop: pickling and state_dict round
trips, CPU autocast, and the fused CPU kernels' memory peak.

``LOSSES`` lists each module once with a factory and its kind of target, so a
new loss joins every test here by adding one entry. GPU integration (compile,
CUDA graphs, CUDA autocast) lives in the ``test_<loss>_cuda.py`` files; DDP in
``test_ddp.py``.
"""
import pickle

import pytest
import torch

import fused_losses
from bench._memory import cpu_peak_extra_bytes
from helpers import assert_close

C = 12


def multilabel(n=32, c=C, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, generator=gen), (torch.rand(n, c, generator=gen) < 0.2).float()


# name -> (factory(backend) -> module, data(n, seed) -> (features, target), fused CPU backend)
LOSSES = {
    "FocalBCE": (lambda backend: fused_losses.FocalBCE(
        alpha=0.25, pos_weight=torch.linspace(1.0, 3.0, C), backend=backend), multilabel),
    "BCEWithLogitsLoss": (lambda backend: fused_losses.BCEWithLogitsLoss(
        pos_weight=torch.linspace(1.0, 3.0, C)), multilabel),
    "GHMC": (lambda backend: fused_losses.GHMC(bins=10, momentum=0.75, backend=backend),
             multilabel),
    "DiceLoss": (lambda backend: fused_losses.DiceLoss(alpha=0.3, backend=backend), multilabel),
}
HAS_BACKEND = {"FocalBCE", "GHMC", "DiceLoss"}  # modules with a backend= argument
CPU_FUSED = "cpu" in fused_losses.available_backends("cpu")


def _make(name, backend="auto"):
    factory, data = LOSSES[name]
    return factory(backend), data


def _step(model, crit, h, y):
    model.zero_grad(set_to_none=True)
    loss = crit(model(h), y)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("name", LOSSES)
def test_pickle_and_state_dict_round_trip(name):
    crit, data = _make(name)
    h, y = data(n=32, seed=1)
    model = torch.nn.Linear(16, y.shape[1])
    _step(model, crit, h, y)  # GHMC: a non-trivial acc_sum to carry over
    state = {k: v.clone() for k, v in crit.state_dict().items()}

    restored = pickle.loads(pickle.dumps(crit))
    loaded, _ = _make(name)
    loaded.load_state_dict(crit.state_dict())
    for other in (restored, loaded):
        assert other.state_dict().keys() == state.keys()
        for key, value in other.state_dict().items():
            assert torch.equal(value, state[key]), key
    h2, y2 = data(n=32, seed=2)
    want = _step(model, crit, h2, y2)
    for other in (restored, loaded):
        assert torch.equal(_step(model, other, h2, y2), want)
    if name == "GHMC":
        assert not torch.equal(crit.acc_sum, state["acc_sum"])  # the EMA moved on
        assert torch.equal(restored.acc_sum, crit.acc_sum)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("name", LOSSES)
def test_cpu_autocast_bf16(name, backend):
    if backend == "cpu" and not CPU_FUSED:
        pytest.skip("C++ extension not built")
    crit, data = _make(name, backend)
    h, y = data(n=64, seed=3)
    model = torch.nn.Linear(16, y.shape[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(h)
        assert logits.dtype == torch.bfloat16
        logits.retain_grad()
        loss = crit(logits, y)
    loss.backward()
    assert torch.isfinite(loss).all()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad).all()
    assert model.weight.grad.dtype == torch.float32
    # fp32 maths on the bf16 logits: the reference on the same values, upcast.
    ref, _ = _make(name, "torch")
    if name == "GHMC":
        ref = fused_losses.GHMC(bins=10, momentum=0.75, backend="torch")
    expected = ref(logits.detach().float(), y)
    assert_close(loss.detach().float(), expected, torch.bfloat16, what="loss")


@pytest.mark.skipif(not CPU_FUSED, reason="C++ extension not built")
@pytest.mark.parametrize("name", sorted(HAS_BACKEND))
def test_fused_cpu_peak_is_one_gradient(name):
    """fused ``cpu`` forward+backward allocates one gradient beyond its inputs
    (plus scalars); the eager reference, measured the same way, needs several."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(16384, C, generator=gen).requires_grad_(True)
    y = (torch.rand(16384, C, generator=gen) < 0.05).float()
    grad_bytes = x.numel() * x.element_size()
    peaks = {}
    for backend in ("cpu", "torch"):
        crit, _ = _make(name, backend)

        def step():
            x.grad = None
            crit(x, y).backward()

        step()  # warm-up
        x.grad = None
        peaks[backend] = cpu_peak_extra_bytes(step) / grad_bytes
    assert peaks["cpu"] <= 1.01, peaks
    assert peaks["torch"] >= 2.0, peaks  # the accounting does see temporaries

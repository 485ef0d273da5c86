"""Every loss module (one per spec, plus the BCEWithLogitsLoss drop-in) as a
user holds it: defaults, repr, buffers, ``.to()``, pickling and state_dict
round trips inside a training loop, CPU autocast, and the fused CPU kernels'
memory peak.

Modules are built from each spec with every option at a non-default value
(tests/_conformance.py), so a new loss joins every test here by declaring its
spec. GPU integration (compile, CUDA graphs, CUDA autocast) is in
test_conformance_cuda.py; DDP in test_ddp.py.
"""
import pickle

import pytest
import torch

import fused_losses
from _conformance import (case, copy_values, everything, functional, module_class,
                          spec_params, state_operands)
from bench._memory import cpu_peak_extra_bytes
from fused_losses.spec import SPECS
from helpers import assert_close

C = 12
SPECS_P = spec_params()
CPU_FUSED = "cpu" in fused_losses.available_backends("cpu")
def held_values(spec, n=32, seed=0, config=None):
    """(module kwargs, features, target) for a [n, C] batch: every held option
    non-default, every buffer present."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 16, generator=gen)
    config = everything(spec) if config is None else config
    _, t, values = case(spec, (n, C), config, seed=seed, hard=True)
    held = {p.name: values[p.name] for p in module_class(spec).held_params()}
    return held, h, t


def make(name, backend="auto", n=32, seed=0):
    """(module, features, target) for a spec's module or the BCE drop-in."""
    if name == "BCEWithLogitsLoss":
        gen = torch.Generator().manual_seed(seed)
        h, t = torch.randn(n, 16, generator=gen), (torch.rand(n, C, generator=gen) < 0.2)
        return fused_losses.BCEWithLogitsLoss(pos_weight=torch.linspace(1, 3, C)), h, t.float()
    spec = next(s for s in SPECS if s.module == name)
    held, h, t = held_values(spec, n, seed)
    return module_class(spec)(**held, backend=backend), h, t


NAMES = [s.module for s in SPECS] + ["BCEWithLogitsLoss"]


def _step(model, crit, h, y):
    model.zero_grad(set_to_none=True)
    loss = crit(model(h), y)
    (loss if loss.dim() == 0 else loss.mean()).backward()
    return loss.detach()


@pytest.mark.parametrize("name", NAMES)
def test_pickle_and_state_dict_round_trip(name):
    crit, h, y = make(name, seed=1)
    model = torch.nn.Linear(16, C)
    before = {k: v.clone() for k, v in crit.state_dict().items()}
    _step(model, crit, h, y)  # state (GHMC's EMA) moves on
    state = {k: v.clone() for k, v in crit.state_dict().items()}
    spec = next((s for s in SPECS if s.module == name), None)
    for p in state_operands(spec) if spec else []:
        assert not torch.equal(state[p.name], before[p.name]), p.name

    restored = pickle.loads(pickle.dumps(crit))
    loaded, _, _ = make(name)
    loaded.load_state_dict(crit.state_dict())
    for other in (restored, loaded):
        assert other.state_dict().keys() == state.keys()
        for key, value in other.state_dict().items():
            assert torch.equal(value, state[key]), key
        assert repr(other) == repr(crit)
    _, h2, y2 = make(name, seed=2)
    want = _step(model, crit, h2, y2)
    for other in (restored, loaded):
        assert torch.equal(_step(model, other, h2, y2), want)
        for key, value in other.state_dict().items():
            assert torch.equal(value, crit.state_dict()[key]), key


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("name", NAMES)
def test_cpu_autocast_bf16(name, backend):
    if backend == "cpu" and not CPU_FUSED:
        pytest.skip("C++ extension not built")
    crit, h, y = make(name, backend, n=64, seed=3)
    model = torch.nn.Linear(16, C)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(h)
        assert logits.dtype == torch.bfloat16
        logits.retain_grad()
        loss = crit(logits, y)
    (loss if loss.dim() == 0 else loss.mean()).backward()
    assert loss.dtype in (torch.bfloat16, torch.float32) and torch.isfinite(loss).all()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad).all()
    assert model.weight.grad.dtype == torch.float32
    # fp32 maths on the bf16 logits: the reference on the same values, upcast.
    ref, _, _ = make(name, "torch", n=64, seed=3)
    expected = ref(logits.detach().float(), y)
    assert_close(loss.detach().float(), expected, torch.bfloat16, what="loss")


@pytest.mark.skipif(not CPU_FUSED, reason="C++ extension not built")
@pytest.mark.parametrize("spec", SPECS_P)
def test_fused_cpu_peak_is_one_gradient(spec):
    """fused ``cpu`` forward+backward allocates one gradient beyond its inputs
    (plus scalars and per-class sums); the eager reference, measured the same
    way, needs several."""
    if not fused_losses.ops.has_backend(spec, "cpu"):
        pytest.skip("no C++ kernels for this loss in this build")
    held, _, _ = held_values(spec, n=16, config={})
    x, t, _ = case(spec, (16384, C), hard=True, seed=4)
    x.requires_grad_(True)
    grad_bytes = x.numel() * x.element_size()
    peaks = {}
    for backend in ("cpu", "torch"):
        crit = module_class(spec)(**held, backend=backend)

        def step():
            x.grad = None
            loss = crit(x, t)
            (loss if loss.dim() == 0 else loss.mean()).backward()

        step()  # warm-up
        x.grad = None
        peaks[backend] = cpu_peak_extra_bytes(step) / grad_bytes
    assert peaks["cpu"] <= 1.01, peaks
    assert peaks["torch"] >= 2.0, peaks  # the accounting does see temporaries


@pytest.mark.parametrize("spec", SPECS_P)
def test_module_defaults_follow_the_spec(spec):
    crit = module_class(spec)()
    for p in module_class(spec).held_params():
        assert getattr(crit, p.name) == (None if p.is_operand else p.default), p.name
    assert crit.reduction == spec.default_reduction and crit.backend == "auto"
    assert set(crit.state_dict()) == {p.name for p in state_operands(spec)}


@pytest.mark.parametrize("spec", SPECS_P)
def test_module_matches_functional_and_repr(spec):
    held, _, _ = held_values(spec)
    x, t, values = case(spec, (32, C), everything(spec), hard=True)
    crit = module_class(spec)(**held, reduction="sum")
    for name, value in held.items():
        if isinstance(value, torch.Tensor):
            assert f"{name}=tensor{tuple(value.shape)}" in repr(crit)
            assert torch.equal(crit.state_dict()[name], value)
        else:
            assert f"{name}={value!r}" in repr(crit), (name, repr(crit))
    assert "reduction='sum'" in repr(crit) and "backend='auto'" in repr(crit)
    states = {p.name for p in state_operands(spec)}
    values = {k: v if k in held or k in states or not spec.param(k).is_operand else None
              for k, v in values.items()}  # other operands are forward's arguments
    want = functional(spec)(x, t, **copy_values(values), reduction="sum")
    assert_close(crit(x, t), want, what="module vs functional")


@pytest.mark.parametrize("spec", SPECS_P)
def test_module_to_float64_moves_buffers_and_still_runs(spec):
    """Option buffers follow .to(dtype); state (GHMC's EMA) stays float32."""
    held, _, _ = held_values(spec)
    crit = module_class(spec)(**held).to(torch.float64)
    for name, value in crit.state_dict().items():
        if name in held:
            assert value.dtype == torch.float64, name
        elif name in {p.name for p in state_operands(spec)}:
            assert value.dtype == torch.float32, name
    x, t, _ = case(spec, (32, C), everything(spec), hard=True)
    # What the module passes: its held values (cast) and its state, nothing else.
    values = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in held.items()}
    values.update({p.name: getattr(crit, p.name).clone() for p in state_operands(spec)})
    got = crit(x.double(), t)
    assert got.dtype == torch.float64
    assert_close(got, functional(spec)(x.double(), t, **copy_values(values)), what="loss")


def test_cpu_backward_with_the_scaling_pass_skipped_is_exact():
    """A plain loss.backward() of a mean or sum (factor 1, the pass skipped:
    tests/test_scale_grad.py) gives the reference's gradient."""
    if not CPU_FUSED:
        pytest.skip("C++ extension not built")
    x, t = torch.randn(64, 30, requires_grad=True), torch.rand(64, 30) < 0.2
    for reduction in ("mean", "sum"):
        fused_losses.focal_bce(x, t, reduction=reduction, backend="cpu").backward()
        got, x.grad = x.grad, None
        fused_losses.focal_bce(x, t, reduction=reduction, backend="torch").backward()
        assert_close(got, x.grad, what=f"{reduction} grad")
        x.grad = None

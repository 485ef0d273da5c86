"""Conformance battery on a GPU (marked ``cuda``, skipped without one): every
loss x the Triton and CUDA backends through torch.compile, CUDA-graph capture,
autocast, peak memory, large-shape determinism and opcheck.

Parity over shapes, dtypes and options runs on the GPU too: the ``fused``
fixture's triton and cuda parameters target it when one is present
(test_conformance.py, in full there: no interpreter).
"""
import pytest
import torch

import fused_losses
from _conformance import (REDUCTIONS, allows, case, everything, first_shape, functional,
                          module_class, run, spec_params, state_operands)
from _conformance_ops import opcheck_calls, record_ops, training_step
from fused_losses.spec import SPECS
from helpers import assert_close, capture_training_step

pytestmark = pytest.mark.cuda
CASES = [pytest.param(s, b, id=f"{s.stem}-{b}") for s in SPECS for b in ("triton", "cuda")]
LARGE = [(65536, 270), (64, 32000), (8, 19, 64, 64)]


@pytest.fixture
def backend(request):
    """The test's GPU backend, skipped where it has no kernels for its loss."""
    spec, name = request.getfixturevalue("spec"), request.param
    if name not in fused_losses.available_backends("cuda") or \
            not fused_losses.ops.has_backend(spec, name):
        pytest.skip(f"{name} has no {spec.stem} kernels here")
    return name


def _scalar(loss):
    return loss if loss.dim() == 0 else loss.mean()


def _module(spec, backend, config=None, shape=(257, 270), dtype=torch.float32):
    """(module on the GPU with every held option non-default, logits, target)."""
    x, t, values = case(spec, shape, config or everything(spec), dtype=dtype, device="cuda",
                        hard=True)
    held = {p.name: values[p.name] for p in module_class(spec).held_params()}
    return module_class(spec)(**held, backend=backend).cuda(), x, t, held


@pytest.mark.parametrize("spatial", [False, True], ids=["flat", "spatial"])
@pytest.mark.parametrize("reduction", ["default", "none"])
@pytest.mark.parametrize("spec,backend", CASES, indirect=["backend"])
def test_compile_fullgraph_training_step(spec, backend, reduction, spatial):
    if spatial and not allows(spec, (2, 3, 4)):
        pytest.skip("the loss takes [N, C] input only")
    training_step(spec, backend, spec.default_reduction if reduction == "default" else reduction,
                  spatial, device="cuda")


@pytest.mark.parametrize("spec,backend", CASES, indirect=["backend"])
def test_cuda_graph_capture_and_replay(spec, backend):
    """A captured forward+backward replays on new logits with no host sync,
    state included (GHMC's EMA is updated on the device)."""
    crit, x, t, held = _module(spec, backend)
    x.requires_grad_(True)
    graph, loss = capture_training_step(lambda z: _scalar(crit(z, t)), x)
    with torch.no_grad():
        x.copy_(x * 0.5)
    before = {k: v.clone() for k, v in crit.state_dict().items()}
    graph.replay()
    torch.cuda.synchronize()
    ref = module_class(spec)(**held, backend="torch").cuda()
    ref.load_state_dict(before)
    z = x.detach().clone().requires_grad_(True)
    want = _scalar(ref(z, t))
    want.backward()  # upstream 1, as in the captured step
    assert_close(loss.detach(), want.detach(), what="loss")
    assert_close(x.grad, z.grad, what="grad")
    for p in state_operands(spec):
        assert_close(getattr(crit, p.name), getattr(ref, p.name), what=p.name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("spec,backend", CASES, indirect=["backend"])
def test_autocast(spec, backend, dtype):
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 270).cuda()
    h = torch.randn(512, 64, device="cuda") * 20  # large logits: fp16 must stay finite
    crit, _, t, held = _module(spec, backend, shape=(512, 270))
    with torch.autocast("cuda", dtype=dtype):
        logits = model(h)
        assert logits.dtype == dtype
        loss = crit(logits, t)
    _scalar(loss).backward()
    assert loss.dtype == dtype and torch.isfinite(loss).all()
    assert torch.isfinite(model.weight.grad).all()
    ref = module_class(spec)(**held, backend="torch").cuda()
    assert_close(loss.detach(), ref(logits.detach(), t), dtype, "loss")


@pytest.mark.parametrize("spec,backend", CASES, indirect=["backend"])
def test_peak_memory_is_one_gradient(spec, backend):
    """forward+backward allocates the gradient and nothing else of its size: the
    forward's gradient becomes x.grad (scaled in place), partials are tiny."""
    x, t, values = case(spec, first_shape(spec, [(65536, 270)]), dtype=torch.bfloat16,
                        device="cuda", hard=True)
    x.requires_grad_(True)

    def step():
        x.grad = None
        _scalar(functional(spec)(x, t, **values, backend=backend)).backward()

    step()  # warm-up: kernels compiled, allocator primed
    x.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    grad_bytes = x.numel() * x.element_size()
    assert extra <= grad_bytes + (1 << 20), extra / grad_bytes


@pytest.mark.parametrize("shape", LARGE, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("spec,backend", CASES, indirect=["backend"])
def test_large_shapes_deterministic_and_match(spec, backend, shape):
    if not allows(spec, shape):
        pytest.skip(f"the loss does not take {len(shape)}-D input")
    x, t, values = case(spec, shape, "everything", device="cuda", hard=True)
    first, second = (run(spec, x, t, values, backend) for _ in range(2))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    want = run(spec, x, t, values, "torch")
    assert_close(first[0], want[0], what="loss")
    assert_close(first[1], want[1], what="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("spec,backend", CASES, indirect=["backend"])
def test_opcheck(spec, backend, reduction):
    """opcheck on the Triton ops (the interpreter cannot run their AOT check)
    and the CUDA C++ ops, with the arguments a real call passes."""
    opcheck_calls(record_ops(spec, backend, reduction, device="cuda"))


@pytest.mark.parametrize("spec", spec_params())
def test_tensors_on_two_devices_are_refused(spec):
    x, t, values = case(spec, (4, 6), "everything", device="cuda")
    with pytest.raises(ValueError, match="device"):
        functional(spec)(x, t.cpu(), **values)
    for name, value in values.items():
        if isinstance(value, torch.Tensor):
            with pytest.raises(ValueError, match=name):
                functional(spec)(x, t, **dict(values, **{name: value.cpu()}))

"""Conformance battery, numerics: every loss x every fused backend against
the reference, driven by the specs (cases come from tests/_conformance.py).

The ``fused`` fixture (conftest.py) gives Triton (the interpreter on CPU, the
GPU when present), the C++ CPU kernel in each capability build and CUDA.
Interpreted Triton runs ~100x slower than the C++ kernels, so it gets small
shapes and one reduction per case, turning through them (``rotate``).
Loss-specific oracles (textbook formulas, torch equivalences, gradcheck of the
references) stay in the per-loss files.
"""
import pytest
import torch

import fused_losses
from _conformance import (EXTREMES, REDUCTIONS, allows, assert_parity, case, configs,
                          copy_values, everything, first_shape, functional, fused_matrix,
                          ignore_option, interpreted, make_case, product, resolve, rotate, run,
                          spec_params, spec_shapes, target_dtypes)
from fused_losses.spec import SPECS
from helpers import LOGIT_DTYPES, assert_close, forward_backward

# Odd sizes: one element; C = 270 (not a power of two); spatial; C = 41 (1/41
# rounds); 1-D; C above the Triton blocks (1024 elementwise, 4096 per softmax
# row); 4-D; a spatial size of one. BIG: more than one C++ chunk (16384).
SHAPES = [(1, 1), (37, 270), (3, 5, 7), (23, 41), (1001,), (3, 5000), (4099,), (2, 3, 4, 5),
          (5, 4, 1)]
BIG = [(129, 1001)]  # each dtype once, turning through the reductions
SMALL = [(1, 1), (3, 5, 7), (6, 7), (9,)]
KEEPS_GRAD = ("elementwise", "rows", "ghmc")  # protocols whose forward writes the gradient
SPECS_P = spec_params()


def small(fused, spec, shape):
    """``shape``, or a small one for interpreted Triton."""
    return first_shape(spec, SMALL[1:] if interpreted(fused) else [shape, (6, 7)])


@pytest.fixture
def backend(fused, request):
    """``fused``, skipped where this build has no kernels for the test's loss."""
    spec = request.getfixturevalue("spec")
    if not fused_losses.ops.has_backend(spec, fused[0]):
        pytest.skip(f"no {spec.stem} kernels for {fused[0]}: "
                    f"{fused_losses.ops.missing_reason(spec, fused[0])}")
    return fused


def _with_hard(spec_items):
    """(spec, config, hard) for every config; hard and soft binary targets."""
    return [pytest.param(s, name, hard, id=f"{s.stem}-{name}-{'hard' if hard else 'soft'}")
            for s in spec_items for name in configs(s)
            for hard in ([True] if s.targets == "index" else [False, True])]


def _one_target_kind(spec_items):
    out = []
    for s in spec_items:
        for i, name in enumerate(configs(s)):
            hard = s.targets == "index" or i % 2 == 1
            out.append(pytest.param(s, name, hard, id=f"{s.stem}-{name}"))
    return out


def _target_items():
    return [pytest.param(s, d, id=f"{s.stem}-{str(d)[6:]}") for s in SPECS
            for d in target_dtypes(s)]


@pytest.mark.parametrize("fused,spec,shape,dtype,reduction", fused_matrix(
    product(spec_shapes(SHAPES), LOGIT_DTYPES, REDUCTIONS)
    + rotate(product(spec_shapes(BIG), LOGIT_DTYPES), REDUCTIONS),
    rotate(product(spec_shapes(SMALL), LOGIT_DTYPES), REDUCTIONS)), indirect=["fused"])
def test_parity_shapes_dtypes(backend, spec, shape, dtype, reduction):
    """Every option at a non-default value and every operand present."""
    name, dev = backend
    x, t, values = case(spec, shape, "everything", dtype=dtype, device=dev, hard=True)
    assert_parity(spec, name, x, t, values, reduction)


@pytest.mark.parametrize("fused,spec,config,hard,reduction", fused_matrix(
    product(_with_hard(SPECS), REDUCTIONS), rotate(_one_target_kind(SPECS), REDUCTIONS)),
    indirect=["fused"])
def test_parity_options(backend, spec, config, hard, reduction):
    """Each option value and operand broadcast pattern alone, and all together."""
    name, dev = backend
    x, t, values = case(spec, first_shape(spec, [(3, 5, 7), (6, 7)]), config, device=dev,
                        hard=hard)
    assert_parity(spec, name, x, t, values, reduction)


@pytest.mark.parametrize("fused,spec,target_dtype,reduction", fused_matrix(
    product(_target_items(), REDUCTIONS), rotate(_target_items(), REDUCTIONS)),
    indirect=["fused"])
def test_parity_target_dtypes(backend, spec, target_dtype, reduction):
    name, dev = backend
    x, t, values = case(spec, small(backend, spec, (37, 270)), target_dtype=target_dtype,
                        device=dev)
    assert_parity(spec, name, x, t, values, reduction)


def _extreme_logits(spec, dtype, big, device):
    """Saturating logits in every column; index targets pick a saturated class."""
    row = [-big, big, 0.0, 30.0, -30.0, 90.0, -90.0, 17.0, -19.0]
    x = torch.tensor([row, row[::-1], row[3:] + row[:3], [0.0] * 9], dtype=dtype)
    _, t = make_case(spec, tuple(x.shape), hard=True)
    if spec.targets == "index":
        t = torch.tensor([0, 0, 1, 2])
    return x.to(device), t.to(device)


_EXTREME_ITEMS = [pytest.param(s, d, b, id=f"{s.stem}-{str(d)[6:]}") for s in SPECS
                  for d, b in EXTREMES]


@pytest.mark.parametrize("fused,spec,dtype,big,config", fused_matrix(
    product(_EXTREME_ITEMS, ["defaults", "everything", "low"]),
    rotate(_EXTREME_ITEMS, ["defaults", "everything", "low"])), indirect=["fused"])
def test_extreme_logits_finite_and_match(backend, spec, dtype, big, config):
    """Finite gradients for any finite logit, a loss that is finite wherever the
    exact value fits the dtype, and a match with the float64 reference."""
    name, dev = backend
    x, t = _extreme_logits(spec, dtype, big, dev)
    values, t = resolve(spec, configs(spec)[config], x, t)
    for reduction in REDUCTIONS:
        exact = run(spec, x.double().cpu(), t.cpu(), values, "torch", reduction, "cpu")
        got = run(spec, x, t, values, name, reduction)
        assert torch.isfinite(got[1]).all(), f"{reduction}: non-finite gradient"
        fits = exact[0].abs() < torch.finfo(dtype).max
        assert torch.isfinite(got[0][fits]).all(), f"{reduction}: non-finite loss"
        assert_close(got[0], exact[0].to(dtype), dtype, f"{reduction} loss")
        assert_close(got[1], exact[1].to(dtype), dtype, f"{reduction} grad")


@pytest.mark.parametrize("spec", SPECS_P)
def test_nan_logit_propagates(backend, spec):
    name, dev = backend
    ignore = ignore_option(spec)
    config = {ignore.name: None} if ignore is not None and ignore.optional else {}
    x, t, values = case(spec, small(backend, spec, (37, 20)), config, device=dev)
    x.view(-1)[x.numel() // 2] = float("nan")
    for reduction in ("mean", "sum"):
        loss = functional(spec)(x, t, **values, reduction=reduction, backend=name)
        assert loss.isnan().any(), reduction


@pytest.mark.parametrize("spec", SPECS_P)
def test_empty_and_all_ignored_match_reference(backend, spec):
    name, dev = backend
    shapes = [(0, 5), (0, 5, 3)] + ([(4, 0)] if spec.targets != "index" else [])
    for shape in [s for s in shapes if allows(spec, s)]:
        x, t, values = case(spec, shape, "everything", device=dev)
        for reduction in REDUCTIONS:
            assert_parity(spec, name, x, t, values, reduction)
    ignore = ignore_option(spec)
    if ignore is not None:
        config = dict(everything(spec), **{ignore.name: -1})
        x, t, values = case(spec, first_shape(spec, [(6, 5)]), config, device=dev)
        t = torch.full_like(t, -1)
        for reduction in REDUCTIONS:
            assert_parity(spec, name, x, t, values, reduction)


@pytest.mark.parametrize("spec", spec_params([s for s in SPECS if s.targets == "index"]))
def test_out_of_range_class_gives_nan_row(backend, spec, monkeypatch):
    """Refused where values are checked (CPU tensors, strict mode); unchecked (a
    GPU outside strict mode) the row's loss and gradient are NaN, and no other
    row is touched (the kernels never read outside the row)."""
    name, dev = backend
    x, t, values = case(spec, (6, 9), device=dev)
    t[3], t[4] = 9, -7
    with fused_losses.strict():
        with pytest.raises(ValueError, match="class index 9, outside"):
            functional(spec)(x, t, **values, backend=name)
    monkeypatch.setattr(fused_losses._api, "checks_values", lambda tensor: False)
    loss, grad = forward_backward(lambda z: functional(spec)(
        z, t, **values, reduction="none", backend=name), x)
    assert loss[3].isnan() and loss[4].isnan() and grad[3].isnan().all()
    ok = [0, 1, 2, 5]
    assert torch.isfinite(loss[ok]).all() and torch.isfinite(grad[ok]).all()


@pytest.mark.parametrize("spec", SPECS_P)
def test_no_grad_matches(backend, spec):
    name, dev = backend
    x, t, values = case(spec, small(backend, spec, (37, 27)), "everything", device=dev)
    with torch.no_grad():
        got = functional(spec)(x.requires_grad_(), t, **copy_values(values), backend=name)
    assert got.grad_fn is None
    want = run(spec, x.detach(), t, values, "torch", device="cpu")[0]
    assert_close(got, want, x.dtype, "loss")


@pytest.mark.parametrize("fused,spec,reduction", fused_matrix(
    product(SPECS_P, REDUCTIONS), rotate(SPECS_P, REDUCTIONS)), indirect=["fused"])
def test_repeated_calls_bit_identical(backend, spec, reduction):
    name, dev = backend
    x, t, values = case(spec, small(backend, spec, (37, 301)), "everything",
                        dtype=torch.bfloat16, device=dev)
    first, second = (run(spec, x, t, values, name, reduction) for _ in range(2))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.parametrize("spec", SPECS_P)
def test_second_backward_raises_or_is_right(backend, spec):
    """Protocols that keep the forward's gradient scale it in place, so a second
    backward through a retained graph must fail loudly, never scale twice; the
    others recompute it and must be exact."""
    name, dev = backend
    x, t, values = case(spec, first_shape(spec, [(5, 7)]), device=dev)
    x.requires_grad_(True)
    loss = functional(spec)(x, t, **copy_values(values), backend=name).sum()
    (loss * 3).backward(retain_graph=True)
    z = x.detach().clone().requires_grad_(True)
    want, = torch.autograd.grad(3 * functional(spec)(z, t, **copy_values(values),
                                                      backend="torch").sum(), z)
    assert_close(x.grad, want, what="grad")
    if spec.protocol in KEEPS_GRAD:
        with pytest.raises(RuntimeError, match="inplace"):
            (loss * 3).backward()
    else:
        (loss * 3).backward()
        assert_close(x.grad, 2 * want, what="second grad")
    # A first backward with factor 1 skips the scaling pass; the buffer it
    # returns may be x.grad itself, so a second backward must not scale it.
    x.grad = None
    loss = functional(spec)(x, t, **copy_values(values), backend=name).mean()
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    if spec.protocol in KEEPS_GRAD:
        with pytest.raises(RuntimeError, match="inplace"):
            (loss * 3).backward()
        assert torch.equal(x.grad, first)
    else:
        (loss * 3).backward()
        assert_close(x.grad, 4 * first, what="second grad after a factor-1 backward")


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("spec", SPECS_P)
def test_cpu_bit_identical_for_one_and_two_threads(threads, spec, reduction):
    if "cpu" not in fused_losses.available_backends("cpu") or \
            not fused_losses.ops.has_backend(spec, "cpu"):
        pytest.skip("no C++ CPU kernels in this build")
    x, t, values = case(spec, first_shape(spec, [(300, 1001)]), "everything")
    runs = []
    for n in (1, 2, 1, 2):
        threads(n)
        runs.append(run(spec, x, t, values, "cpu", reduction))
    for loss, grad, _ in runs[1:]:
        assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1])

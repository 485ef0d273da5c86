"""Conformance battery, API: signatures, bad input (in the functional form and
at module construction) and backend resolution, generated from the specs.

Bad values come from each Option's type and range and each Operand's kind
(tests/_conformance.py); every one must raise ValueError or TypeError whose
message names the argument.
"""
import inspect
import math

import pytest
import torch

import fused_losses
from _conformance import (Tensor, case, copy_values, everything, functional, module_class,
                          spec_params)
from _conformance_bad import bad_calls, bad_operand_values, bad_option_values
from fused_losses.spec import SPECS

SPECS_P = spec_params()
FUSED_HERE = [b for b in fused_losses.available_backends("cpu") if b != "torch"]


def _held(spec):
    return {p.name for p in module_class(spec).held_params()}


def _option_cases(held_only=False):
    out = []
    for spec in SPECS:
        for opt in spec.options:
            if held_only and opt.name not in _held(spec):
                continue
            for value, exc in bad_option_values(opt):
                out.append(pytest.param(spec, opt, value, exc,
                                        id=f"{spec.stem}-{opt.name}={value!r}"))
    return out


def _bad_value(value, x, t):
    """A ``Tensor`` marker as a tensor: ``wrong`` does not broadcast to ``t``."""
    if not isinstance(value, Tensor):
        return value
    n = t.shape[-1] + (1 if value.pattern == "wrong" else 0)
    return torch.rand(n).to(value.dtype or torch.float32)


def _assert_names(info, words):
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("spec", SPECS_P)
def test_signatures_follow_the_spec(spec):
    names = [p.name for p in spec.params]
    sig = inspect.signature(functional(spec)).parameters
    assert list(sig) == ["input", "target", *names, "reduction", "backend"]
    for p in spec.params:
        assert sig[p.name].default == (None if p.is_operand else p.default), p.name
    assert sig["reduction"].default == spec.default_reduction
    assert sig["backend"].default == "auto"
    init = list(inspect.signature(module_class(spec)).parameters)
    held = [p.name for p in module_class(spec).held_params()]
    assert init[:len(held) + 2] == held + ["reduction", "backend"]


@pytest.mark.parametrize("spec,opt,value,exc", _option_cases())
def test_bad_option_raises_naming_it(spec, opt, value, exc):
    x, t, values = case(spec, (4, 6))
    values[opt.name] = _bad_value(value, x, t)
    with pytest.raises(exc) as info:
        functional(spec)(x, t, **values)
    words = [opt.name]
    if exc is ValueError and isinstance(value, (int, float)) and not math.isnan(value):
        words.append(str(float(value) if opt.type is float else value))
    _assert_names(info, words)


@pytest.mark.parametrize("spec,opt,value,exc", _option_cases(held_only=True))
def test_bad_option_raises_at_construction(spec, opt, value, exc):
    if isinstance(value, Tensor) and value.pattern == "wrong":
        pytest.skip("a tensor's broadcast is checked against the target, in the call")
    with pytest.raises(exc) as info:
        module_class(spec)(**{opt.name: _bad_value(value, *case(spec, (4, 6))[:2])})
    _assert_names(info, [opt.name])


def _operand_cases():
    out = []
    for spec in SPECS:
        x, t, _ = case(spec, (4, 6))
        for p in spec.params:
            if p.is_operand:
                for i, (_, exc, _) in enumerate(bad_operand_values(spec, p, x, t)):
                    out.append(pytest.param(spec, p, i, id=f"{spec.stem}-{p.name}-{i}"))
    return out


@pytest.mark.parametrize("spec,p,i", _operand_cases())
def test_bad_operand_raises_naming_it(spec, p, i):
    x, t, values = case(spec, (4, 6))
    value, exc, words = bad_operand_values(spec, p, x, t)[i]
    values[p.name] = value
    with pytest.raises(exc) as info:
        functional(spec)(x, t, **values)
    _assert_names(info, words)


def _call_cases():
    return [pytest.param(s, key, id=f"{s.stem}-{key}") for s in SPECS
            for key in bad_calls(s, *case(s, (4, 6))[:2])]


@pytest.mark.parametrize("spec,key", _call_cases())
def test_bad_call_raises_naming_the_argument(spec, key):
    x, t, values = case(spec, (4, 6))
    bx, bt, kwargs, exc, words = bad_calls(spec, x, t)[key]
    with pytest.raises(exc) as info:
        functional(spec)(bx, bt, **dict(values, **kwargs))
    _assert_names(info, words)


@pytest.mark.parametrize("spec", SPECS_P)
def test_constructor_refuses_bad_reduction_backend_and_buffers(spec):
    cls = module_class(spec)
    for kwargs, exc, word in [({"reduction": "elementwise_mean"}, ValueError, "reduction"),
                              ({"reduction": None}, ValueError, "reduction"),
                              ({"backend": "gpu"}, ValueError, "backend"),
                              ({"backend": 1}, ValueError, "backend"),
                              ({"no_such_option": 1}, TypeError, "no_such_option")]:
        with pytest.raises(exc, match=word):
            cls(**kwargs)
    for p in spec.params:
        if p.is_operand and p.name in _held(spec):
            with pytest.raises(TypeError, match=p.name):
                cls(**{p.name: [1.0, 2.0]})
            if p.floating:
                with pytest.raises(TypeError, match=p.name):
                    cls(**{p.name: torch.ones(3, dtype=torch.int64)})


@pytest.mark.parametrize("spec", SPECS_P)
def test_float64_needs_the_reference(spec):
    x, t, values = case(spec, (5, 6), "everything")
    loss = functional(spec)(x.double(), t, **copy_values(values))
    assert loss.dtype == torch.float64
    for backend in FUSED_HERE:
        if fused_losses.ops.has_backend(spec, backend):
            with pytest.raises(ValueError, match="float64"):
                functional(spec)(x.double(), t, **copy_values(values), backend=backend)


@pytest.mark.parametrize("spec", SPECS_P)
def test_unavailable_backend_says_why(spec):
    x, t, values = case(spec, (4, 6))
    assert fused_losses.available_backends(x) == fused_losses.available_backends("cpu")
    for backend in ("triton", "cpu", "cuda"):
        if backend in fused_losses.available_backends("cpu"):
            continue
        with pytest.raises(fused_losses.BackendUnavailableError, match=backend):
            functional(spec)(x, t, **values, backend=backend)


@pytest.mark.parametrize("spec", SPECS_P)
def test_auto_picks_the_cpu_kernel(spec):
    from fused_losses._api import resolve
    x, t, values = case(spec, (4, 6))
    want = "cpu" if "cpu" in FUSED_HERE and fused_losses.ops.has_backend(spec, "cpu") \
        else "torch"
    assert resolve(spec, "auto", x, t, values) == want


def _grad_operands():
    return [pytest.param(s, p, id=f"{s.stem}-{p.name}") for s in SPECS for p in s.operands
            if getattr(p, "kind", "broadcast") != "state" and getattr(p, "floating", True)]


@pytest.mark.parametrize("spec,p", _grad_operands())
def test_tensor_requiring_grad_gets_it_from_the_reference(spec, p):
    """``auto`` falls back to the reference, which differentiates the tensor;
    an explicit fused backend refuses, naming it."""
    x, t, values = case(spec, (5, 6), dict(everything(spec), **{p.name: Tensor()}))
    w = values[p.name].clone().requires_grad_(True)
    functional(spec)(x, t, **dict(values, **{p.name: w})).sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    for backend in FUSED_HERE:
        if fused_losses.ops.has_backend(spec, backend):
            with pytest.raises(ValueError, match=p.name):
                functional(spec)(x, t, **dict(values, **{p.name: w}), backend=backend)


@pytest.mark.parametrize("spec", spec_params([s for s in SPECS if s.target_grad == "reference"]))
def test_target_requiring_grad_gets_it_from_the_reference(spec):
    """Where the spec's own check allows a target gradient for these options,
    ``auto`` gives it; an explicit fused backend always refuses."""
    x, t, values = case(spec, (5, 6))
    t = t.float().requires_grad_(True)
    try:
        functional(spec)(x, t, **values).sum().backward()
    except ValueError as exc:
        assert "target" in str(exc)
    else:
        assert t.grad is not None and torch.isfinite(t.grad).all()
    for backend in FUSED_HERE:
        if fused_losses.ops.has_backend(spec, backend):
            with pytest.raises(ValueError, match="target"):
                functional(spec)(x, t, **values, backend=backend)

"""Spec-driven cases for the conformance battery (tests/test_conformance*.py,
tests/test_integration.py); bad values are in _conformance_bad.py, op
recording and compile steps in _conformance_ops.py.

Inputs, option values and operands are all derived from what a loss's spec
declares (``fused_losses/spec/``): its target kind and input dims, each
Option's type and range, each Operand's kind. Nothing is keyed on a loss's
name, so a new loss joins every test by declaring its spec.

Two rules stand in for spec fields that do not exist (yet):
- an ``int`` option without bounds is a target value to ignore: cases that
  set it also write that value into every fifth target;
- a ``state`` operand starts as the module's buffer of the same name (the
  module knows its shape; the spec does not say).
"""
from __future__ import annotations

import math

import pytest
import torch

import fused_losses
from conftest import FUSED, fused_id
from fused_losses.spec import SPECS
from helpers import assert_close, forward_backward, make_class_inputs, make_inputs

REDUCTIONS = ("none", "mean", "sum")
# (dtype, big logit): large enough to saturate every sigmoid and softmax.
EXTREMES = [(torch.float32, 1e4), (torch.float16, 6e4), (torch.bfloat16, 1e4)]


class Tensor:
    """A tensor value to build per case: ``pattern`` is how it broadcasts to
    the target (``last``: one per class column, ``full``, ``lead``: one per
    row, ``scalar``); ``dtype`` None means a floating value."""

    def __init__(self, pattern="last", dtype=None):
        self.pattern, self.dtype = pattern, dtype

    def __repr__(self):
        return self.pattern + (f"-{str(self.dtype)[6:]}" if self.dtype else "")


def functional(spec):
    return getattr(fused_losses, spec.function)


def module_class(spec):
    return getattr(fused_losses, spec.module)


def spec_params(specs=SPECS):
    """pytest params over the specs, with their stems as ids."""
    return [pytest.param(s, id=s.stem) for s in specs]


def interpreted(backend) -> bool:
    """Triton through the CPU interpreter, ~100x slower than the C++ kernels."""
    return backend[0] == "triton" and backend[1] == "cpu"


def duplicate_cpu(backend) -> bool:
    """The plain ``cpu`` parameter where it runs the same build as a forced
    capability parameter (it picks the best one this CPU has)."""
    if backend[0] != "cpu" or backend[2] is not None:
        return False
    try:
        active = torch.ops.fused_losses._cpu_capability()
    except (AttributeError, RuntimeError):
        return False
    return any(b[0] == "cpu" and b[2] == active for b in FUSED)


def fused_matrix(full, light=None):
    """Params ``fused, *case`` for the ``fused`` fixture (indirect): every case
    in ``full`` on each fused backend; the ``light`` ones (default: all) on
    interpreted Triton and on a plain ``cpu`` that duplicates a capability
    parameter. Each case is a pytest.param."""
    out = []
    for backend in FUSED:
        cheap = light is not None and (interpreted(backend) or duplicate_cpu(backend))
        for c in (light if cheap else full):
            out.append(pytest.param(backend, *c.values, marks=c.marks,
                                    id=f"{fused_id(backend)}-{c.id}"))
    return out


def rotate(items, *choices):
    """Each item of ``items`` once, with one pick from each list in ``choices``
    (turning through them): the cheap cover interpreted Triton gets."""
    out = []
    for i, item in enumerate(items):
        picks = [c[(i + i // len(c)) % len(c)] for c in choices]
        out.append(pytest.param(*item.values, *picks, id="-".join(
            [item.id] + [_id(p) for p in picks])))
    return out


def product(items, *choices):
    """Every item with every combination of ``choices``."""
    out = [(item.values, [item.id], item.marks) for item in items]
    for choice in choices:
        out = [(v + (c,), ids + [_id(c)], m) for v, ids, m in out for c in choice]
    return [pytest.param(*v, id="-".join(ids), marks=m) for v, ids, m in out]


def _id(value):
    if isinstance(value, torch.dtype):
        return str(value)[6:]
    if isinstance(value, bool):
        return "hard" if value else "soft"
    return str(value)


def allows(spec, shape) -> bool:
    """Whether ``spec.input_dims`` admits an input of ``shape``."""
    if spec.input_dims == "matrix":
        return len(shape) == 2
    if spec.input_dims == "class_dim":
        return len(shape) >= 2
    return len(shape) >= 1


def spec_shapes(shapes, specs=SPECS):
    """(spec, shape) params for every shape a spec admits."""
    return [pytest.param(s, shape, id=f"{s.stem}-{'x'.join(map(str, shape))}")
            for s in specs for shape in shapes if allows(s, shape)]


def first_shape(spec, shapes):
    return next(s for s in shapes if allows(spec, s))


def class_count(shape) -> int:
    """Classes of an input of ``shape``: dim 1, or dim 0 of a 1-D input."""
    return shape[1] if len(shape) > 1 else shape[0]


def ignore_option(spec):
    """The option naming a target value to ignore: an int without bounds."""
    return next((o for o in spec.options if o.type is int and o.low is None), None)


def state_operands(spec):
    return [p for p in spec.params if p.is_operand and p.kind == "state"]


def make_case(spec, shape, dtype=torch.float32, target_dtype=None, device="cpu", seed=0,
              hard=False):
    """Logits of ``shape`` and targets of the spec's kind: class indices, or
    binary targets that are soft floats unless ``hard`` (bool)."""
    if spec.targets == "index":
        return make_class_inputs(shape, dtype, target_dtype or torch.int64, device, seed=seed)
    target_dtype = target_dtype or (torch.bool if hard else torch.float32)
    return make_inputs(shape, dtype, target_dtype, device, seed=seed)


def index_target_dtypes():
    return [torch.int64, torch.int32, torch.int16, torch.uint8]


def binary_target_dtypes():
    return [torch.float32, torch.float16, torch.bfloat16, torch.bool, torch.uint8,
            torch.int64, torch.int32]


def target_dtypes(spec):
    return index_target_dtypes() if spec.targets == "index" else binary_target_dtypes()


# -- option values ----------------------------------------------------------
def option_samples(opt) -> list:
    """Valid non-default values of one option, from its type and range."""
    if opt.type is object:
        return []
    # An inside value first (``everything`` takes it, on large shapes too), then
    # the bounds. Unbounded: 2.7 first; 0.4 (an exponent below one) makes
    # gradients like (p - clip)^-0.6 so ill-conditioned that fp32 rounding of
    # sigmoid alone moves them ~1e-3 relative wherever p crosses a kink.
    if opt.type is bool:
        out = [not opt.default]
    elif opt.type is int and opt.low is None:  # a target value to ignore
        out = [-1, 0]
    elif opt.type is int:
        lo, hi = int(opt.low), int(opt.high)
        out = [(lo + hi) // 2 + 1, lo, hi]
    elif math.isinf(opt.high):
        out = [opt.low + 2.7, opt.low + 0.4, opt.low]
    else:
        span = opt.high - opt.low
        out = [opt.low + 0.3 * span, opt.low,
               opt.low + 0.9 * span if opt.high_open else opt.high]
    if opt.optional and opt.default is not None:
        out.append(None)
    if opt.tensor:
        out.append(Tensor())
    return [v for v in dict.fromkeys(out) if _differs(v, opt.default)]


def _differs(value, default) -> bool:
    if isinstance(value, Tensor) or (value is None) != (default is None):
        return True
    return value is not None and value != default


def operand_samples(p) -> list:
    if p.kind == "broadcast":
        out = [Tensor("last"), Tensor("full"), Tensor("lead"), Tensor("scalar")]
        if not p.floating:  # integer and bool tensors are accepted too
            out.append(Tensor("full", torch.bool))
        return out
    if p.kind == "class_weight":
        return [Tensor("last")]
    return []  # state: always present, from the module


def configs(spec) -> dict:
    """name -> {param: value}: each non-default value alone, then all at once."""
    out = {"defaults": {}}
    everything = {}
    for p in spec.params:
        samples = operand_samples(p) if p.is_operand else option_samples(p)
        for value in samples:
            out[f"{p.name}={value!r}"] = {p.name: value}
        if samples:
            everything[p.name] = samples[0] if not p.is_operand else Tensor("last")
    out["everything"] = everything
    # Every bound at once (gamma = 0, smooth = 0, bins = 1, ...): the kernels'
    # special cases, which one-at-a-time configs meet only one by one.
    out["low"] = {o.name: (int(o.low) if o.type is int else o.low) for o in spec.options
                  if o.low is not None and not o.tensor}
    return out


def everything(spec) -> dict:
    return configs(spec)["everything"]


def _broadcast_shape(target_shape, pattern):
    last = tuple(target_shape[-1:])
    return {"last": last, "full": tuple(target_shape), "scalar": (),
            "lead": tuple(target_shape[:-1]) + ((1,) if target_shape else ())}[pattern]


def build_tensor(spec, p, marker, x, t, seed=3):
    """The tensor a ``Tensor`` marker stands for, on the inputs' device."""
    gen = torch.Generator().manual_seed(seed)
    if getattr(p, "kind", None) == "class_weight":
        value = torch.rand(class_count(x.shape), generator=gen) + 0.1
    elif p.is_operand:
        value = torch.rand(_broadcast_shape(t.shape, marker.pattern), generator=gen) * 2
        if value.numel() > 1:
            value.view(-1)[::7] = 0.0  # weight 0 must also work (masking)
        if marker.dtype is not None:
            value = value > 0.5
    else:  # a scalar option that also takes a tensor: values in its range
        value = torch.rand(_broadcast_shape(t.shape, marker.pattern), generator=gen)
        span = 3.0 if math.isinf(p.high) else p.high - p.low  # [low, inf): [low, low + 3)
        value = p.low + span * value
    return value.to(x.device)


def module_state(spec, values: dict) -> dict:
    """Fresh state operands, as the module built with ``values`` holds them."""
    if not state_operands(spec):
        return {}
    held = {p.name: values[p.name] for p in module_class(spec).held_params()
            if p.name in values and not isinstance(values[p.name], torch.Tensor)}
    m = module_class(spec)(**held)
    return {p.name: getattr(m, p.name, None) for p in state_operands(spec)}


def resolve(spec, config: dict, x, t):
    """(values for every param, targets): defaults overridden by ``config``,
    tensors built for ``x``/``t``, the ignore value written into the targets."""
    values = {p.name: None if p.is_operand else p.default for p in spec.params}
    values.update(config)
    for p in spec.params:
        if isinstance(values[p.name], Tensor):
            values[p.name] = build_tensor(spec, p, values[p.name], x, t)
    values.update({k: v.to(x.device) for k, v in module_state(spec, values).items()
                   if v is not None})
    ignore = ignore_option(spec)
    value = None if ignore is None else values[ignore.name]
    if value is not None and t.numel():
        if spec.targets != "index" and (t.is_floating_point() or t.dtype == torch.bool):
            t = t.to(torch.int64)
        info = torch.iinfo(t.dtype)
        if info.min <= value <= info.max:  # an unsigned target cannot hold -1
            t = t.clone()
            t.view(-1)[::5] = value
    return values, t


def case(spec, shape, config="defaults", **kwargs):
    """(x, t, values) for ``shape`` under the named config (or a dict)."""
    x, t = make_case(spec, shape, **kwargs)
    values, t = resolve(spec, configs(spec)[config] if isinstance(config, str) else config,
                        x, t)
    return x, t, values


# -- runs -------------------------------------------------------------------
def copy_values(values, device=None):
    """A copy of ``values`` whose tensors are fresh (state is updated in place)."""
    return {k: (v.detach().clone().to(device or v.device) if isinstance(v, torch.Tensor)
                else v) for k, v in values.items()}


def run(spec, x, t, values, backend, reduction=None, device=None):
    """(loss, grad, state after the call) of one forward+backward, with a
    non-unit upstream gradient, on copies of ``values``."""
    vals = copy_values(values, device)
    kw = {} if reduction is None else {"reduction": reduction}
    xd, td = (x, t) if device is None else (x.to(device), t.to(device))
    loss, grad = forward_backward(
        lambda z: functional(spec)(z, td, **vals, **kw, backend=backend), xd)
    return loss, grad, {p.name: vals[p.name] for p in state_operands(spec)}


def assert_parity(spec, backend, x, t, values, reduction=None, dtype=None):
    """``backend`` against the reference (on CPU, float32 maths) on loss, input
    gradient and state."""
    got = run(spec, x, t, values, backend, reduction)
    want = run(spec, x, t, values, "torch", reduction, "cpu")
    dtype = dtype or x.dtype
    assert_close(got[0], want[0].to(got[0].dtype), dtype, f"{spec.stem} loss")
    assert_close(got[1], want[1].to(got[1].dtype), dtype, f"{spec.stem} grad")
    for name, state in got[2].items():
        if state is not None:
            assert_close(state, want[2][name], torch.float32, f"{spec.stem} {name}")

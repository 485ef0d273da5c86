"""The functional and ``nn.Module`` forms of every loss, built from its spec.

``make_functional(spec)`` gives ``fn(input, target, *, <params>, reduction,
backend)``: it checks every argument against the spec, resolves the backend
once (``resolve``), and calls the reference or the fused ops.
``make_module(spec)`` gives an ``nn.Module`` whose constructor runs the same
checks, keeps tensor parameters as buffers and forwards to the functional.
Signatures and docstrings are generated from the spec too, so a parameter is
written down once, in ``fused_losses/spec/<stem>.py``.
"""
from __future__ import annotations

import importlib
import inspect
import numbers
from typing import Any, Optional, Union

import torch
from torch import nn

from . import _validate as v
from . import ops
from ._backend import BackendUnavailableError, check_backend, resolve_backend, wide_rows
from ._strict import checks_values
from .spec import SPECS

# -- argument checks ----------------------------------------------------------
def check_option(opt, value):
    """One scalar option against its declared type and range (no tensor data read)."""
    if value is None and opt.optional:
        return None
    if opt.type is object:
        return value
    if opt.tensor and isinstance(value, torch.Tensor):
        return value
    if opt.type is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{opt.name} must be a bool, got {type(value).__name__}")
        return value
    if opt.type is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            what = "an int or None" if opt.optional else "an int"
            raise TypeError(f"{opt.name} must be {what}, got {value!r}")
        if opt.low is not None:
            return v.check_int(opt.name, value, int(opt.low), int(opt.high))
        return int(value)
    if opt.tensor and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{opt.name} must be None, a float or a tensor, got "
                        f"{type(value).__name__}")
    return v.check_real(opt.name, value, opt.low, opt.high, high_open=opt.high_open)


def _check_operand(p, value, input, target):
    if getattr(p, "tensor", False) or p.kind == "broadcast":
        return v.check_broadcast(p.name, value, target, floating=getattr(p, "floating", True))
    if p.kind == "class_weight":
        n_classes = input.shape[1] if input.dim() > 1 else input.shape[0]
        return v.check_class_weight(p.name, value, n_classes)
    if value is not None:
        v.check_tensor(p.name, value)
    return value  # "state": the spec's check() knows its contract


# Validated scalar options of recent calls, keyed by the spec and the exact
# (type, value) of each option: a training loop repeats the same few, and
# re-checking them is a third of a call's Python. Only plain scalars are keys.
_OPTION_CACHE: dict = {}
_OPTION_CACHE_SIZE = 256
_SCALARS = (float, int, bool, str, type(None))


def _checked_options(spec, values: dict) -> dict:
    """``{name: checked value}`` of ``spec``'s options (``check_option`` each)."""
    key = [spec.stem]
    for opt in spec.options:
        value = values[opt.name]
        if type(value) not in _SCALARS:
            key = None
            break
        key += (type(value), value)
    if key is not None:
        key = tuple(key)
        hit = _OPTION_CACHE.get(key)
        if hit is not None:
            return hit
    checked = {opt.name: check_option(opt, values[opt.name]) for opt in spec.options}
    if key is not None:
        if len(_OPTION_CACHE) >= _OPTION_CACHE_SIZE:
            _OPTION_CACHE.clear()
        _OPTION_CACHE[key] = checked
    return checked


def check_call(spec, input, target, values: dict, reduction, backend):
    """Every check of one call, in a fixed order; returns the validated values."""
    v.check_logits(input)
    if spec.targets == "index":
        if spec.input_dims == "matrix" and input.dim() != 2:
            raise ValueError(f"input must be [N, C] logits, got shape {tuple(input.shape)}")
        v.check_class_target(input, target)
    else:
        v.check_target(input, target)
        if spec.input_dims == "class_dim" and input.dim() < 2:
            raise ValueError(f"input must be [N, C] or [N, C, d1, ...] (classes on dim 1), "
                             f"got shape {tuple(input.shape)}")
    checked, out = _checked_options(spec, values), {}
    for p in spec.params:
        value = values[p.name]
        if p.is_operand:
            out[p.name] = _check_operand(p, value, input, target)
        else:
            out[p.name] = checked[p.name]
            if p.tensor and isinstance(value, torch.Tensor):
                _check_operand(p, value, input, target)
    v.check_reduction(reduction, spec.reductions)
    v.check_devices(input=input, target=target,
                    **{p.name: out[p.name] for p in spec.operands})
    if spec.check is not None:
        spec.check(out, input, target)
    if target.requires_grad and spec.target_grad == "error":
        raise ValueError(f"{spec.function} does not support target.requires_grad")
    check_backend(backend)
    if checks_values(input):
        check_values(spec, input, target, out)
    return out


def _check_tensor_option(opt, value):
    """A tensor given for a ranged option: its values must lie in the range too."""
    if opt.low is not None:
        v.check_values_in(opt.name, value, opt.low, opt.high, high_open=opt.high_open)


def check_values(spec, input, target, values: dict) -> None:
    """The checks that read tensor data: target values and tensor options' ranges.

    They cost one pass over the target, and a host sync on a GPU, so
    ``check_call`` runs them where ``_strict.checks_values`` says: CPU tensors
    always, others in strict mode, never inside a torch.compile trace.
    """
    ignore_index = values.get("ignore_index")
    if spec.targets == "index":
        v.check_class_target_values(target, input.shape[1] if input.dim() > 1 else
                                    input.shape[0], ignore_index)
    elif not target.requires_grad:  # a differentiable target is a free soft label
        v.check_binary_target_values(target, ignore_index)
    for opt in spec.options:
        if opt.tensor and isinstance(values[opt.name], torch.Tensor):
            _check_tensor_option(opt, values[opt.name])


def resolve(spec, backend: str, input, target, values: dict) -> str:
    """The concrete backend of one call: the only backend-resolution logic.

    ``auto`` falls back to the reference when a fused kernel cannot give the
    answer (float64 maths, or a gradient for the target or a tensor option);
    an explicit fused backend then raises, saying why.
    """
    needs_ref = [name for name in spec.kernel_operands
                 if isinstance(values.get(name), torch.Tensor) and values[name].requires_grad]
    if target.requires_grad:
        needs_ref.insert(0, "target")
    fused_ok = input.dtype != torch.float64 and not needs_ref
    wide = backend == "auto" and wide_rows(spec.stem, input.shape)
    key = (spec.stem, backend, input.device.type, fused_ok, wide)
    chosen = _RESOLVED.get(key)
    if chosen is None:
        chosen = _RESOLVED[key] = _resolve(spec, backend, input.device.type, fused_ok,
                                           needs_ref, input.dtype, wide)
    return chosen


# (stem, backend, device type, fused_ok, wide rows) -> the backend resolve()
# chose: the answer depends on nothing else (availability is fixed once imported).
_RESOLVED: dict = {}


def _resolve(spec, backend, device_type, fused_ok, needs_ref, dtype, wide=False) -> str:
    chosen = resolve_backend(backend, device_type, fused_ok, wide)
    if chosen != "torch" and not ops.has_backend(spec, chosen):
        if backend != "auto":
            raise BackendUnavailableError(
                f"backend={backend!r} has no {spec.stem} kernels in this build "
                f"({ops.missing_reason(spec, chosen)})")
        chosen = "torch"
    if chosen != "torch" and not fused_ok:
        raise ValueError(
            f"backend={backend!r} needs float16/bfloat16/float32 input and no gradient for "
            f"the target or tensor options; got input {dtype} and requires_grad on "
            f"{needs_ref}; use backend='torch' or 'auto'")
    return chosen


def call(spec, input, target, values: dict, reduction: str, backend: str):
    """Check, resolve and run one call of ``spec``'s loss."""
    values = check_call(spec, input, target, values, reduction, backend)
    chosen = resolve(spec, backend, input, target, values)
    kernel_reduction = "sum" if reduction == "batchmean" else reduction
    if chosen == "torch":
        loss = _reference(spec)(input, target, **values, reduction=kernel_reduction)
    else:
        loss = ops.run(spec, chosen, input, target, values, kernel_reduction)
    if reduction == "batchmean":  # timm's multilabel scale: Σ over classes, mean over rows
        loss = loss / (input.shape[0] if input.dim() > 0 else 1)
    return loss


# Each spec's pure-PyTorch function, from fused_losses/reference/<stem>.py; looked
# up at import so that a torch.compile trace only reads a dict.
_REFERENCES = {spec.stem: getattr(importlib.import_module(f"fused_losses.reference.{spec.stem}"),
                                  spec.reference) for spec in SPECS}


def _reference(spec):
    return _REFERENCES[spec.stem]


# -- generated signatures and docs -----------------------------------------
def _default_repr(p):
    return None if p.is_operand else p.default


def annotation(p):
    """The type hint of one spec parameter, as the generated signatures show it.

    An operand is ``Optional[torch.Tensor]``; an option is its ``type`` (``object``
    gives ``Any``), with ``torch.Tensor`` added when ``tensor`` and ``None`` when
    ``optional``. A parameter may declare its own hint as ``p.annotation``.
    """
    declared = getattr(p, "annotation", None)
    if declared is not None:
        return declared
    if p.is_operand:
        return Optional[torch.Tensor]
    if p.type is object:
        return Any
    hint = Union[p.type, torch.Tensor] if p.tensor else p.type
    return Optional[hint] if p.optional else hint


def _annotate(fn, params, returns):
    """Give ``fn`` the signature ``params -> returns``, annotations included."""
    fn.__signature__ = inspect.Signature(params, return_annotation=returns)
    fn.__annotations__ = {p.name: p.annotation for p in params
                          if p.annotation is not inspect.Parameter.empty}
    fn.__annotations__["return"] = returns
    return fn


def _args_doc(spec) -> str:
    lines = ["input: logits, float16, bfloat16 or float32 (float64: reference only).",
             "target: " + ("class indices (integer dtype)." if spec.targets == "index" else
                           "same shape; bool/integer 0/1 labels or soft float labels "
                           "in [0, 1].")]
    lines += [f"{p.name}: {p.doc}" for p in spec.params]
    names = ", ".join(f"``\"{r}\"``" for r in spec.reductions)
    lines.append(f"reduction: one of {names} (default ``\"{spec.default_reduction}\"``)"
                 + ("; ``\"batchmean\"`` is the sum divided by ``input.shape[0]``."
                    if "batchmean" in spec.reductions else "."))
    lines.append("backend: ``\"auto\" | \"triton\" | \"cuda\" | \"cpu\" | \"torch\"``; "
                 "``\"auto\"`` picks the fastest here (``available_backends()``).")
    return "\n".join("        " + line for line in lines)


def functional_doc(spec) -> str:
    return (f"{spec.summary}\n\n    Shapes: {spec.shapes}\n\n    Args:\n{_args_doc(spec)}\n\n"
            f"    Returns:\n        The loss in ``input.dtype``.\n\n    Example:{spec.example}\n")


def make_functional(spec):
    """``spec``'s functional form, with a real signature and docstring."""
    names = [p.name for p in spec.params]
    defaults = {p.name: _default_repr(p) for p in spec.params}
    default_reduction = spec.default_reduction

    def loss(input, target, **kwargs):
        unknown = set(kwargs) - set(names) - {"reduction", "backend"}
        if unknown:
            raise TypeError(f"{spec.function}() got unexpected keyword argument(s) "
                            f"{sorted(unknown)}")
        values = {name: kwargs.get(name, defaults[name]) for name in names}
        return call(spec, input, target, values, kwargs.get("reduction", default_reduction),
                    kwargs.get("backend", "auto"))

    P, kw = inspect.Parameter, inspect.Parameter.KEYWORD_ONLY
    params = [P("input", P.POSITIONAL_OR_KEYWORD, annotation=torch.Tensor),
              P("target", P.POSITIONAL_OR_KEYWORD, annotation=torch.Tensor)]
    params += [P(p.name, kw, default=defaults[p.name], annotation=annotation(p))
               for p in spec.params]
    params += [P("reduction", kw, default=default_reduction, annotation=str),
               P("backend", kw, default="auto", annotation=str)]
    _annotate(loss, params, torch.Tensor)
    loss.__name__ = loss.__qualname__ = spec.function
    loss.__module__ = "fused_losses.functional"
    loss.__doc__ = functional_doc(spec)
    return loss


# -- modules ------------------------------------------------------------------
class SpecLoss(nn.Module):
    """Base of the generated loss modules: checked parameters, buffers, repr."""

    spec = None
    functional = None

    def __init__(self, *args, **kwargs):
        super().__init__()
        spec = self.spec
        held = self.held_params()
        names = [p.name for p in held] + ["reduction", "backend"]
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} arguments")
        given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword "
                                f"argument {key!r}")
            if key in given:
                raise TypeError(f"{type(self).__name__}() got multiple values for {key!r}")
            given[key] = value
        self.reduction = v.check_reduction(given.get("reduction", spec.default_reduction),
                                           spec.reductions)
        self.backend = check_backend(given.get("backend", "auto"))
        for p in held:
            value = given.get(p.name, _default_repr(p))
            if isinstance(value, torch.Tensor):
                if p.is_operand or p.tensor:
                    if getattr(p, "floating", True) and not value.is_floating_point():
                        raise TypeError(f"{p.name} must be a floating-point tensor, got "
                                        f"{value.dtype}")
                    if not p.is_operand:  # construction always reads the values, even on a GPU
                        _check_tensor_option(p, value)
                    self.register_buffer(p.name, value)
                    continue
            if p.is_operand:
                if value is not None:
                    v.check_tensor(p.name, value)
                self.register_buffer(p.name, None)
            else:
                setattr(self, p.name, check_option(p, value))

    @classmethod
    def held_params(cls):
        """The parameters the module holds (buffers and options), in signature order."""
        return [p for p in cls.spec.params if not p.is_operand or p.buffer]

    def loss_values(self) -> dict:
        return {p.name: getattr(self, p.name) for p in self.held_params()}

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return type(self).functional(input, target, **self.loss_values(),
                                     reduction=self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        parts = []
        for p in self.held_params():
            value = getattr(self, p.name)
            if isinstance(value, torch.Tensor):
                parts.append(f"{p.name}=tensor{tuple(value.shape)}")
            elif not p.is_operand:
                parts.append(f"{p.name}={value!r}")
        parts += [f"reduction={self.reduction!r}", f"backend={self.backend!r}"]
        return ", ".join(parts)


def make_module(spec, functional, base=SpecLoss, namespace=None):
    """``spec``'s ``nn.Module`` class, registered under ``namespace`` (for pickle)."""
    doc = (f"{spec.summary}\n\n    Functional form: :func:`fused_losses.{spec.function}`. "
           f"Tensor parameters are buffers (they follow ``.to()`` and ``state_dict``); "
           f"every argument is checked here, at construction.\n\n    Shapes: {spec.shapes}"
           f"\n\n    Example:{spec.module_example}\n")
    cls = type(spec.module, (base,), {"spec": spec, "functional": staticmethod(functional),
                                      "__doc__": doc, "__module__": "fused_losses.nn"})
    if base is SpecLoss:  # a base with its own __init__ keeps its signature
        P, kw = inspect.Parameter, inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [P("self", kw)]
        params += [P(p.name, kw, default=_default_repr(p), annotation=annotation(p))
                   for p in cls.held_params()]
        params += [P("reduction", kw, default=spec.default_reduction, annotation=str),
                   P("backend", kw, default="auto", annotation=str)]
        cls.__init__ = _with_signature(cls.__init__, params)
        cls.__init__.__qualname__ = f"{spec.module}.__init__"
    if namespace is not None:
        namespace[spec.module] = cls
    return cls


def _with_signature(init, params):
    """``init`` behind the signature ``params -> None`` (annotations included)."""
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
    return _annotate(__init__, params, None)

"""The declarative pieces a loss spec is built from (standard library only).

A :class:`LossSpec` names a loss's parameters in the order of its public
signature. Each one is an :class:`Option` (a Python scalar) or an
:class:`Operand` (a tensor). Every layer derives what it needs from it:

- ``fused_losses/_api.py``: the functional form's checks and signature, the
  ``nn.Module``'s constructor, buffers and ``extra_repr``;
- ``fused_losses/ops/``: fake kernels and autograd of the fused ops;
- ``fused_losses/_codegen.py``: the C++ options struct of the kernels;
- ``tests/test_conformance.py``: the battery every loss runs through.

Scalar options travel to the kernels as one bundle, ``list[float]`` in the
order of :attr:`LossSpec.kernel_options`: a bool is 0/1, an int is exact up
to 2**53 and an optional ``None`` is NaN. This module imports nothing but the
standard library so that the build can generate the C++ header from it
without importing torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from types import SimpleNamespace
from typing import Any, Callable, Optional

INF = math.inf


@dataclass(frozen=True)
class Option:
    """A scalar option.

    ``type`` is ``float``, ``int`` or ``bool``; ``low``/``high`` bound a number
    (``high_open`` excludes ``high``). ``optional`` admits None. ``tensor``
    also admits a tensor broadcasting to the target (it then travels to the
    kernels as the operand of the same name, and the scalar slot is NaN).
    ``kernel=False`` keeps an option out of the kernels' bundle.
    """
    name: str
    type: type
    default: Any
    doc: str
    low: Optional[float] = None
    high: Optional[float] = None
    high_open: bool = False
    optional: bool = False
    tensor: bool = False
    kernel: bool = True
    is_operand = False  # a class attribute, not a field

    def __post_init__(self):
        if self.high == INF and not self.high_open:
            raise ValueError(f"option {self.name}: an infinite upper bound must be open "
                             f"(high_open=True): no option can mean inf")


@dataclass(frozen=True)
class Operand:
    """A tensor operand.

    ``kind``: ``"broadcast"`` (broadcasts to the target without growing it),
    ``"class_weight"`` (``[C]``, one value per class of class-index losses) or
    ``"state"`` (a tensor updated in place, checked by the spec's ``check``).
    ``buffer``: the module holds it as a buffer (else it is an argument of
    ``forward``, or module state the spec's module hooks manage).
    ``floating``: the tensor must have a floating dtype.
    """
    name: str
    kind: str
    doc: str
    buffer: bool = True
    floating: bool = True
    kernel: bool = True
    is_operand = True


@dataclass(frozen=True)
class LossSpec:
    """One loss, declared once.

    ``stem``: the file stem in every layer (``reference/<stem>.py``,
    ``triton/<stem>.py``, ``csrc/<stem>.cpp``, ``tests/test_<stem>*.py``, ...).
    ``targets``: ``"binary"`` (same shape as the input: bool/integer 0/1 or
    soft float labels) or ``"index"`` (class indices, class dim 1).
    ``input_dims``: ``"any"``, ``"class_dim"`` (``[N, C, ...]``) or ``"matrix"``
    (``[N, C]``).
    ``protocol``: how the fused ops return their results:
    ``"elementwise"`` and ``"rows"`` give ``(loss, grad, scale)`` with the
    gradient computed in the forward (``none`` keeps the input's or the
    target's shape); ``"column_sums"`` gives ``(loss, sums)`` and a backward
    pass; ``"ghmc"`` is the histogram, weights, loss pipeline.
    ``reference``: the function's name in ``fused_losses.reference``.
    ``check``: extra argument checks, ``check(values, input, target)``.
    ``target_grad``: what ``target.requires_grad`` gives: ``"error"`` or
    ``"reference"`` (the pure-PyTorch path differentiates it).
    ``reductions``: the accepted ``reduction`` values; ``"batchmean"`` (the sum
    divided by ``input.shape[0]``, timm's multilabel default) is computed by
    ``_api.call`` from the kernels' ``"sum"``.
    """
    stem: str
    function: str
    module: str
    reference: str
    summary: str
    shapes: str
    example: str
    module_example: str
    targets: str
    protocol: str
    params: tuple
    input_dims: str = "any"
    default_reduction: str = "mean"
    target_grad: str = "error"
    check: Optional[Callable] = None
    reductions: tuple = ("none", "mean", "sum")

    # -- what the layers read (derived once: every call reads them) -----------
    @cached_property
    def options(self) -> tuple:
        return tuple(p for p in self.params if not p.is_operand)

    @cached_property
    def operands(self) -> tuple:
        """Tensor parameters, and options that also take a tensor."""
        return tuple(p for p in self.params if p.is_operand or p.tensor)

    @cached_property
    def kernel_options(self) -> tuple:
        return tuple(p for p in self.options if p.kernel)

    @cached_property
    def kernel_operands(self) -> tuple:
        return tuple(p.name for p in self.operands if getattr(p, "kernel", True))

    def param(self, name: str):
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{self.stem} has no parameter {name!r}")

    def encode(self, values: dict) -> list:
        """The kernels' scalar bundle from validated ``values``."""
        out = []
        for opt in self.kernel_options:
            v = values[opt.name]
            if v is None or (opt.tensor and not isinstance(v, (int, float))):
                out.append(math.nan)
            else:
                out.append(float(v))
        return out

    def decode(self, bundle) -> SimpleNamespace:
        """Named Python values of a bundle (the Triton launchers' view of it)."""
        opts = self.kernel_options
        if len(bundle) != len(opts):
            raise ValueError(f"{self.stem}: {len(bundle)} options given, the spec has "
                             f"{len(opts)}: {[o.name for o in opts]}")
        named = {}
        for opt, v in zip(opts, bundle):
            v = float(v)
            if math.isnan(v) and (opt.optional or opt.tensor):
                named[opt.name] = None
            elif opt.type is bool:
                named[opt.name] = v != 0.0
            elif opt.type is int:
                named[opt.name] = int(v)
            else:
                named[opt.name] = v
        return SimpleNamespace(**named)

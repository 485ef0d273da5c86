"""Fused classifier heads: a linear layer and a sigmoid loss whose N×C logits never exist.

``linear_focal_bce(input, linear_weight, target, ...)`` equals
``focal_bce(input @ linear_weight.T + linear_bias, target, ...)`` and
``linear_asymmetric_loss`` equals ``asymmetric_loss`` of the same logits, for
extreme multilabel problems (10⁵–10⁶ labels, a few positives per row) where the
logits, their gradient and a dense target would not fit. The logits are taken
a chunk at a time (``fused_losses/_linear_chunks.py``: the loop and the chunk
rule); targets may be dense, a sparse CSR tensor or padded positive indices
(``fused_losses/_linear_targets.py``).

Layers: these functions check the arguments and pick a backend; the fused path
is the op ``fused_losses::linear_head`` (``fused_losses/ops/linear_head.py``),
the reference path ``fused_losses/reference/linear_head.py``.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional, Union

import torch
from torch import nn

from . import _api, _linear_chunks
from . import _validate as v
from ._backend import check_backend
from ._linear_targets import normalize
from ._strict import checks_values
from .ops import linear_head as _op
from .reference import asl as _ref_asl, focal_bce as _ref_focal  # the functions
from .reference import linear_head as _ref_head
from .spec import asl as _asl_spec, focal_bce as _focal_spec


class _Head(NamedTuple):
    spec: object
    reference: object
    params: tuple       # the loss's parameters a head takes, in signature order
    reductions: tuple


FOCAL = _Head(_focal_spec.SPEC, _ref_focal,
              ("gamma", "alpha", "pos_weight", "label_smoothing"), ("mean", "sum"))
ASL = _Head(_asl_spec.SPEC, _ref_asl,
            ("gamma_pos", "gamma_neg", "clip", "eps", "detach_focal_weight", "pos_weight",
             "label_smoothing"), ("mean", "sum", "batchmean"))


def _autocast(*tensors):
    """``tensors`` as ``F.linear`` would see them under autocast: floating
    tensors other than float64 in the autocast dtype."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) if t is not None and t.is_floating_point()
                 and t.dtype != torch.float64 else t for t in tensors)


def _check_head(input, weight, bias) -> tuple:
    v.check_logits(input)
    v.check_tensor("linear_weight", weight)
    if input.dim() != 2:
        raise ValueError(f"input must be [N, H] features, got shape {tuple(input.shape)}")
    if weight.dim() != 2 or weight.shape[1] != input.shape[1]:
        raise ValueError(f"linear_weight must be [C, H] with H = input.shape[1] = "
                         f"{input.shape[1]}, got shape {tuple(weight.shape)}")
    if bias is not None:
        v.check_tensor("linear_bias", bias)
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"linear_bias must be [C] = [{weight.shape[0]}], got shape "
                             f"{tuple(bias.shape)}")
    for name, t in (("linear_weight", weight), ("linear_bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise TypeError(f"{name} must have the input's dtype {input.dtype} (as F.linear "
                            f"needs), got {t.dtype}")
    v.check_devices(input=input, linear_weight=weight, linear_bias=bias)
    return input.shape[0], weight.shape[0]


def _check_class_vector(p, value, c: int, device):
    """A tensor option or operand of a head: floating, ``[]``, ``[1]`` or ``[C]``."""
    if not isinstance(value, torch.Tensor):
        return value
    if not value.is_floating_point():
        raise TypeError(f"{p.name} must be a floating-point tensor, got {value.dtype}")
    if value.dim() > 1 or (value.dim() == 1 and value.shape[0] not in (1, c)):
        raise ValueError(f"{p.name} must be a scalar, [1] or [C] = [{c}] tensor for a linear "
                         f"head, got shape {tuple(value.shape)}")
    if value.device != device:
        raise ValueError(f"{p.name} is on {value.device} but input is on {device}")
    if checks_values(value) and not p.is_operand:
        _api._check_tensor_option(p, value)
    return value


def _check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size must be None or an int, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (classes per chunk), got {chunk_size}")
    return int(chunk_size)


def check_options(head: _Head, given: dict) -> dict:
    """All of the loss spec's parameters for ``given`` head options: the scalars
    checked, the rest at their defaults (no per-element weight, no ignore_index)."""
    values = {p.name: (None if p.is_operand else p.default) for p in head.spec.params}
    values.update(given)
    checked = _api._checked_options(head.spec, values)
    return {p.name: values[p.name] if p.is_operand else checked[p.name]
            for p in head.spec.params}


def _call(head: _Head, input, weight, target, bias, given: dict, reduction, chunk_size,
          backend):
    input, weight, bias = _autocast(input, weight, bias)
    n, c = _check_head(input, weight, bias)
    v.check_reduction(reduction, head.reductions)
    chunk_size = _check_chunk_size(chunk_size)
    check_backend(backend)
    spec = head.spec
    values = check_options(head, given)
    for name in head.params:
        values[name] = _check_class_vector(spec.param(name), values[name], c, input.device)
    targets = normalize(target, n, c, input.device)
    needs_ref = [name for name in spec.kernel_operands
                 if isinstance(values.get(name), torch.Tensor) and values[name].requires_grad]
    fused_ok = input.dtype != torch.float64 and not needs_ref
    chosen = _api._resolve(spec, backend, input.device.type, fused_ok, needs_ref, input.dtype)
    grad = torch.is_grad_enabled()
    needs = (grad and input.requires_grad, grad and weight.requires_grad,
             grad and bias is not None and bias.requires_grad)
    chunks = _linear_chunks.plan(n, c, input.dtype, input.device.type,
                                 targets.element_bytes(), chunk_size)
    factor = _linear_chunks.reduction_factor(reduction, n, c)
    with torch.autocast(input.device.type, enabled=False):
        if chosen == "torch":
            return _ref_head.linear_head(head.reference, input, weight, bias, targets, values,
                                         spec.kernel_operands, chunks, factor, needs)
        operands = [values[name] if isinstance(values[name], torch.Tensor) else None
                    for name in spec.kernel_operands]
        loss, _, _, _ = _op.call(input, weight, bias, *targets, operands, spec.stem, chosen,
                                 spec.encode(values), chunks.by_rows, chunks.size, factor,
                                 *needs)
        return loss


_TARGET_DOC = """target: the labels of the ``[N, C]`` logits, in one of three forms:
            a dense ``[N, C]`` bool/uint8/float tensor (float: soft labels in [0, 1]);
            a sparse CSR tensor ``torch.sparse_csr_tensor(crow, col, values, (N, C))``
            whose entries hold the labels (others are 0); or padded positives, an
            int32/int64 ``[N, K]`` tensor (K ≠ C) of class indices, ``-1`` for padding.
            Sparse forms are never densified beyond one chunk."""

_SHAPES_ARGS_DOC = f"""Shapes: input ``[N, H]``, linear_weight ``[C, H]``, linear_bias ``[C]``,
    target ``[N, C]`` (dense or sparse) or ``[N, K]`` (padded); output ``[]``.

    Args:
        input: features, float16, bfloat16 or float32 (float64: reference only).
        linear_weight: ``[C, H]``, the input's dtype.
        {_TARGET_DOC}"""

_COMMON_DOC = """linear_bias: ``[C]`` or None, the input's dtype.
        reduction: over the N·C logits, as the loss's own function.
        chunk_size: None (the rule in ``fused_losses._linear_chunks``: a chunk's
            logits, gradient and labels take at most 5 % of the N×C fp32 logits, and
            at most 32 MiB on the CPU or 1 GiB on a GPU), or the number of classes
            per chunk (chunks then run over classes).
        backend: ``"auto" | "triton" | "cuda" | "cpu" | "torch"``: which kernel
            computes each chunk's loss and gradient (``"torch"``: the reference)."""


def linear_focal_bce(input: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor, *,
                     linear_bias: Optional[torch.Tensor] = None, gamma: float = 2.0,
                     alpha: Optional[Union[float, torch.Tensor]] = None,
                     pos_weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0,
                     reduction: str = "mean", chunk_size: Optional[int] = None,
                     backend: str = "auto") -> torch.Tensor:
    return _call(FOCAL, input, linear_weight, target, linear_bias,
                 dict(gamma=gamma, alpha=alpha, pos_weight=pos_weight,
                      label_smoothing=label_smoothing), reduction, chunk_size, backend)


linear_focal_bce.__doc__ = fr"""Focal BCE of a linear layer's logits, without building them.

    ``focal_bce(input @ linear_weight.T + linear_bias, target, ...)`` (see
    :func:`fused_losses.focal_bce` for the formula; ``gamma=0`` is BCE with
    ``pos_weight``), computed a chunk of logits at a time: the forward returns the
    loss and has already computed the gradients of ``input``, ``linear_weight`` and
    ``linear_bias``; the backward scales them. Names follow torch's
    ``F.linear_cross_entropy``.

    {_SHAPES_ARGS_DOC}
        gamma, alpha, label_smoothing: as :func:`fused_losses.focal_bce`.
        pos_weight: ``[C]`` (or scalar) weight of the positive term.
        {_COMMON_DOC}

    Example:
        >>> import torch, fused_losses
        >>> x = torch.randn(8, 16, requires_grad=True)
        >>> w = torch.randn(1000, 16, requires_grad=True)
        >>> positives = torch.tensor([[3, 17, -1], [999, -1, -1]]).repeat(4, 1)
        >>> loss = fused_losses.linear_focal_bce(x, w, positives, gamma=2.0, alpha=0.25)
        >>> loss.backward()
        >>> w.grad.shape
        torch.Size([1000, 16])
    """


def linear_asymmetric_loss(input: torch.Tensor, linear_weight: torch.Tensor,
                           target: torch.Tensor, *, linear_bias: Optional[torch.Tensor] = None,
                           gamma_pos: float = 1.0, gamma_neg: float = 4.0, clip: float = 0.05,
                           eps: float = 1e-8, detach_focal_weight: bool = True,
                           pos_weight: Optional[Union[float, torch.Tensor]] = None,
                           label_smoothing: float = 0.0, reduction: str = "sum",
                           chunk_size: Optional[int] = None,
                           backend: str = "auto") -> torch.Tensor:
    return _call(ASL, input, linear_weight, target, linear_bias,
                 dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, eps=eps,
                      detach_focal_weight=detach_focal_weight, pos_weight=pos_weight,
                      label_smoothing=label_smoothing), reduction, chunk_size, backend)


linear_asymmetric_loss.__doc__ = fr"""Asymmetric loss of a linear layer's logits, without building them.

    ``asymmetric_loss(input @ linear_weight.T + linear_bias, target, ...)`` (see
    :func:`fused_losses.asymmetric_loss`: the paper's defaults, ``reduction="sum"``
    included; ``"batchmean"`` divides the sum by N), computed a chunk of logits at
    a time, the gradients in the forward.

    {_SHAPES_ARGS_DOC}
        gamma_pos, gamma_neg, clip, eps, detach_focal_weight, pos_weight,
            label_smoothing: as :func:`fused_losses.asymmetric_loss`.
        {_COMMON_DOC}

    Example:
        >>> import torch, fused_losses
        >>> x = torch.randn(8, 16)
        >>> w = torch.randn(1000, 16, requires_grad=True)
        >>> y = torch.sparse_csr_tensor(torch.arange(9) * 2, torch.arange(16) * 50,
        ...                             torch.ones(16), (8, 1000))
        >>> fused_losses.linear_asymmetric_loss(x, w, y, reduction="batchmean").backward()
    """


class _LinearHead(nn.Module):
    """A linear layer ``[C, H]`` (+ bias) and its loss, fused: ``forward(input,
    target)`` returns the loss, never the logits."""

    head: _Head
    function = None

    def __init__(self, in_features: int, out_features: int, bias: bool, options: dict,
                 reduction: str, chunk_size, backend: str, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reduction = v.check_reduction(reduction, self.head.reductions)
        self.chunk_size = _check_chunk_size(chunk_size)
        self.backend = check_backend(backend)
        checked = check_options(self.head, {k: val for k, val in options.items()
                                            if not isinstance(val, torch.Tensor)})
        self._option_names = tuple(options)
        for name, value in options.items():
            p = self.head.spec.param(name)
            if isinstance(value, torch.Tensor):
                _check_class_vector(p, value, self.out_features, value.device)
                if not p.is_operand:
                    _api._check_tensor_option(p, value)
                self.register_buffer(name, value)
            elif p.is_operand:
                self.register_buffer(name, None)
            else:
                setattr(self, name, checked[name])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation: Kaiming-uniform weight, bias U(±1/√H)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.no_grad()
    def init_prior_bias(self, pos_counts: torch.Tensor,
                        num_samples: Union[int, float]) -> "_LinearHead":
        """Set the bias to ``fused_losses.prior_bias(pos_counts, num_samples)``:
        σ(bias) starts at each class's frequency (focal-loss prior initialisation)."""
        from .weights import prior_bias
        if self.bias is None:
            raise ValueError("init_prior_bias needs a head built with bias=True")
        self.bias.copy_(prior_bias(pos_counts, num_samples))
        return self

    def logits(self, input: torch.Tensor) -> torch.Tensor:
        """The ``[N, C]`` logits ``input @ weight.T + bias`` (for evaluation)."""
        return nn.functional.linear(input, self.weight, self.bias)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        options = {name: getattr(self, name) for name in self._option_names}
        return type(self).function(input, self.weight, target, linear_bias=self.bias,
                                   **options, reduction=self.reduction,
                                   chunk_size=self.chunk_size, backend=self.backend)

    def extra_repr(self) -> str:
        parts = [f"in_features={self.in_features}", f"out_features={self.out_features}",
                 f"bias={self.bias is not None}"]
        for name in self._option_names:
            value = getattr(self, name)
            parts.append(f"{name}=tensor{tuple(value.shape)}" if isinstance(value, torch.Tensor)
                         else f"{name}={value!r}")
        parts += [f"reduction={self.reduction!r}", f"chunk_size={self.chunk_size!r}",
                  f"backend={self.backend!r}"]
        return ", ".join(parts)


class LinearFocalBCE(_LinearHead):
    """``nn.Linear(in_features, out_features, bias)`` + :func:`fused_losses.focal_bce`,
    fused (:func:`fused_losses.linear_focal_bce`): ``forward(input [N, H], target)``
    returns the loss. ``pos_weight`` (``[C]``) and a tensor ``alpha`` are buffers.

    Example:
        >>> import torch
        >>> from fused_losses import LinearFocalBCE
        >>> head = LinearFocalBCE(64, 100_000, gamma=2.0)
        >>> _ = head.init_prior_bias(torch.full((100_000,), 5.0), 10_000)
        >>> features = torch.randn(32, 64, requires_grad=True)
        >>> positives = torch.randint(0, 100_000, (32, 8))
        >>> head(features, positives).backward()
    """

    head = FOCAL
    function = staticmethod(linear_focal_bce)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 gamma: float = 2.0, alpha: Optional[Union[float, torch.Tensor]] = None,
                 pos_weight: Optional[torch.Tensor] = None, label_smoothing: float = 0.0,
                 reduction: str = "mean", chunk_size: Optional[int] = None,
                 backend: str = "auto", device: Optional[Union[torch.device, str]] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__(in_features, out_features, bias,
                         dict(gamma=gamma, alpha=alpha, pos_weight=pos_weight,
                              label_smoothing=label_smoothing),
                         reduction, chunk_size, backend, device, dtype)


class LinearAsymmetricLoss(_LinearHead):
    """``nn.Linear(in_features, out_features, bias)`` + :func:`fused_losses.asymmetric_loss`,
    fused (:func:`fused_losses.linear_asymmetric_loss`); the paper's defaults.

    Example:
        >>> import torch
        >>> from fused_losses import LinearAsymmetricLoss
        >>> head = LinearAsymmetricLoss(64, 50_000, reduction="batchmean")
        >>> loss = head(torch.randn(16, 64), torch.randint(-1, 50_000, (16, 5)))
    """

    head = ASL
    function = staticmethod(linear_asymmetric_loss)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 gamma_pos: float = 1.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 eps: float = 1e-8, detach_focal_weight: bool = True,
                 pos_weight: Optional[Union[float, torch.Tensor]] = None,
                 label_smoothing: float = 0.0, reduction: str = "sum",
                 chunk_size: Optional[int] = None, backend: str = "auto",
                 device: Optional[Union[torch.device, str]] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__(in_features, out_features, bias,
                         dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, eps=eps,
                              detach_focal_weight=detach_focal_weight, pos_weight=pos_weight,
                              label_smoothing=label_smoothing),
                         reduction, chunk_size, backend, device, dtype)


__all__ = ["linear_focal_bce", "linear_asymmetric_loss", "LinearFocalBCE",
           "LinearAsymmetricLoss"]

"""Functional forms: validate arguments, pick a backend, call the op.

Each loss's function is generated from its spec (``fused_losses/spec/``) by
``_api.make_functional``: the signature, the checks and the docstring. Every
function takes ``backend="auto" | "triton" | "cuda" | "cpu" | "torch"`` (see
``fused_losses.available_backends``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.nn._reduction import legacy_get_string

from ._api import make_functional
from .spec import SPECS
from .spec.ghmc import MAX_BINS as MAX_GHMC_BINS  # noqa: F401

# focal_bce, ghmc, asymmetric_loss, dice_loss, softmax_focal_loss,
# self_adjusting_dice_loss: one per spec, named by its ``function``.
globals().update({spec.function: make_functional(spec) for spec in SPECS})


def _legacy_reduction(size_average: Optional[bool], reduce: Optional[bool],
                      reduction: str) -> str:
    """``reduction``, or torch's reading of its deprecated flags when either is set.

    Same rule and warning as torch (``legacy_get_string``). A string or a
    tensor in a flag's place is refused: it is a call in the old order
    ``(weight, reduction, pos_weight)``, which torch would read silently as
    ``size_average``/``reduce`` truthiness.
    """
    for name, flag in (("size_average", size_average), ("reduce", reduce)):
        if isinstance(flag, (str, torch.Tensor)):
            raise TypeError(
                f"{name} must be None or a bool (torch's deprecated flag), got "
                f"{type(flag).__name__}{f' {flag!r}' if isinstance(flag, str) else ''}; "
                f"torch's positional order is (weight, size_average, reduce, reduction, "
                f"pos_weight): pass reduction= and pos_weight= by keyword")
    if size_average is None and reduce is None:
        return reduction
    return legacy_get_string(size_average, reduce)


def binary_cross_entropy_with_logits(input: torch.Tensor, target: torch.Tensor,
                                     weight: Optional[torch.Tensor] = None,
                                     size_average: Optional[bool] = None,
                                     reduce: Optional[bool] = None,
                                     reduction: str = "mean",
                                     pos_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""Drop-in for ``torch.nn.functional.binary_cross_entropy_with_logits``.

    It is :func:`focal_bce` with ``gamma=0``: same signature (positional
    order included), same result to fp32 rounding, fused on GPU. Per element,
    with p = ``pos_weight`` (broadcast over the last dimension) and
    w = ``weight`` (broadcast to the input)::

        ℓ = −w · (p · y · log σ(x) + (1 − y) · log(1 − σ(x)))

    then ``reduction`` ``"none"`` | ``"mean"`` | ``"sum"``.

    ``size_average`` and ``reduce`` are torch's deprecated flags, with torch's
    meaning: when either is not None they override ``reduction`` (``reduce``
    False → ``"none"``; else ``size_average`` False → ``"sum"``; else
    ``"mean"``; None counts as True) and torch's deprecation warning is
    emitted (``torch.nn._reduction.legacy_get_string``). A string or tensor
    given for either flag (a call in the old ``weight, reduction, pos_weight``
    order) raises ``TypeError``.

    Example:
        >>> import torch, fused_losses
        >>> x, y = torch.randn(8, 5), torch.rand(8, 5)
        >>> ref = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
        >>> torch.allclose(fused_losses.binary_cross_entropy_with_logits(x, y), ref)
        True
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    # focal_bce is generated above (noqa: F821 for linters)
    return focal_bce(input, target, gamma=0.0, pos_weight=pos_weight,  # noqa: F821
                     weight=weight, reduction=reduction)


__all__ = [spec.function for spec in SPECS] + ["binary_cross_entropy_with_logits"]

"""Functional forms: validate arguments, pick a backend, call the op.

Each loss's function is generated from its spec (``fused_losses/spec/``) by
``_api.make_functional``: the signature, the checks and the docstring. Every
function takes ``backend="auto" | "triton" | "cuda" | "cpu" | "torch"`` (see
``fused_losses.available_backends``).
"""
from __future__ import annotations

import torch

from ._api import make_functional
from .spec import SPECS
from .spec.ghmc import MAX_BINS as MAX_GHMC_BINS  # noqa: F401

# focal_bce, ghmc, asymmetric_loss, dice_loss, softmax_focal_loss,
# self_adjusting_dice_loss: one per spec, named by its ``function``.
globals().update({spec.function: make_functional(spec) for spec in SPECS})


def binary_cross_entropy_with_logits(input: torch.Tensor, target: torch.Tensor,
                                     weight=None, reduction: str = "mean",
                                     pos_weight=None) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.binary_cross_entropy_with_logits``.

    It is :func:`focal_bce` with ``gamma=0``: same signature, same result to
    fp32 rounding, fused on GPU.

    Example:
        >>> import torch, fused_losses
        >>> x, y = torch.randn(8, 5), torch.rand(8, 5)
        >>> ref = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
        >>> torch.allclose(fused_losses.binary_cross_entropy_with_logits(x, y), ref)
        True
    """
    # focal_bce is generated above (noqa: F821 for linters)
    return focal_bce(input, target, gamma=0.0, pos_weight=pos_weight,  # noqa: F821
                     weight=weight, reduction=reduction)


__all__ = [spec.function for spec in SPECS] + ["binary_cross_entropy_with_logits"]

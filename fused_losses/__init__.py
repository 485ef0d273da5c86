"""fused_losses: class-imbalance losses fused into single GPU passes.

>>> import torch, fused_losses
>>> fused_losses.focal_bce(torch.zeros(2, 3), torch.ones(2, 3), gamma=0.0)
tensor(0.6931)
"""
from . import weights
from ._backend import BackendUnavailableError, available_backends, empty_cpu_cache
from ._strict import is_strict, set_strict, strict
from ._validate import check_class_target_values as check_class_targets
from .functional import *  # noqa: F401,F403 - one function per spec (functional.__all__)
from .nn import *  # noqa: F401,F403 - one module per spec (nn.__all__)
from .linear_head import (LinearAsymmetricLoss, LinearFocalBCE, linear_asymmetric_loss,
                          linear_focal_bce)
from . import functional as _functional, nn as _nn
from .weights import label_counts, multilabel_sample_weights, pos_weight_from_counts, prior_bias

__version__ = "0.1.0"
__all__ = _functional.__all__ + _nn.__all__ + [
    # fused classifier heads (linear layer + loss, no N×C logits)
    "linear_focal_bce", "linear_asymmetric_loss", "LinearFocalBCE", "LinearAsymmetricLoss",
    # backends and input checks
    "available_backends", "BackendUnavailableError", "check_class_targets", "empty_cpu_cache",
    "set_strict", "is_strict", "strict",
    # the imbalance toolkit
    "weights", "label_counts", "pos_weight_from_counts", "multilabel_sample_weights",
    "prior_bias",
]

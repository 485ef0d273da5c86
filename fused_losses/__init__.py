"""fused_losses: class-imbalance losses fused into single GPU passes.

>>> import torch, fused_losses
>>> fused_losses.focal_bce(torch.zeros(2, 3), torch.ones(2, 3), gamma=0.0)
tensor(0.6931)
"""
from ._backend import BackendUnavailableError, available_backends
from .functional import asymmetric_loss, binary_cross_entropy_with_logits, focal_bce, ghmc
from .nn import GHMC, AsymmetricLoss, BCEWithLogitsLoss, FocalBCE
from . import weights
from .weights import label_counts, multilabel_sample_weights, pos_weight_from_counts, prior_bias

__version__ = "0.1.0"
__all__ = [
    "AsymmetricLoss", "asymmetric_loss",
    "BCEWithLogitsLoss", "BackendUnavailableError", "FocalBCE", "GHMC", "available_backends",
    "binary_cross_entropy_with_logits", "focal_bce", "ghmc",
    "weights", "label_counts", "multilabel_sample_weights", "pos_weight_from_counts", "prior_bias",
]

from .functional import dice_loss  # noqa: E402
from .nn import DiceLoss  # noqa: E402

__all__ += ["DiceLoss", "dice_loss"]

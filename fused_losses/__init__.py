"""fused_losses: class-imbalance losses fused into single GPU passes.

>>> import torch, fused_losses
>>> fused_losses.focal_bce(torch.zeros(2, 3), torch.ones(2, 3), gamma=0.0)
tensor(0.6931)
"""
from . import weights
from ._backend import BackendUnavailableError, available_backends
from ._validate import check_class_target_values as check_class_targets
from .functional import (asymmetric_loss, binary_cross_entropy_with_logits, dice_loss,
                         focal_bce, ghmc, self_adjusting_dice_loss, softmax_focal_loss)
from .nn import (GHMC, AsymmetricLoss, BCEWithLogitsLoss, DiceLoss, FocalBCE,
                 SelfAdjustingDiceLoss, SoftmaxFocalLoss)
from .weights import label_counts, multilabel_sample_weights, pos_weight_from_counts, prior_bias

__version__ = "0.1.0"
__all__ = [
    # losses: functional and module forms
    "focal_bce", "FocalBCE", "binary_cross_entropy_with_logits", "BCEWithLogitsLoss",
    "ghmc", "GHMC", "asymmetric_loss", "AsymmetricLoss", "dice_loss", "DiceLoss",
    "softmax_focal_loss", "SoftmaxFocalLoss", "self_adjusting_dice_loss", "SelfAdjustingDiceLoss",
    # backends and input checks
    "available_backends", "BackendUnavailableError", "check_class_targets",
    # the imbalance toolkit
    "weights", "label_counts", "pos_weight_from_counts", "multilabel_sample_weights",
    "prior_bias",
]

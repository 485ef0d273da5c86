"""fused_losses: class-imbalance losses fused into single GPU passes.

>>> import torch, fused_losses
>>> fused_losses.focal_bce(torch.zeros(2, 3), torch.ones(2, 3), gamma=0.0)
tensor(0.6931)
"""
from ._backend import BackendUnavailableError, available_backends
from .functional import binary_cross_entropy_with_logits, focal_bce, ghmc
from .nn import GHMC, BCEWithLogitsLoss, FocalBCE
from ._validate import check_class_target_values as check_class_targets
from .functional import self_adjusting_dice_loss, softmax_focal_loss
from .nn import SelfAdjustingDiceLoss, SoftmaxFocalLoss

__version__ = "0.1.0"
__all__ = [
    "BCEWithLogitsLoss", "BackendUnavailableError", "FocalBCE", "GHMC", "available_backends",
    "binary_cross_entropy_with_logits", "focal_bce", "ghmc",
    "SelfAdjustingDiceLoss", "SoftmaxFocalLoss", "check_class_targets",
    "self_adjusting_dice_loss", "softmax_focal_loss",
]

"""dsc: per-sample self-adjusting dice over class indices (Li et al., ACL 2020)."""
from ._base import INF, LossSpec, Option

SPEC = LossSpec(
    stem="dsc", function="self_adjusting_dice_loss", module="SelfAdjustingDiceLoss",
    reference="dsc",
    summary=r"""Per-sample self-adjusting dice loss (Li et al., "Dice Loss for
    Data-imbalanced NLP Tasks", ACL 2020).

    With p = softmax(x)[y] for each row,

    .. math::
        \tilde p = (1-p)^\alpha\,p,\qquad
        \ell = 1 - \frac{2\tilde p + \text{smooth}}{\tilde p + 1 + \text{smooth}}

    An index outside [0, C) raises on CPU (and in strict mode on a GPU);
    unchecked, it gives a NaN row loss.""",
    shapes="input ``[N, C]`` logits, target ``[N]`` class indices (integer dtype); "
           "output ``[]`` or ``[N]`` (``none``).",
    targets="index", protocol="rows", input_dims="matrix",
    params=(
        Option("alpha", float, 1.0, "self-adjusting exponent α ≥ 0.", low=0.0, high=INF, high_open=True),
        Option("smooth", float, 1.0, "smoothing term ≥ 0.", low=0.0, high=INF, high_open=True),
    ),
    example="""
        >>> import torch, fused_losses
        >>> x = torch.randn(8, 5, requires_grad=True)
        >>> y = torch.randint(0, 5, (8,))
        >>> fused_losses.self_adjusting_dice_loss(x, y, alpha=1.0).backward()
        >>> x.grad.shape
        torch.Size([8, 5])""",
    module_example="""
        >>> import torch
        >>> from fused_losses import SelfAdjustingDiceLoss
        >>> criterion = SelfAdjustingDiceLoss(alpha=1.0, smooth=1.0)
        >>> logits = torch.randn(16, 10, requires_grad=True)
        >>> criterion(logits, torch.randint(0, 10, (16,))).backward()""",
)

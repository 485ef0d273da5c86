"""dice: multilabel soft dice on logits, with the self-adjusting variant."""
from ._base import INF, LossSpec, Option

SPEC = LossSpec(
    stem="dice", function="dice_loss", module="DiceLoss", reference="dice_loss",
    summary=r"""Multilabel soft dice loss on logits, with the self-adjusting variant.

    Per class c, summing over the batch and every spatial dim:

    .. math::
        \tilde p = (1-p)^\alpha\,p,\quad p = \sigma(x),\qquad
        \mathrm{dice}_c = 1 - \frac{2\sum \tilde p\,t + s}
                                   {\sum \tilde p^k + \sum t^k + s}

    with k = 2 if ``square_denominator`` else 1 and s = ``smooth``. α = 0 is
    plain soft dice; α > 0 is the self-adjusting dice of Li et al., "Dice Loss
    for Data-imbalanced NLP Tasks" (ACL 2020). ``reduction`` is over classes.""",
    shapes="input and target ``[N, C]`` or ``[N, C, d1, ...]`` (classes on dim 1); "
           "output ``[]`` (``mean``/``sum``) or ``[C]`` (``none``).",
    targets="binary", protocol="column_sums", input_dims="class_dim",
    target_grad="reference",
    params=(
        Option("smooth", float, 1.0, "s ≥ 0 added to numerator and denominator.",
               low=0.0, high=INF, high_open=True),
        Option("alpha", float, 0.0, "α ≥ 0, the self-adjusting exponent.",
               low=0.0, high=INF, high_open=True),
        Option("square_denominator", bool, False, "use Σ p̃² + Σ t² (V-Net style) in the "
               "denominator."),
    ),
    example="""
        >>> import torch, fused_losses
        >>> x = torch.randn(64, 270, requires_grad=True)
        >>> y = torch.rand(64, 270) < 0.05
        >>> loss = fused_losses.dice_loss(x, y, alpha=0.1)
        >>> loss.backward()
        >>> fused_losses.dice_loss(x, y, reduction="none").shape
        torch.Size([270])""",
    module_example="""
        >>> import torch
        >>> from fused_losses import DiceLoss
        >>> criterion = DiceLoss(alpha=0.1, square_denominator=True)
        >>> logits = torch.randn(8, 3, 16, 16, requires_grad=True)
        >>> masks = torch.rand(8, 3, 16, 16) < 0.3
        >>> criterion(logits, masks).backward()""",
)

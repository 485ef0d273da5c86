"""focal_bce: sigmoid focal binary cross-entropy (gamma=0: BCE with pos_weight)."""
from ._base import INF, LossSpec, Operand, Option


def _check(values, input, target):
    if target.requires_grad and values["gamma"] != 0.0:
        raise ValueError("target.requires_grad is only supported with gamma=0 "
                         "(the focal factor's target derivative is not implemented)")


SPEC = LossSpec(
    stem="focal_bce", function="focal_bce", module="FocalBCE", reference="focal_bce",
    summary=r"""Sigmoid focal binary cross-entropy on logits.

    .. math::
        \ell = w \cdot \alpha_t \cdot (1-p_t)^\gamma \cdot
               -\bigl(p_w\,t\log\sigma(x) + (1-t)\log\sigma(-x)\bigr),
        \quad p_t = \sigma(x)t + \sigma(-x)(1-t),\quad
        \alpha_t = \alpha t + (1-\alpha)(1-t)""",
    shapes="input and target ``[..., C]``; output ``[]`` (``mean``/``sum``) or the "
           "input's shape (``none``).",
    targets="binary", protocol="elementwise", target_grad="reference", check=_check,
    params=(
        Option("gamma", float, 2.0, "focusing exponent γ ≥ 0; 0 gives weighted BCE.",
               low=0.0, high=INF, high_open=True),
        Option("alpha", float, None, "None (α_t = 1), a float in [0, 1], or a tensor "
               "broadcasting to target.", low=0.0, high=1.0, optional=True, tensor=True),
        Operand("pos_weight", "broadcast", "weight of the positive term, broadcasting to "
                "target (e.g. ``[C]``)."),
        Operand("weight", "broadcast", "per-element rescaling, broadcasting to target."),
        Option("label_smoothing", float, 0.0, "ε in [0, 1); targets become t·(1-ε) + ε/2.",
               low=0.0, high=1.0, high_open=True),
        Option("ignore_index", int, None, "elements whose target equals it give zero loss "
               "and gradient and leave the mean's denominator (all ignored → 0).",
               optional=True),
    ),
    example="""
        >>> import torch, fused_losses
        >>> x = torch.randn(4, 270, requires_grad=True)
        >>> y = torch.rand(4, 270) < 0.02
        >>> loss = fused_losses.focal_bce(x, y, gamma=2.0, alpha=0.25)
        >>> loss.backward()
        >>> x.grad.shape
        torch.Size([4, 270])""",
    module_example="""
        >>> import torch
        >>> from fused_losses import FocalBCE
        >>> criterion = FocalBCE(gamma=2.0, alpha=0.25, pos_weight=torch.full((270,), 3.0))
        >>> logits = torch.randn(16, 270, requires_grad=True)
        >>> labels = torch.rand(16, 270) < 0.02
        >>> criterion(logits, labels).backward()""",
)

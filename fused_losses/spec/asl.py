"""asl: asymmetric loss (Ben-Baruch et al., ICCV 2021)."""
from ._base import INF, LossSpec, Operand, Option

SPEC = LossSpec(
    stem="asl", function="asymmetric_loss", module="AsymmetricLoss", reference="asl",
    summary=r"""Asymmetric loss (ASL; Ben-Baruch et al., ICCV 2021) on logits.

    .. math::
        t' = t(1-\varepsilon) + \varepsilon/2,\quad
        p = \sigma(x),\quad p_m = \min(1 - p + \mathrm{clip}, 1),\quad
        p_t = p\,t' + p_m(1-t'),\quad \gamma = \gamma_+ t' + \gamma_-(1-t')

        \ell = -w\,\bigl(p_w\,t'\log\max(p, \epsilon) + (1-t')\log\max(p_m, \epsilon)\bigr)
                (1-p_t)^{\gamma}

    The defaults are the paper's official ones, including ``reduction="sum"``
    (its code returns the negated sum). ``pos_weight`` (p_w, outside the focal
    factor), ``label_smoothing`` (ε) and ``reduction="batchmean"`` follow timm's
    ``AsymmetricLossMultiLabel``. Maths run in fp32, so fp16 logits give no NaN.""",
    shapes="input and target any equal shape; output ``[]`` (``sum``/``mean``) or the "
           "input's shape (``none``).",
    targets="binary", protocol="elementwise", default_reduction="sum",
    reductions=("none", "mean", "sum", "batchmean"),
    params=(
        Option("gamma_pos", float, 1.0, "focusing exponent γ₊ ≥ 0 of the positives.",
               low=0.0, high=INF, high_open=True),
        Option("gamma_neg", float, 4.0, "focusing exponent γ₋ ≥ 0 of the negatives.",
               low=0.0, high=INF, high_open=True),
        Option("clip", float, 0.05, "probability shift m in [0, 1] of the negatives "
               "(0: no shift).", low=0.0, high=1.0),
        Option("eps", float, 1e-8, "clamp of both probabilities before the log, in [0, 1) "
               "(0: none).", low=0.0, high=1.0, high_open=True),
        Option("detach_focal_weight", bool, True, "treat (1-p_t)^γ as a constant in the "
               "backward, as the paper does, without touching the global grad mode."),
        Operand("weight", "broadcast", "per-element rescaling, broadcasting to target."),
        Option("pos_weight", float, None, "None (p_w = 1), a finite float >= 0, or a tensor "
               "broadcasting to target (e.g. ``[C]``): weight of the positive term, "
               "applied before the focal factor.", low=0.0, high=INF, high_open=True,
               optional=True, tensor=True),
        Option("label_smoothing", float, 0.0, "ε in [0, 1); targets become t·(1-ε) + ε/2 "
               "before anything else (hard labels turn soft).",
               low=0.0, high=1.0, high_open=True),
    ),
    example="""
        >>> import torch, fused_losses
        >>> x = torch.randn(4, 270, requires_grad=True)
        >>> y = torch.rand(4, 270) < 0.02
        >>> loss = fused_losses.asymmetric_loss(x, y)
        >>> loss.backward()
        >>> x.grad.shape
        torch.Size([4, 270])""",
    module_example="""
        >>> import torch
        >>> from fused_losses import AsymmetricLoss
        >>> criterion = AsymmetricLoss()
        >>> logits = torch.randn(16, 270, requires_grad=True)
        >>> criterion(logits, torch.rand(16, 270) < 0.02).backward()""",
)

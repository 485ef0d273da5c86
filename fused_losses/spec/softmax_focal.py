"""softmax_focal: multiclass focal loss over class indices (gamma=0: cross-entropy)."""
from ._base import INF, LossSpec, Operand, Option

SPEC = LossSpec(
    stem="softmax_focal", function="softmax_focal_loss", module="SoftmaxFocalLoss",
    reference="softmax_focal",
    summary=r"""Softmax focal loss: multiclass, one class index per row.

    With p = softmax(x) over the class dim, per-class weights α (1 without
    ``alpha``), C classes and smoothing ε, each row's loss is

    .. math::
        \ell = (1-p_y)^\gamma\,\Bigl[(1-\varepsilon)\,(-\alpha_y\log p_y)
              + \tfrac{\varepsilon}{C}\textstyle\sum_c(-\alpha_c\log p_c)\Bigr]

    The bracket is exactly ``F.cross_entropy(weight=alpha, label_smoothing=ε)``'s
    row loss and the focal factor (1-p_y)^γ multiplies all of it, so γ = 0 is
    cross-entropy in every mode, and ε = 0 is −α_y(1−p_y)^γ log p_y.
    ``mean`` divides by Σ α_y over non-ignored rows (their count without
    ``alpha``), as cross_entropy does (0/0 gives NaN, as there). Spatial inputs
    are read in place, with the class stride d1·d2·…, not copied.

    A target outside [0, C) that is not ``ignore_index`` raises on CPU tensors
    and, in strict mode (``fused_losses.set_strict``), on GPU tensors. Unchecked
    (a GPU outside strict mode: the check needs a device sync), its row's loss
    and gradient are NaN, and the kernels never read outside the row.""",
    shapes="input ``[N, C]``, ``[N, C, d1, ...]`` or ``[C]`` logits; target class "
           "indices (integer dtype) ``[N]``, ``[N, d1, ...]`` or ``[]``; output ``[]`` or "
           "the target's shape (``none``).",
    targets="index", protocol="rows",
    params=(
        Option("gamma", float, 2.0, "focusing exponent γ ≥ 0.", low=0.0, high=INF, high_open=True),
        Operand("alpha", "class_weight", "None or a float ``[C]`` tensor of per-class "
                "weights."),
        Option("ignore_index", int, -100, "rows with this target give 0 loss and gradient "
               "and leave the mean's denominator (None: nothing ignored).", optional=True),
        Option("label_smoothing", float, 0.0, "ε in [0, 1].", low=0.0, high=1.0),
    ),
    example="""
        >>> import torch, fused_losses
        >>> x = torch.randn(8, 5, requires_grad=True)
        >>> y = torch.randint(0, 5, (8,))
        >>> fused_losses.softmax_focal_loss(x, y, gamma=2.0).backward()
        >>> ce = torch.nn.functional.cross_entropy(x, y)
        >>> torch.allclose(fused_losses.softmax_focal_loss(x, y, gamma=0.0), ce)
        True""",
    module_example="""
        >>> import torch
        >>> from fused_losses import SoftmaxFocalLoss
        >>> criterion = SoftmaxFocalLoss(gamma=2.0, alpha=torch.rand(10))
        >>> logits = torch.randn(16, 10, requires_grad=True)
        >>> criterion(logits, torch.randint(0, 10, (16,))).backward()""",
)

"""ghmc: GHM-C, BCE reweighted by the density of the gradient norm (mmdet's GHMC)."""
from ._base import LossSpec, Operand, Option

MAX_BINS = 64


def _check(values, input, target):
    from .._validate import check_tensor  # torch-side checks, imported when called
    acc_sum, bins, momentum = values["acc_sum"], values["bins"], values["momentum"]
    if acc_sum is None:
        if momentum > 0:
            raise ValueError(f"momentum={momentum} > 0 needs an acc_sum state tensor "
                             f"(float32 of shape ({bins},)); GHMC keeps one as a buffer")
        return
    check_tensor("acc_sum", acc_sum)
    if str(acc_sum.dtype) != "torch.float32" or tuple(acc_sum.shape) != (bins,):
        raise ValueError(f"acc_sum must be a float32 tensor of shape ({bins},), got "
                         f"{acc_sum.dtype} of shape {tuple(acc_sum.shape)}")
    if not acc_sum.is_contiguous():
        raise ValueError("acc_sum must be contiguous (it is updated in place)")


SPEC = LossSpec(
    stem="ghmc", function="ghmc", module="GHMC", reference="ghmc",
    summary=r"""GHM-C: BCE on logits reweighted by the density of the gradient norm.

    Li et al., "Gradient Harmonized Single-stage Detector" (AAAI 2019), as
    mmdet's ``GHMC`` computes it: g = |σ(x) - t| is binned into ``bins``
    equal bins over [0, 1]; each valid element's weight is tot / count of its
    bin (or tot / ``acc_sum[bin]``, an EMA of the counts, when ``momentum`` > 0),
    divided by the number of non-empty bins, with tot = max(#valid, 1).

    .. math::
        \ell = \sum_e w_{b(e)}\,\mathrm{bce}(x_e, t_e) \,/\, \mathrm{tot}\quad(\text{mean})

    The weights are constants: d loss/dx = w·(σ(x) - t) (÷ tot for mean).
    Each fused backend bins, weighs and computes the loss on the device, with
    no host sync, so the step can be captured in a CUDA graph.""",
    shapes="input and target ``[..., C]``, target in [0, 1] (float, or bool/integer "
           "0/1 labels); label_weight broadcasts to them; output ``[]`` or the input's "
           "shape (``none``, the weighted elements).",
    targets="binary", protocol="ghmc", check=_check,
    params=(
        Option("bins", int, 10, f"number of gradient-norm bins, 1 to {MAX_BINS}.",
               low=1, high=MAX_BINS),
        Option("momentum", float, 0.0, "EMA factor in [0, 1); > 0 needs ``acc_sum``.",
               low=0.0, high=1.0, high_open=True),
        Operand("acc_sum", "state", "float32 ``[bins]`` EMA state, updated in place when "
                "momentum > 0.", buffer=False, kernel=False),
        Operand("label_weight", "broadcast", "broadcasts to target; elements with "
                "label_weight <= 0 are invalid (weight 0, not counted).", buffer=False,
                floating=False),
        Option("process_group", object, None, "a ``torch.distributed`` group whose ranks "
               "sum their histograms before the weights (None: no sync).", optional=True,
               kernel=False),
    ),
    example="""
        >>> import torch, fused_losses
        >>> x = torch.randn(8, 270, requires_grad=True)
        >>> y = (torch.rand(8, 270) < 0.02).float()
        >>> fused_losses.ghmc(x, y, bins=10).backward()""",
    module_example="""
        >>> import torch
        >>> from fused_losses import GHMC
        >>> criterion = GHMC(bins=10, momentum=0.75)
        >>> logits = torch.randn(16, 270, requires_grad=True)
        >>> criterion(logits, (torch.rand(16, 270) < 0.02).float()).backward()
        >>> bool(criterion.acc_sum.sum() > 0)
        True""",
)

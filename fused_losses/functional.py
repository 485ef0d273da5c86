"""Functional forms: validate arguments, pick a backend, call the op.

Every function takes ``backend="auto" | "triton" | "cuda" | "cpu" | "torch"``
(see ``fused_losses.available_backends``).
"""
from __future__ import annotations

import numbers

import torch

from . import _validate as v
from ._backend import BackendUnavailableError, resolve_backend
from .ops import asl as _asl_ops
from .ops import focal_bce as _focal_bce_ops
from .ops import ghmc as _ghmc_ops
from .ops import dice as _dice_ops
from .ops import dsc as _dsc_ops
from .ops import softmax_focal as _softmax_focal_ops

MAX_GHMC_BINS = 64


def _check_alpha(alpha, target):
    if alpha is None or isinstance(alpha, torch.Tensor):
        return v.check_broadcast("alpha", alpha, target)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be None, a float or a tensor, got {type(alpha).__name__}")
    return v.check_real("alpha", alpha, 0.0, 1.0)


def focal_bce(input: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0,
              alpha=None, pos_weight=None, weight=None, label_smoothing: float = 0.0,
              ignore_index=None, reduction: str = "mean", backend: str = "auto"):
    r"""Sigmoid focal binary cross-entropy on logits.

    .. math::
        \ell = w \cdot \alpha_t \cdot (1-p_t)^\gamma \cdot
               -\bigl(p_w\,t\log\sigma(x) + (1-t)\log\sigma(-x)\bigr),
        \quad p_t = \sigma(x)t + \sigma(-x)(1-t),\quad
        \alpha_t = \alpha t + (1-\alpha)(1-t)

    Args:
        input: logits ``[..., C]``; float16, bfloat16, float32 (float64: reference only).
        target: same shape; soft labels in [0, 1] (any float dtype) or hard
            labels (bool, uint8, integer).
        gamma: focusing exponent γ ≥ 0; 0 gives weighted BCE.
        alpha: None (α_t = 1), a float in [0, 1], or a tensor broadcasting to target.
        pos_weight: weight of the positive term, broadcasting to target (e.g. ``[C]``).
        weight: per-element rescaling, broadcasting to target.
        label_smoothing: ε in [0, 1); targets become t·(1-ε) + ε/2.
        ignore_index: elements whose target equals it give zero loss and
            gradient and leave the mean's denominator (all ignored → 0).
        reduction: ``"none"`` (shape of input), ``"mean"`` or ``"sum"`` (scalar).
        backend: which implementation runs; ``"auto"`` picks the fastest here.

    Returns:
        The loss in ``input.dtype``.

    Example:
        >>> import torch, fused_losses
        >>> x = torch.randn(4, 270, requires_grad=True)
        >>> y = torch.rand(4, 270) < 0.02
        >>> loss = fused_losses.focal_bce(x, y, gamma=2.0, alpha=0.25)
        >>> loss.backward()
        >>> x.grad.shape
        torch.Size([4, 270])
    """
    v.check_logits(input)
    v.check_target(input, target)
    gamma = v.check_real("gamma", gamma, 0.0, float("inf"))
    alpha = _check_alpha(alpha, target)
    v.check_broadcast("pos_weight", pos_weight, target)
    v.check_broadcast("weight", weight, target)
    label_smoothing = v.check_real("label_smoothing", label_smoothing, 0.0, 1.0,
                                   high_open=True)
    ignore_index = v.check_ignore_index(ignore_index)
    v.check_reduction(reduction)
    v.check_devices(input=input, target=target, alpha=alpha, pos_weight=pos_weight,
                    weight=weight)
    with_grad = [name for name, t in (("target", target), ("alpha", alpha),
                                      ("pos_weight", pos_weight), ("weight", weight))
                 if isinstance(t, torch.Tensor) and t.requires_grad]
    if target.requires_grad and gamma != 0.0:
        raise ValueError("target.requires_grad is only supported with gamma=0 "
                         "(the focal factor's target derivative is not implemented)")
    fused_ok = input.dtype != torch.float64 and not with_grad
    chosen = resolve_backend(backend, input.device.type, fused_ok)
    if chosen != "torch" and not fused_ok:
        raise ValueError(
            f"backend={backend!r} needs float16/bfloat16/float32 input and no gradient "
            f"for target, alpha, pos_weight or weight; got input {input.dtype} and "
            f"requires_grad on {with_grad}; use backend='torch' or 'auto'")
    return _focal_bce_ops.focal_bce(
        input, target, backend=chosen, gamma=gamma, alpha=alpha, pos_weight=pos_weight,
        weight=weight, label_smoothing=label_smoothing, ignore_index=ignore_index,
        reduction=reduction)


def binary_cross_entropy_with_logits(input: torch.Tensor, target: torch.Tensor,
                                     weight=None, reduction: str = "mean",
                                     pos_weight=None) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.binary_cross_entropy_with_logits``.

    It is :func:`focal_bce` with ``gamma=0``: same signature, same result to
    fp32 rounding, fused on GPU.

    Example:
        >>> import torch, fused_losses
        >>> x, y = torch.randn(8, 5), torch.rand(8, 5)
        >>> ref = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
        >>> torch.allclose(fused_losses.binary_cross_entropy_with_logits(x, y), ref)
        True
    """
    return focal_bce(input, target, gamma=0.0, pos_weight=pos_weight, weight=weight,
                     reduction=reduction)


def _check_acc_sum(acc_sum, bins: int, momentum: float):
    if acc_sum is None:
        if momentum > 0:
            raise ValueError(f"momentum={momentum} > 0 needs an acc_sum state tensor "
                             f"(float32 of shape ({bins},)); GHMC keeps one as a buffer")
        return None
    v.check_tensor("acc_sum", acc_sum)
    if acc_sum.dtype != torch.float32 or acc_sum.shape != (bins,):
        raise ValueError(f"acc_sum must be a float32 tensor of shape ({bins},), got "
                         f"{acc_sum.dtype} of shape {tuple(acc_sum.shape)}")
    if not acc_sum.is_contiguous():
        raise ValueError("acc_sum must be contiguous (it is updated in place)")
    return acc_sum


def ghmc(input: torch.Tensor, target: torch.Tensor, *, bins: int = 10, momentum: float = 0.0,
         acc_sum=None, label_weight=None, reduction: str = "mean", backend: str = "auto",
         process_group=None):
    r"""GHM-C: BCE on logits reweighted by the density of the gradient norm.

    Li et al., "Gradient Harmonized Single-stage Detector" (AAAI 2019), as
    mmdet's ``GHMC`` computes it: g = |σ(x) - t| is binned into ``bins``
    equal bins over [0, 1]; each valid element's weight is tot / count of its
    bin (or tot / ``acc_sum[bin]``, an EMA of the counts, when ``momentum`` > 0),
    divided by the number of non-empty bins, with tot = max(#valid, 1).

    .. math::
        \ell = \sum_e w_{b(e)}\,\mathrm{bce}(x_e, t_e) \,/\, \mathrm{tot}\quad(\text{mean})

    Args:
        input: logits ``[..., C]`` (float16, bfloat16, float32; float64: reference only).
        target: same shape, in [0, 1] (float, or bool/integer 0/1 labels).
        bins: number of gradient-norm bins, 1 to 64.
        momentum: EMA factor in [0, 1); > 0 needs ``acc_sum``.
        acc_sum: float32 ``[bins]`` EMA state, updated in place when momentum > 0.
        label_weight: broadcasts to target; elements with label_weight <= 0 are
            invalid (weight 0, not counted).
        reduction: ``"mean"`` (÷ tot), ``"sum"`` or ``"none"`` (weighted elements).
        backend: ``"auto" | "triton" | "cuda" | "cpu" | "torch"``.
        process_group: a ``torch.distributed`` group whose ranks sum their
            histograms before the weights (None: no sync).

    The weights are constants: d loss/dx = w·(σ(x) - t) (÷ tot for mean).
    Each fused backend bins, weighs and computes the loss on the device, with
    no host sync, so the step can be captured in a CUDA graph.

    Example:
        >>> import torch, fused_losses
        >>> x = torch.randn(8, 270, requires_grad=True)
        >>> y = (torch.rand(8, 270) < 0.02).float()
        >>> fused_losses.ghmc(x, y, bins=10).backward()
    """
    v.check_logits(input)
    v.check_target(input, target)
    bins = v.check_int("bins", bins, 1, MAX_GHMC_BINS)
    momentum = v.check_real("momentum", momentum, 0.0, 1.0, high_open=True)
    acc_sum = _check_acc_sum(acc_sum, bins, momentum)
    v.check_broadcast("label_weight", label_weight, target, floating=False)
    v.check_reduction(reduction)
    v.check_devices(input=input, target=target, acc_sum=acc_sum, label_weight=label_weight)
    if target.requires_grad:
        raise ValueError("ghmc does not support target.requires_grad")
    fused_ok = input.dtype != torch.float64
    chosen = resolve_backend(backend, input.device.type, fused_ok)
    if chosen != "torch" and not _ghmc_ops.has_backend(chosen):
        if backend != "auto":
            raise BackendUnavailableError(f"backend={backend!r} has no GHM-C kernels in this build")
        chosen = "torch"
    if chosen != "torch" and not fused_ok:
        raise ValueError(f"backend={backend!r} needs float16/bfloat16/float32 input, got "
                         f"{input.dtype}; use backend='torch' or 'auto'")
    return _ghmc_ops.ghmc(input, target, backend=chosen, bins=bins, momentum=momentum,
                          acc_sum=acc_sum, label_weight=label_weight, reduction=reduction,
                          process_group=process_group)


def dice_loss(input: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0,
              alpha: float = 0.0, square_denominator: bool = False, reduction: str = "mean",
              backend: str = "auto"):
    r"""Multilabel soft dice loss on logits, with the self-adjusting variant.

    Per class c, summing over the batch and every spatial dim:

    .. math::
        \tilde p = (1-p)^\alpha\,p,\quad p = \sigma(x),\qquad
        \mathrm{dice}_c = 1 - \frac{2\sum \tilde p\,t + s}
                                   {\sum \tilde p^k + \sum t^k + s}

    with k = 2 if ``square_denominator`` else 1 and s = ``smooth``. α = 0 is
    plain soft dice; α > 0 is the self-adjusting dice of Li et al., "Dice Loss
    for Data-imbalanced NLP Tasks" (ACL 2020).

    Args:
        input: logits ``[N, C]`` or ``[N, C, d1, ...]`` (classes on dim 1);
            float16, bfloat16, float32 (float64: reference only).
        target: same shape; soft labels in [0, 1] (float) or hard labels (bool).
        smooth: s ≥ 0 added to numerator and denominator.
        alpha: α ≥ 0, the self-adjusting exponent.
        square_denominator: use Σ p̃² + Σ t² (V-Net style) in the denominator.
        reduction: ``"mean"`` or ``"sum"`` over classes (scalar), or ``"none"`` (``[C]``).
        backend: ``"auto" | "triton" | "cuda" | "cpu" | "torch"``.

    Returns:
        The loss in ``input.dtype``.

    Example:
        >>> import torch, fused_losses
        >>> x = torch.randn(64, 270, requires_grad=True)
        >>> y = torch.rand(64, 270) < 0.05
        >>> loss = fused_losses.dice_loss(x, y, alpha=0.1)
        >>> loss.backward()
        >>> fused_losses.dice_loss(x, y, reduction="none").shape
        torch.Size([270])
    """
    v.check_logits(input)
    v.check_target(input, target)
    if input.dim() < 2:
        raise ValueError(f"input must be [N, C] or [N, C, d1, ...] (classes on dim 1), "
                         f"got shape {tuple(input.shape)}")
    smooth = v.check_real("smooth", smooth, 0.0, float("inf"), high_open=True)
    alpha = v.check_real("alpha", alpha, 0.0, float("inf"), high_open=True)
    if not isinstance(square_denominator, bool):
        raise TypeError(f"square_denominator must be a bool, got "
                        f"{type(square_denominator).__name__}")
    v.check_reduction(reduction)
    v.check_devices(input=input, target=target)
    fused_ok = input.dtype != torch.float64 and not target.requires_grad
    chosen = resolve_backend(backend, input.device.type, fused_ok)
    if chosen != "torch" and not _dice_ops.has_backend(chosen):
        if backend != "auto":
            raise BackendUnavailableError(f"backend={backend!r} has no dice kernels in this build")
        chosen = "torch"
    if chosen != "torch" and not fused_ok:
        raise ValueError(
            f"backend={backend!r} needs float16/bfloat16/float32 input and a target without "
            f"requires_grad; got input {input.dtype}, target.requires_grad="
            f"{target.requires_grad}; use backend='torch' or 'auto'")
    return _dice_ops.dice_loss(input, target, backend=chosen, smooth=smooth, alpha=alpha,
                               square_denominator=square_denominator, reduction=reduction)


def asymmetric_loss(input: torch.Tensor, target: torch.Tensor, *, gamma_pos: float = 1.0,
                    gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8,
                    detach_focal_weight: bool = True, weight=None, reduction: str = "sum",
                    backend: str = "auto"):
    r"""Asymmetric loss (ASL; Ben-Baruch et al., ICCV 2021) on logits.

    .. math::
        p = \sigma(x),\quad p_m = \min(1 - p + \mathrm{clip}, 1),\quad
        p_t = p\,t + p_m(1-t),\quad \gamma = \gamma_+ t + \gamma_-(1-t)

        \ell = -w\,\bigl(t\log\max(p, \epsilon) + (1-t)\log\max(p_m, \epsilon)\bigr)
                (1-p_t)^{\gamma}

    The defaults are the paper's official ones, including ``reduction="sum"``
    (its code returns the negated sum).

    Args:
        input: logits of any shape; float16, bfloat16, float32 (float64: reference only).
        target: same shape; bool/integer 0/1 labels or soft float labels in [0, 1].
        gamma_pos, gamma_neg: focusing exponents γ₊, γ₋ ≥ 0 of positives and negatives.
        clip: probability shift m in [0, 1] of the negatives (0: no shift).
        eps: clamp of both probabilities before the log, in [0, 1) (0: none).
        detach_focal_weight: treat (1-p_t)^γ as a constant in the backward, as the
            paper does, without touching the global grad mode.
        weight: per-element rescaling, broadcasting to target.
        reduction: ``"sum"`` (default), ``"mean"`` (over all elements) or ``"none"``.
        backend: ``"auto" | "triton" | "cuda" | "cpu" | "torch"``.

    Returns:
        The loss in ``input.dtype``. Maths run in fp32, so fp16 logits give no NaN.

    Example:
        >>> import torch, fused_losses
        >>> x = torch.randn(4, 270, requires_grad=True)
        >>> y = torch.rand(4, 270) < 0.02
        >>> loss = fused_losses.asymmetric_loss(x, y)
        >>> loss.backward()
        >>> x.grad.shape
        torch.Size([4, 270])
    """
    v.check_logits(input)
    v.check_target(input, target)
    gamma_pos = v.check_real("gamma_pos", gamma_pos, 0.0, float("inf"))
    gamma_neg = v.check_real("gamma_neg", gamma_neg, 0.0, float("inf"))
    clip = v.check_real("clip", clip, 0.0, 1.0)
    eps = v.check_real("eps", eps, 0.0, 1.0, high_open=True)
    if not isinstance(detach_focal_weight, bool):
        raise TypeError(f"detach_focal_weight must be a bool, got "
                        f"{type(detach_focal_weight).__name__}")
    v.check_broadcast("weight", weight, target)
    v.check_reduction(reduction)
    v.check_devices(input=input, target=target, weight=weight)
    if target.requires_grad:
        raise ValueError("asymmetric_loss does not support target.requires_grad")
    weight_grad = isinstance(weight, torch.Tensor) and weight.requires_grad
    fused_ok = input.dtype != torch.float64 and not weight_grad
    chosen = resolve_backend(backend, input.device.type, fused_ok)
    if chosen != "torch" and not _asl_ops.has_backend(chosen):
        if backend != "auto":
            raise BackendUnavailableError(
                f"backend={backend!r} has no ASL kernels in this build (rebuild fused_losses._C)")
        chosen = "torch"
    if chosen != "torch" and not fused_ok:
        raise ValueError(
            f"backend={backend!r} needs float16/bfloat16/float32 input and no gradient for "
            f"weight; got input {input.dtype}, weight.requires_grad={weight_grad}; use "
            f"backend='torch' or 'auto'")
    return _asl_ops.asl(input, target, backend=chosen, gamma_pos=gamma_pos,
                        gamma_neg=gamma_neg, clip=clip, eps=eps,
                        detach_focal_weight=detach_focal_weight, weight=weight,
                        reduction=reduction)


def _pick_row_backend(backend, input, has_backend, what):
    """Resolve ``backend`` for a class-index loss; fused kernels take fp16/bf16/fp32."""
    fused_ok = input.dtype != torch.float64
    chosen = resolve_backend(backend, input.device.type, fused_ok)
    if chosen != "torch" and not has_backend(chosen):
        if backend != "auto":
            raise BackendUnavailableError(f"backend={backend!r} has no {what} kernels in this build")
        chosen = "torch"
    if chosen != "torch" and not fused_ok:
        raise ValueError(f"backend={backend!r} needs float16/bfloat16/float32 input, got "
                         f"{input.dtype}; use backend='torch' or 'auto'")
    return chosen


def softmax_focal_loss(input: torch.Tensor, target: torch.Tensor, *, gamma: float = 2.0,
                       alpha=None, ignore_index: int = -100, label_smoothing: float = 0.0,
                       reduction: str = "mean", backend: str = "auto"):
    r"""Softmax focal loss: multiclass, one class index per row.

    With p = softmax(x) over the class dim, per-class weights α (1 without
    ``alpha``), C classes and smoothing ε, each row's loss is

    .. math::
        \ell = (1-p_y)^\gamma\,\Bigl[(1-\varepsilon)\,(-\alpha_y\log p_y)
              + \tfrac{\varepsilon}{C}\textstyle\sum_c(-\alpha_c\log p_c)\Bigr]

    The bracket is exactly ``F.cross_entropy(weight=alpha, label_smoothing=ε)``'s
    row loss and the focal factor (1-p_y)^γ multiplies all of it, so γ = 0 is
    cross-entropy in every mode, and ε = 0 is −α_y(1−p_y)^γ log p_y.
    ``mean`` divides by Σ α_y over non-ignored rows (their count without
    ``alpha``), as cross_entropy does (0/0 gives NaN, as there).

    Args:
        input: logits ``[N, C]``, ``[N, C, d1, ...]`` or ``[C]``; float16,
            bfloat16, float32 (float64: reference only). Spatial inputs are
            read in place, with the class stride d1·d2·…, not copied.
        target: class indices (integer dtype) ``[N]``, ``[N, d1, ...]`` or ``[]``.
        gamma: focusing exponent γ ≥ 0.
        alpha: None or a float ``[C]`` tensor of per-class weights.
        ignore_index: rows with this target give 0 loss and gradient and leave
            the mean's denominator (None: nothing ignored).
        label_smoothing: ε in [0, 1].
        reduction: ``"none"`` (target's shape), ``"mean"`` or ``"sum"``.
        backend: ``"auto" | "triton" | "cuda" | "cpu" | "torch"``.

    A target outside [0, C) that is not ``ignore_index`` is not checked (that
    needs a device sync): its row's loss and gradient are NaN, and the kernels
    never read outside the row. Call ``fused_losses.check_class_targets`` to
    check values explicitly.

    Example:
        >>> import torch, fused_losses
        >>> x = torch.randn(8, 5, requires_grad=True)
        >>> y = torch.randint(0, 5, (8,))
        >>> fused_losses.softmax_focal_loss(x, y, gamma=2.0).backward()
        >>> ce = torch.nn.functional.cross_entropy(x, y)
        >>> torch.allclose(fused_losses.softmax_focal_loss(x, y, gamma=0.0), ce)
        True
    """
    v.check_logits(input)
    v.check_class_target(input, target)
    gamma = v.check_real("gamma", gamma, 0.0, float("inf"))
    n_classes = input.shape[1] if input.dim() > 1 else input.shape[0]
    alpha = v.check_class_weight("alpha", alpha, n_classes)
    ignore_index = v.check_ignore_index(ignore_index)
    label_smoothing = v.check_real("label_smoothing", label_smoothing, 0.0, 1.0)
    v.check_reduction(reduction)
    v.check_devices(input=input, target=target, alpha=alpha)
    if alpha is not None and alpha.requires_grad:
        backend_ok = backend in ("auto", "torch")
        if not backend_ok:
            raise ValueError(f"backend={backend!r} has no gradient for alpha; use 'torch' or 'auto'")
        chosen = "torch"
    else:
        chosen = _pick_row_backend(backend, input, _softmax_focal_ops.has_backend,
                                   "softmax focal")
    return _softmax_focal_ops.softmax_focal(
        input, target, backend=chosen, gamma=gamma, alpha=alpha, ignore_index=ignore_index,
        label_smoothing=label_smoothing, reduction=reduction)


def self_adjusting_dice_loss(input: torch.Tensor, target: torch.Tensor, *, alpha: float = 1.0,
                             smooth: float = 1.0, reduction: str = "mean",
                             backend: str = "auto"):
    r"""Per-sample self-adjusting dice loss (Li et al., "Dice Loss for
    Data-imbalanced NLP Tasks", ACL 2020).

    With p = softmax(x)[y] for each row,

    .. math::
        \tilde p = (1-p)^\alpha\,p,\qquad
        \ell = 1 - \frac{2\tilde p + \text{smooth}}{\tilde p + 1 + \text{smooth}}

    Args:
        input: logits ``[N, C]`` (float16, bfloat16, float32; float64: reference only).
        target: class indices ``[N]`` (integer dtype). An index outside [0, C)
            gives a NaN row loss (not checked: that needs a sync).
        alpha: self-adjusting exponent α ≥ 0.
        smooth: smoothing term ≥ 0.
        reduction: ``"none"`` (``[N]``), ``"mean"`` or ``"sum"`` over rows.
        backend: ``"auto" | "triton" | "cuda" | "cpu" | "torch"``.

    Example:
        >>> import torch, fused_losses
        >>> x = torch.randn(8, 5, requires_grad=True)
        >>> y = torch.randint(0, 5, (8,))
        >>> fused_losses.self_adjusting_dice_loss(x, y, alpha=1.0).backward()
        >>> x.grad.shape
        torch.Size([8, 5])
    """
    v.check_logits(input)
    if input.dim() != 2:
        raise ValueError(f"input must be [N, C] logits, got shape {tuple(input.shape)}")
    v.check_class_target(input, target)
    alpha = v.check_real("alpha", alpha, 0.0, float("inf"))
    smooth = v.check_real("smooth", smooth, 0.0, float("inf"))
    v.check_reduction(reduction)
    v.check_devices(input=input, target=target)
    chosen = _pick_row_backend(backend, input, _dsc_ops.has_backend, "self-adjusting DSC")
    return _dsc_ops.dsc(input, target, backend=chosen, alpha=alpha, smooth=smooth,
                        reduction=reduction)

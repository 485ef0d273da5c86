r"""What to feed the losses: class weights, sampler weights and bias priors.

Four functions, pure PyTorch, no kernels. They take label counts (or labels),
return float32 tensors and validate their input (reading tensor data, so they
may sync: call them once, before training, not per step).

- :func:`label_counts`: positives per class and the number of samples, streamed
  over a ``[N, C]`` multi-hot tensor, a list of batches or a ``DataLoader``.
- :func:`pos_weight_from_counts`: ``pos_weight`` for BCE / focal BCE
  (``neg_pos``, ``inverse_frequency`` or Cui et al.'s ``effective_number``),
  optionally smoothed and clipped; always finite.
- :func:`multilabel_sample_weights`: per-sample weights for
  ``torch.utils.data.WeightedRandomSampler`` when a sample has several labels.
- :func:`prior_bias`: log(π/(1−π)) to initialise the final layer's bias.

Labels are multi-hot: 0/1 values in a bool, integer or floating tensor.

Example:
    >>> import torch
    >>> from fused_losses import weights
    >>> y = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]])
    >>> counts, n = weights.label_counts(y)
    >>> counts, n
    (tensor([3., 1., 1.]), 4)
    >>> weights.pos_weight_from_counts(counts, n)
    tensor([0.3333, 3.0000, 3.0000])
    >>> weights.prior_bias(counts, n)
    tensor([ 1.0986, -1.0986, -1.0986])
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Optional, Sequence, Union

import torch

from ._counts import _check_multi_hot, label_counts
from ._validate import check_real, check_tensor

__all__ = ["label_counts", "pos_weight_from_counts", "multilabel_sample_weights",
           "prior_bias"]

METHODS = ("neg_pos", "inverse_frequency", "effective_number")
SMOOTHINGS = (None, "sqrt", "log")
MODES = ("max", "mean", "sum")
_ROWS_PER_CHUNK = 1 << 16  # bounds the N×C temporaries of the sampler weights

#: N: a Python number or a one-element tensor.
Number = Union[int, float, torch.Tensor]
#: ``(lo, hi)`` bounds of the weights, either may be None; or None for no clip.
Clip = Optional[Sequence[Optional[float]]]


def _class_list(mask: torch.Tensor) -> str:
    """'[3, 17]' for the True entries, shortened past ten."""
    idx = mask.nonzero().flatten().tolist()
    shown = ", ".join(map(str, idx[:10]))
    return f"[{shown}{', ...' if len(idx) > 10 else ''}] ({len(idx)} of {mask.numel()})"


def _check_counts(pos_counts: torch.Tensor, num_samples: Number) -> tuple[torch.Tensor, float]:
    """pos_counts as float64 [C] and N as a float; both checked."""
    check_tensor("pos_counts", pos_counts)
    if pos_counts.dtype == torch.bool or pos_counts.is_complex():
        raise TypeError(f"pos_counts must be a real (integer or floating) tensor, got "
                        f"{pos_counts.dtype}")
    if pos_counts.dim() != 1 or pos_counts.numel() == 0:
        raise ValueError(f"pos_counts must be a non-empty 1-D [C] tensor, got shape "
                         f"{tuple(pos_counts.shape)}")
    n = pos_counts.detach().to(torch.float64)
    if not bool(torch.isfinite(n).all()):
        raise ValueError(f"pos_counts must be finite, got non-finite values at classes "
                         f"{_class_list(~torch.isfinite(n))}")
    if bool((n < 0).any()):
        raise ValueError(f"pos_counts must be >= 0, got negative counts at classes "
                         f"{_class_list(n < 0)}, e.g. {n[n < 0][0].item()}")
    if isinstance(num_samples, torch.Tensor):
        if num_samples.numel() != 1 or num_samples.dtype == torch.bool:
            raise TypeError(f"num_samples must be a number or a one-element tensor, got "
                            f"{num_samples.dtype} of shape {tuple(num_samples.shape)}")
        num_samples = num_samples.item()
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Real):
        raise TypeError(f"num_samples must be a number, got {type(num_samples).__name__}")
    total = float(num_samples)
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"num_samples must be finite and > 0, got {num_samples}")
    largest = n.max().item()
    if largest > total:
        raise ValueError(f"num_samples ({num_samples}) is smaller than a class count "
                         f"(pos_counts max {largest:g}, class {int(n.argmax())})")
    return n, total


def _check_clip(clip: Clip) -> tuple[float | None, float | None]:
    if clip is None:
        return None, None
    if not isinstance(clip, (tuple, list)) or len(clip) != 2:
        raise TypeError(f"clip must be None or a (lo, hi) pair, got {clip!r}")
    lo, hi = (None if c is None else check_real(f"clip[{i}]", c, 0.0, float("inf"))
              for i, c in enumerate(clip))
    if hi is not None and (math.isinf(hi) or hi == 0):
        raise ValueError(f"clip[1] (hi) must be finite and > 0, got {hi}")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"clip must have lo <= hi, got {tuple(clip)}")
    return lo, hi


def _effective_number_raw(n: torch.Tensor, safe: torch.Tensor, total: float,
                          beta: float | None) -> torch.Tensor:
    """(1 − β) / (1 − β^n) in float64, with β = max(0, (N − 1)/N) when None.

    1 − β^n is −expm1(n · log1p(−(1 − β))), and 1 − β is kept as such (1/N for
    the default), so β within a few ulps of 1 loses nothing. Warns when an
    explicit β > 0 saturates every present class.
    """
    one_minus_beta = min(1.0, 1.0 / total) if beta is None else 1.0 - beta
    if one_minus_beta == 1.0:  # β = 0: E_n = 1 for every n ≥ 1, equal weights
        return torch.ones_like(n)
    reach = -torch.expm1(safe * math.log1p(-one_minus_beta))  # 1 − β^n = (1 − β) E_n
    present = n > 0
    if beta is not None and bool(present.any()) and bool((reach[present] >= 0.99).all()):
        warnings.warn(
            f"pos_weight_from_counts: beta={beta!r} saturates: every class has "
            f"n_c >= {n[present].min().item():g}, so β^n_c <= 1% and every effective "
            f"number (1 − β^n_c)/(1 − β) is within 1% of 1/(1 − β) = {1 / one_minus_beta:.6g}; "
            f"the weights come out (nearly) equal. Pass beta=None to use "
            f"β = (N − 1)/N = {max(0.0, (total - 1) / total):.8g} from the data, or a β "
            f"closer to 1", RuntimeWarning, stacklevel=3)
    return one_minus_beta / reach


def pos_weight_from_counts(pos_counts: torch.Tensor, num_samples: Number, *,
                           method: str = "neg_pos", beta: float | None = None,
                           smoothing: str | None = None,
                           clip: Clip = None) -> torch.Tensor:
    r"""Per-class ``pos_weight`` from positive counts n_c out of N samples.

    Raw weight r_c by ``method``:

    - ``"neg_pos"``: r_c = (N − n_c) / n_c, the negatives-to-positives ratio;
      not normalised (it makes each class's positives weigh as much as its
      negatives in BCE).
    - ``"inverse_frequency"``: r_c = N / n_c, then normalised to mean 1.
    - ``"effective_number"`` (Cui et al., "Class-Balanced Loss Based on
      Effective Number of Samples", CVPR 2019): r_c = 1 / E_{n_c}, one over the
      effective number of samples E_n = (1 − β^n) / (1 − β), i.e.
      r_c = (1 − β) / (1 − β^{n_c}); then normalised to sum to C (mean 1):
      w_c = C · r_c / Σ_k r_k. Computed in float64 as
      1 − β^n = −expm1(n · log1p(−(1 − β))), exact enough for β next to 1.

      ``beta=None`` (the default) takes β = (N − 1)/N with N = ``num_samples``
      (β = 0 when N ≤ 1). Cui et al. set β = (N − 1)/N where N is the number of
      distinct "prototypes" a class can hold; not knowing that, we use the
      dataset's size, the largest N a class can have. Then E_n ≈
      N · (1 − e^{−n/N}): about n for rare classes, so weights near inverse
      frequency there, tempered for classes with a large share of N.
      A fixed β saturates: once β^n ≈ 0 (e.g. β = 0.999 and n of a few
      thousand) E_n ≈ 1/(1 − β) for every class and all weights come out 1.
      If an explicit β > 0 puts every class with n_c > 0 within 1% of that
      limit (β^{n_c} ≤ 0.01), a ``RuntimeWarning`` says so and suggests
      ``beta=None``. β = 0 gives equal weights; β → 1 tends to inverse
      frequency.

    Then, in this order: ``smoothing`` is applied to r_c (``"sqrt"``: √r_c;
    ``"log"``: log1p(r_c)), then the method's normalisation, then ``clip``.
    Both tame weights that are too large (the usual cause of "far too many
    positive predictions"); so does tuning per-class thresholds.

    Degenerate classes, never inf or NaN:

    - n_c = 0 (no positives; r_c would be inf): the weight is ``clip[1]`` when
      given, else the largest weight of the other classes (with the same rank
      in the normalisation); a warning names them. If no class has a positive,
      every weight is 1 (or ``clip[1]``).
    - n_c = N with ``neg_pos``: r_c = 0, so positives of that class give no
      loss (and there are no negatives); a warning names them. Raise the floor
      with ``clip=(lo, hi)`` if that matters.

    Args:
        pos_counts: ``[C]`` counts n_c ≥ 0 (integer or floating), e.g. from
            :func:`label_counts`.
        num_samples: N ≥ max n_c, > 0 (number or one-element tensor).
        method: ``"neg_pos"``, ``"inverse_frequency"`` or ``"effective_number"``.
        beta: β in [0, 1) for ``effective_number``, or None (default) for
            β = (N − 1)/N. Ignored by the other methods.
        smoothing: None, ``"sqrt"`` or ``"log"``.
        clip: None or ``(lo, hi)`` with 0 ≤ lo ≤ hi; either may be None.

    Returns:
        float32 ``[C]`` on ``pos_counts``' device, finite and ≥ 0.

    Example:
        >>> import torch
        >>> from fused_losses import pos_weight_from_counts
        >>> counts = torch.tensor([500., 50., 5.])
        >>> pos_weight_from_counts(counts, 1000)
        tensor([  1.,  19., 199.])
        >>> pos_weight_from_counts(counts, 1000, method="inverse_frequency")
        tensor([0.0270, 0.2703, 2.7027])
        >>> pos_weight_from_counts(counts, 1000, smoothing="sqrt", clip=(1.0, 10.0))
        tensor([ 1.0000,  4.3589, 10.0000])
        >>> pos_weight_from_counts(counts, 1000, method="effective_number")
        tensor([0.0341, 0.2752, 2.6907])
    """
    n, total = _check_counts(pos_counts, num_samples)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if beta is not None:
        beta = check_real("beta", beta, 0.0, 1.0, high_open=True)
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
    lo, hi = _check_clip(clip)

    empty = n == 0
    safe = torch.where(empty, torch.ones_like(n), n)
    if method == "neg_pos":
        raw = (total - n) / safe
    elif method == "inverse_frequency":
        raw = total / safe
    else:
        raw = _effective_number_raw(n, safe, total, beta)
    if smoothing == "sqrt":
        raw = raw.sqrt()
    elif smoothing == "log":
        raw = raw.log1p()

    if bool(empty.all()):
        w = torch.ones_like(n)
    else:
        w = torch.where(empty, raw[~empty].max(), raw)
    if method == "inverse_frequency":
        w = w / w.mean()
    elif method == "effective_number":
        w = w * (n.numel() / w.sum())
    if lo is not None or hi is not None:
        w = w.clamp(min=lo, max=hi)
        if hi is not None:
            w = torch.where(empty, torch.full_like(w, hi), w)

    if bool(empty.any()):
        source = "clip[1]" if hi is not None else "the largest finite weight"
        warnings.warn(f"pos_weight_from_counts: classes {_class_list(empty)} have no "
                      f"positive samples; they get weight {w[empty][0].item():.4g} ({source})",
                      RuntimeWarning, stacklevel=2)
    if method == "neg_pos" and bool((n == total).any()):
        warnings.warn(f"pos_weight_from_counts: classes {_class_list(n == total)} are "
                      f"positive in every sample; neg_pos gives them weight "
                      f"{w[n == total][0].item():.4g}", RuntimeWarning, stacklevel=2)
    return w.to(torch.float32)


def multilabel_sample_weights(labels: torch.Tensor, *,
                              pos_weight: torch.Tensor | None = None,
                              mode: str = "max") -> torch.Tensor:
    r"""Per-sample weights for ``torch.utils.data.WeightedRandomSampler``.

    A sample's weight combines the class weights w_c of its positive labels:
    ``"max"`` takes max_c w_c (a sample is drawn as often as its rarest label
    needs), ``"mean"`` their mean, ``"sum"`` their sum. A sample with no
    positive label gets the smallest weight among the classes that occur in
    ``labels`` (1 if none occurs). The sampler normalises, so the scale of
    w is irrelevant.

    Args:
        labels: ``[N, C]`` multi-hot (0/1) tensor.
        pos_weight: class weights w ``[C]``, finite and ≥ 0. Default: inverse
            frequency N / n_c (classes that never occur play no part).
        mode: ``"max"``, ``"mean"`` or ``"sum"``.

    Returns:
        float32 ``[N]`` on the labels' device.

    Example:
        >>> import torch
        >>> from torch.utils.data import WeightedRandomSampler
        >>> from fused_losses import multilabel_sample_weights
        >>> y = torch.tensor([[1, 0], [1, 0], [1, 0], [1, 1], [0, 0]])
        >>> w = multilabel_sample_weights(y)
        >>> w
        tensor([1.2500, 1.2500, 1.2500, 5.0000, 1.2500])
        >>> sampler = WeightedRandomSampler(w, num_samples=len(w), replacement=True)
    """
    y = _check_multi_hot("labels", labels)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    num_samples, num_classes = y.shape
    counts = y.sum(dim=0, dtype=torch.int64)
    present = counts > 0
    if pos_weight is None:
        w = num_samples / counts.clamp(min=1).to(torch.float64)
    else:
        check_tensor("pos_weight", pos_weight)
        if pos_weight.dtype == torch.bool or pos_weight.is_complex():
            raise TypeError(f"pos_weight must be a real tensor, got {pos_weight.dtype}")
        if pos_weight.shape != (num_classes,):
            raise ValueError(f"pos_weight must have shape ({num_classes},) to match labels "
                             f"{tuple(y.shape)}, got {tuple(pos_weight.shape)}")
        w = pos_weight.detach().to(device=y.device, dtype=torch.float64)
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("pos_weight must be finite and >= 0, got "
                             f"{w[~torch.isfinite(w) | (w < 0)][0].item()}")
    floor = w[present].min() if bool(present.any()) else w.new_ones(())
    out = torch.empty(num_samples, dtype=torch.float64, device=y.device)
    for start in range(0, num_samples, _ROWS_PER_CHUNK):
        rows = y[start:start + _ROWS_PER_CHUNK]
        if mode == "max":
            picked = torch.where(rows, w, torch.full_like(w, -math.inf)).amax(dim=1)
        else:
            picked = (rows * w).sum(dim=1)
            if mode == "mean":
                picked = picked / rows.sum(dim=1).clamp(min=1)
        out[start:start + rows.shape[0]] = torch.where(rows.any(dim=1), picked, floor)
    return out.to(torch.float32)


def prior_bias(pos_counts: torch.Tensor, num_samples: Number) -> torch.Tensor:
    r"""Logit bias log(π_c / (1 − π_c)) with the prior π_c = n_c / N.

    Initialise the final layer's bias with it so that, at the start of
    training, σ(bias) equals each class's frequency instead of 0.5. This is
    the prior initialisation of the focal-loss paper (Lin et al., 2017, who use
    a single π = 0.01): without it a rare class starts with a huge, mostly
    negative, loss and the first steps predict far too many positives.

    π = 0 or 1 would give ∓inf. Instead n_c = 0 is counted as half a
    positive and n_c = N as N − ½ (a continuity correction): the bias is
    log(½ / (N − ½)) ≈ −log 2N, or its negative — below (above) that of a
    class seen once (N − 1 times). A warning names those classes.

    Args:
        pos_counts: ``[C]`` counts n_c, 0 ≤ n_c ≤ N.
        num_samples: N > 0.

    Returns:
        float32 ``[C]`` on ``pos_counts``' device, finite.

    Example:
        >>> import torch
        >>> from fused_losses import prior_bias
        >>> model = torch.nn.Linear(16, 3)
        >>> with torch.no_grad():
        ...     _ = model.bias.copy_(prior_bias(torch.tensor([100., 10., 1.]), 1000))
        >>> model.bias.data
        tensor([-2.1972, -4.5951, -6.9068])
    """
    n, total = _check_counts(pos_counts, num_samples)
    degenerate = (n == 0) | (n == total)
    if bool(degenerate.any()):
        warnings.warn(f"prior_bias: classes {_class_list(degenerate)} have prior 0 or 1; "
                      f"they are counted as ½ (or N − ½) positives to keep the bias finite",
                      RuntimeWarning, stacklevel=2)
    half = min(0.5, total / 2)
    n = torch.where(n == 0, half, torch.where(n == total, total - half, n))
    return (n.log() - (total - n).log()).to(torch.float32)

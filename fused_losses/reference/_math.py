"""Elementwise maths shared by the pure-PyTorch reference losses.

Everything here is differentiable with autograd and stable for any finite logit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(input: torch.Tensor) -> torch.dtype:
    """fp32 maths for fp16/bf16/fp32 logits, fp64 for fp64 logits (gradcheck)."""
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def prepare_target(target: torch.Tensor, dtype: torch.dtype, ignore_index,
                   label_smoothing: float):
    """Float targets with ignored entries zeroed, then smoothed.

    Returns ``(t, keep)``; ``keep`` is None when nothing can be ignored.
    Zeroing before smoothing keeps values like -100 out of the maths, so an
    ignored element can never leak a NaN into the gradient.
    """
    t = target.to(dtype)
    keep = None
    if ignore_index is not None:
        keep = target != ignore_index
        t = torch.where(keep, t, torch.zeros((), dtype=dtype, device=t.device))
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return t, keep


def log_sigmoid_pair(x: torch.Tensor):
    """``(log σ(x), log σ(-x))``, both finite for every finite x."""
    return F.logsigmoid(x), F.logsigmoid(-x)


def log_one_minus_pt(log_p: torch.Tensor, log_n: torch.Tensor, t: torch.Tensor,
                     hard: bool) -> torch.Tensor:
    """log(1 - p_t) with p_t = σ(x)·t + σ(-x)·(1-t).

    1 - p_t = σ(x)·(1-t) + σ(-x)·t, a sum of two non-negative terms, so its log
    is a log-add-exp of ``log σ(x) + log(1-t)`` and ``log σ(-x) + log t``.
    For hard 0/1 targets that collapses to a select between the two
    log-sigmoids, which never underflows to log(0).
    """
    if hard:
        return torch.where(t > 0.5, log_n, log_p)
    return torch.logaddexp(log_p + torch.log1p(-t), log_n + torch.log(t))


def alpha_factor(alpha, t: torch.Tensor) -> torch.Tensor:
    """α_t = α·t + (1-α)·(1-t) for a float or tensor α."""
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.to(t.dtype)
    return alpha * t + (1.0 - alpha) * (1.0 - t)


def reduce_loss(loss: torch.Tensor, keep, reduction: str) -> torch.Tensor:
    """Apply ``reduction``; ``mean`` divides by the number of kept elements.

    With every element ignored the mean is 0, not NaN. Without ``keep`` the mean
    is torch's plain mean (NaN for an empty input, as torch gives).
    """
    if keep is not None:
        loss = torch.where(keep, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if keep is None:
        return loss.mean()
    return loss.sum() / keep.sum().clamp_min(1).to(loss.dtype)


def adjusted_sigmoid(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """p̃ = (1-p)^α·p with p = σ(x), as exp(log σ(x) + α·log σ(-x)).

    Built from log-sigmoids, so the derivative autograd forms,
    p̃·(σ(-x) - α·σ(x)), stays finite for every finite x and every α ≥ 0
    (no (1-p)^(α-1) that blows up for α < 1 as p → 1).
    """
    log_p, log_n = log_sigmoid_pair(x)
    if alpha == 0.0:
        return torch.exp(log_p)
    return torch.exp(log_p + alpha * log_n)
def masked_log(v: torch.Tensor) -> torch.Tensor:
    """log v where v > 0, else -inf, with a zero (not NaN) gradient at v <= 0.

    The inner ``where`` keeps autograd from ever forming 1/0 for the
    unselected lanes (the usual double-``where`` guard).
    """
    pos = v > 0
    ninf = torch.full((), float("-inf"), dtype=v.dtype, device=v.device)
    return torch.where(pos, torch.log(torch.where(pos, v, torch.ones_like(v))), ninf)
def class_rows(input: torch.Tensor, target: torch.Tensor):
    """``[N, C, d...]`` logits and ``[N, d...]`` class indices as ``[R, C]`` and ``[R]``.

    ``[C]`` with a 0-d target is one row, as in ``F.cross_entropy``.
    """
    if input.dim() == 1:
        return input.reshape(1, -1), target.reshape(1)
    return input.movedim(1, -1).reshape(-1, input.shape[1]), target.reshape(-1)


def softmax_target_terms(x: torch.Tensor, y: torch.Tensor):
    """``(log p, log p_y, log(1 - p_y))`` of p = softmax(x) over the last dim.

    ``y`` holds in-range class indices. log(1 - p_y) is the log-sum-exp of the
    other classes' log-probabilities, not log1p(-p_y): it keeps its digits when
    p_y rounds to 1, and every gradient through it stays finite.
    """
    logp = torch.log_softmax(x, dim=-1)
    log_py = logp.gather(-1, y[:, None])[:, 0]
    if x.shape[-1] == 1:  # no other class: 1 - p_y = 0
        return logp, log_py, torch.full_like(log_py, float("-inf"))
    onehot = torch.zeros_like(logp, dtype=torch.bool).scatter_(-1, y[:, None], True)
    log_q = torch.logsumexp(logp.masked_fill(onehot, float("-inf")), dim=-1)
    return logp, log_py, log_q


def pow_from_log(log_q: torch.Tensor, exponent: float) -> torch.Tensor:
    """q^a from log q, with q^0 = 1 even at q = 0 (where exp(0·-inf) is NaN)."""
    if exponent == 0.0:
        return torch.ones_like(log_q)
    return torch.exp(exponent * log_q)

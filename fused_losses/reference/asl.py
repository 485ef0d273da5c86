"""Asymmetric loss (ASL; Ben-Baruch et al., ICCV 2021) in plain PyTorch: the
oracle and CPU fallback.

For logits x and targets t (hard 0/1 or soft in [0, 1]) of the same shape,
label smoothing ε first moves every target towards 1/2 (hard labels turn
soft), and t below is that smoothed target::

    t    ← t·(1-ε) + ε/2
    p    = σ(x)
    p_m  = min(1 - p + clip, 1)       (1 - p when clip = 0)
    L₊   = p_w·t·log(max(p, eps))     (p_w: pos_weight, a float or a broadcast tensor; 1 if None)
    L₋   = (1-t)·log(max(p_m, eps))
    p_t  = p·t + p_m·(1-t)
    γ    = γ₊·t + γ₋·(1-t)
    loss = -w·(L₊ + L₋)·(1 - p_t)^γ

p_w scales the positive term only: p_t and γ (hence the focal factor) do not
depend on it.

Stable forms: log max(p, eps) is log σ(x) clamped at log eps; 1 - p is σ(-x);
log p_m is log1p(-d) with d = max(p - clip, 0) = 1 - p_m while d < 1/2 and
log(σ(-x) + clip) beyond, so neither side cancels. 1 - p_t = t·σ(-x) + (1-t)·d
is a sum of non-negatives, and (1 - p_t)^γ is exp(γ·log(1 - p_t)) with the log
from log-sigmoids (hard targets, ε = 0) or a log-add-exp (soft targets).

Subgradients (what every backend implements): a clamp passes the gradient
where the unclamped value is inside its bound, equality included (torch's
``clamp`` rule): log σ(x) >= log eps, p >= clip, log p_m >= log eps. Where
1 - p_t = 0 (t = 0 and p <= clip) the focal factor is 0 (1 when γ = 0) and its
derivative is taken as 0. For 0 < γ < 1 that derivative grows like d^(γ-1) as
p -> clip from above: large but finite for every d > 0.

``detach_focal_weight=True`` treats (1 - p_t)^γ as a constant of the backward
(the paper's default) by detaching the tensor: the global grad mode is never
touched, unlike the official code's ``torch.set_grad_enabled`` toggle.
"""
from __future__ import annotations

import math

import torch

from ._math import compute_dtype, log_sigmoid_pair, masked_log, reduce_loss


def _log_shifted_negative(x, log_p, log_n, clip: float):
    """(log p_m, log d) with d = 1 - p_m = max(σ(x) - clip, 0); log d = -inf at d = 0."""
    if clip == 0.0:
        return log_n, log_p
    s_p, s_n = torch.sigmoid(x), torch.sigmoid(-x)
    d = torch.clamp_min(s_p - clip, 0.0)
    log_pm = torch.where(d < 0.5, torch.log1p(-torch.clamp_max(d, 0.5)),
                         torch.log(s_n + clip))
    return log_pm, masked_log(d)


def _log_one_minus_pt(log_n, log_d, t, hard: bool):
    """log(1 - p_t) = log(t·σ(-x) + (1-t)·d); -inf (zero gradient) where both terms vanish."""
    if hard:
        return torch.where(t > 0.5, log_n, log_d)
    a = torch.log(t) + log_n           # -inf where t = 0
    b = torch.log1p(-t) + log_d        # -inf where t = 1 or d = 0
    live = (t > 0) | (log_d > float("-inf"))
    zero = torch.zeros((), dtype=t.dtype, device=t.device)
    both = torch.logaddexp(torch.where(live, a, zero), torch.where(live, b, zero))
    return torch.where(live, both, torch.full((), float("-inf"), dtype=t.dtype,
                                              device=t.device))


def asl(input: torch.Tensor, target: torch.Tensor, *, gamma_pos: float = 1.0,
        gamma_neg: float = 4.0, clip: float = 0.05, eps: float = 1e-8,
        detach_focal_weight: bool = True, weight=None, pos_weight=None,
        label_smoothing: float = 0.0, reduction: str = "sum") -> torch.Tensor:
    """Reference ASL; arguments are already validated by ``functional``.

    Maths runs in fp32 (fp64 for fp64 logits); the result has ``input.dtype``.
    Shapes: input and target any equal shape; weight and a pos_weight tensor
    broadcast to it; output ``[]`` or the input's shape for ``reduction="none"``.
    """
    dtype = compute_dtype(input)
    x = input.to(dtype)
    t = target.to(dtype)
    hard = not target.is_floating_point() and label_smoothing == 0.0
    if label_smoothing != 0.0:
        t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    log_p, log_n = log_sigmoid_pair(x)
    log_pm, log_d = _log_shifted_negative(x, log_p, log_n, clip)
    if eps > 0.0:
        log_eps = math.log(eps)
        log_p, log_pm = torch.clamp_min(log_p, log_eps), torch.clamp_min(log_pm, log_eps)
    pos_t = t
    if isinstance(pos_weight, torch.Tensor):
        pos_t = t * pos_weight.to(dtype)
    elif pos_weight is not None:
        pos_t = t * float(pos_weight)
    loss = pos_t * log_p + (1.0 - t) * log_pm
    if gamma_pos != 0.0 or gamma_neg != 0.0:
        log_q = _log_one_minus_pt(log_n, log_d, t, hard)
        gamma = gamma_pos * t + gamma_neg * (1.0 - t)
        live = log_q > float("-inf")
        safe = torch.where(live, log_q, torch.zeros((), dtype=dtype, device=x.device))
        at_zero = (gamma == 0).to(dtype)  # 0^0 = 1, as torch.pow gives
        focal = torch.where(live, torch.exp(gamma * safe), at_zero)
        if detach_focal_weight:
            focal = focal.detach()
        loss = loss * focal
    loss = -loss
    if weight is not None:
        loss = loss * weight.to(dtype)
    return reduce_loss(loss, None, reduction).to(input.dtype)

"""Argument checks shared by every loss.

Each check raises ``TypeError`` or ``ValueError`` naming the argument and the
offending shapes or values. None of them reads tensor data, so none syncs.
"""
from __future__ import annotations

import math
import numbers

import torch

REDUCTIONS = ("none", "mean", "sum")
LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_logits(input) -> torch.Tensor:
    check_tensor("input", input)
    if input.dtype not in LOGIT_DTYPES:
        raise TypeError(
            f"input (logits) must be float16, bfloat16, float32 or float64, got {input.dtype}")
    return input


def check_target(input: torch.Tensor, target) -> torch.Tensor:
    check_tensor("target", target)
    if target.is_complex():
        raise TypeError(f"target must be a real or bool tensor, got {target.dtype}")
    if target.shape != input.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} must equal input shape {tuple(input.shape)}")
    return target


def check_reduction(reduction, allowed=REDUCTIONS) -> str:
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")
    return reduction


def check_real(name: str, value, low: float, high: float, *,
               high_open: bool = False) -> float:
    """A Python real number in [low, high] (or [low, high) with high_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    above = value >= high if high_open else value > high
    if math.isnan(value) or value < low or above:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}")
    return value


def check_broadcast(name: str, value, target: torch.Tensor, floating: bool = True):
    """``value`` (tensor or None) must broadcast to ``target``'s shape without growing it."""
    if value is None:
        return None
    check_tensor(name, value)
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if value.is_complex():
        raise TypeError(f"{name} must be real, got {value.dtype}")
    # A plain shape walk: torch.broadcast_shapes costs ~40 µs of Python per call.
    shape, full = tuple(value.shape), tuple(target.shape)
    if len(shape) > len(full) or any(s != 1 and s != f for s, f in
                                     zip(reversed(shape), reversed(full))):
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast to the target "
            f"shape {tuple(target.shape)}")
    return value


def check_devices(**tensors) -> None:
    """All named tensors (None ignored) must sit on one device."""
    named = [(k, v) for k, v in tensors.items() if isinstance(v, torch.Tensor)]
    devices = {v.device for _, v in named}
    if len(devices) > 1:
        where = ", ".join(f"{k} on {v.device}" for k, v in named)
        raise ValueError(f"all tensors must be on one device, got {where}")


def check_int(name: str, value, low: int, high: int) -> int:
    """A Python int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


def check_ignore_index(ignore_index):
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
    return int(ignore_index)


def check_class_target(input: torch.Tensor, target) -> torch.Tensor:
    """Class indices for class-dim logits ``[N, C, d...]`` (or ``[C]``), as
    ``F.cross_entropy`` takes them: an integer tensor of shape ``[N, d...]`` (``[]``)."""
    check_tensor("target", target)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold class indices (an integer dtype), got {target.dtype}")
    if input.dim() < 1 or input.shape[1 if input.dim() > 1 else 0] < 1:
        raise ValueError(f"input must be [N, C, ...] or [C] logits with C >= 1, got shape "
                         f"{tuple(input.shape)}")
    expected = input.shape[:1] + input.shape[2:] if input.dim() > 1 else torch.Size([])
    if target.shape != expected:
        raise ValueError(f"target shape {tuple(target.shape)} must be input shape "
                         f"{tuple(input.shape)} without the class dim 1: {tuple(expected)}")
    return target


def check_class_weight(name: str, value, n_classes: int):
    """None or a floating ``[C]`` tensor of per-class weights."""
    if value is None:
        return None
    check_tensor(name, value)
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if value.shape != (n_classes,):
        raise ValueError(f"{name} must have shape ({n_classes},) (one weight per class), "
                         f"got {tuple(value.shape)}")
    return value


def check_class_target_values(target: torch.Tensor, n_classes: int,
                              ignore_index: int | None = None) -> None:
    """Every class index is in [0, C) or equals ``ignore_index``.

    It reads the target (a device sync on a GPU): the losses call it where
    ``_strict.checks_values`` allows, and ``fused_losses.check_class_targets``
    is the same check called explicitly.
    """
    if target.numel() == 0:
        return
    lo, hi = _aminmax(target)
    if 0 <= lo and hi < n_classes:
        return
    # int64 for the mask: a uint8 target compared with C > 255 would wrap C.
    target = target.detach().to(torch.int64)
    bad = (target < 0) | (target >= n_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    if bool(bad.any()):
        value = target[bad].flatten()[0].item()
        raise ValueError(f"target holds class index {value}, outside [0, {n_classes})"
                         + ("" if ignore_index is None else f" and not ignore_index={ignore_index}"))


# -- value checks: they read tensor data, so they run only where
# ``_strict.checks_values`` allows (CPU tensors always, GPU in strict mode) ----
def _aminmax(t: torch.Tensor) -> tuple:
    lo, hi = torch.aminmax(t.detach())
    return lo.item(), hi.item()


def check_values_in(name: str, value: torch.Tensor, low: float, high: float, *,
                    high_open: bool = False) -> None:
    """Every value of ``value`` in [low, high] (or [low, high)); NaN is refused."""
    if value.numel() == 0 or value.dtype == torch.bool:
        return
    lo, hi = _aminmax(value)
    above = hi >= high if high_open else hi > high
    if math.isnan(lo) or math.isnan(hi) or lo < low or above:
        bracket = ")" if high_open else "]"
        bad = lo if (math.isnan(lo) or lo < low) else hi
        raise ValueError(f"{name} must hold values in [{low}, {high}{bracket}, got {bad} "
                         f"(tensor of shape {tuple(value.shape)})")


def check_binary_target_values(target: torch.Tensor, ignore_index=None) -> None:
    """Hard labels (bool/integer) are 0 or 1, soft labels (float) lie in [0, 1];
    values equal to ``ignore_index`` are allowed. NaN is refused."""
    if target.numel() == 0 or target.dtype == torch.bool:
        return
    lo, hi = _aminmax(target)
    if 0 <= lo and hi <= 1:  # False for NaN
        return
    t = target.detach()
    bad = ~((t >= 0) & (t <= 1))
    if ignore_index is not None:
        bad &= t != ignore_index
    if not bool(bad.any()):
        return
    value = t[bad].flatten()[0].item()
    if target.is_floating_point():
        rule = "soft labels (float targets) must lie in [0, 1]"
    else:
        rule = (f"hard labels ({target.dtype} targets) must be 0 or 1 (a 0/255 mask? pass "
                f"mask > 0)")
    extra = "" if ignore_index is None else f", or equal ignore_index={ignore_index}"
    raise ValueError(f"target holds {value}: {rule}{extra}")

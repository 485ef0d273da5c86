"""Strict mode: the one switch for checks that read tensor values.

Some mistakes are only visible in the data: an ``alpha`` tensor outside
[0, 1], a 0/255 mask passed as hard labels, a class index outside [0, C).
Finding them reads the tensor, which on a GPU is a host sync (it stalls the
stream and breaks CUDA-graph capture). So:

- tensors on the CPU are always checked (reading them costs one pass and no sync);
- tensors on any other device are checked only in strict mode:
  ``fused_losses.set_strict(True)``, the ``with fused_losses.strict():`` block,
  or ``FUSED_LOSSES_STRICT=1`` in the environment at import;
- nothing is read inside a ``torch.compile`` trace (a data-dependent check
  would break the graph); compiled code keeps the shape and dtype checks.

Checks that need only shapes, dtypes and Python values (and the checks of a
module's constructor) run everywhere, always.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

_FALSE = ("", "0", "false", "no", "off")
_strict = os.environ.get("FUSED_LOSSES_STRICT", "0").strip().lower() not in _FALSE


def is_strict() -> bool:
    """True when value checks also run on GPU tensors (see :func:`set_strict`)."""
    return _strict


def set_strict(enabled: bool) -> bool:
    """Turn strict mode on or off for the whole library; returns the previous setting.

    In strict mode every call also checks the values of GPU tensors (targets,
    tensor options), at the cost of a host sync per call: use it while
    debugging, not inside CUDA-graph capture. CPU tensors are always checked.

    Example:
        >>> import fused_losses
        >>> previous = fused_losses.set_strict(True)
        >>> fused_losses.is_strict()
        True
        >>> _ = fused_losses.set_strict(previous)
    """
    global _strict
    if not isinstance(enabled, bool):
        raise TypeError(f"set_strict takes a bool, got {type(enabled).__name__}")
    previous, _strict = _strict, enabled
    return previous


@contextlib.contextmanager
def strict(enabled: bool = True) -> Iterator[None]:
    """``with fused_losses.strict():`` runs its block in strict mode (or not,
    with ``enabled=False``) and restores the previous setting on exit."""
    previous = set_strict(enabled)
    try:
        yield
    finally:
        set_strict(previous)


def reads_without_sync(tensor: torch.Tensor) -> bool:
    """Reading this tensor's values costs no device sync (it lives on the host)."""
    return tensor.device.type == "cpu"


def checks_values(tensor: torch.Tensor) -> bool:
    """Whether a call with ``tensor`` as its input should check tensor values now."""
    if torch.compiler.is_compiling() or tensor.device.type == "meta":
        return False
    return _strict or reads_without_sync(tensor)

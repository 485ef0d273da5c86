"""Which backends this installation has, and how ``backend=`` is resolved.

``available_backends`` answers for a device type; ``resolve_backend`` turns the
user's ``backend=`` into a concrete one or raises an error that says why the
requested backend cannot run.
"""
from __future__ import annotations

import importlib
import os

import torch

BACKENDS = ("auto", "triton", "cuda", "cpu", "torch")


class BackendUnavailableError(RuntimeError):
    """The requested backend exists in general but cannot run here."""


def triton_interpreted() -> bool:
    """True when Triton runs kernels through its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _import_problem(module: str, why: str) -> str | None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{why} ({exc})"
    return None


# Probed once, at package import, so that resolving a backend inside a
# torch.compile trace only reads constants (no graph break, no import).
_TRITON_PROBLEM = _import_problem("fused_losses.triton", "triton is not importable")
_EXT_PROBLEM = _import_problem(
    "fused_losses._C", "not built: the C++ extension fused_losses._C is missing; it is "
    "skipped when installed without a compiler or with FUSED_LOSSES_SKIP_EXT=1")
_EXT_HAS_CUDA = _EXT_PROBLEM is None and torch.ops.fused_losses._built_with_cuda()
_INTERPRETED = triton_interpreted()
_CUDA_PRESENT = torch.cuda.is_available()

# The row losses (class-index logits [N, C, d...]): on a CUDA device ``auto``
# picks the CUDA warp-per-row kernels (csrc/cuda/rows_warp.cuh) for
# C <= ROW_CUDA_MAX_CLASSES and Triton's online row kernels above. Where it
# came from: on the H100 run at commit 45ff7ec Triton was faster than CUDA at
# (8192, 32000); 2048 is the CUDA warp kernels' limit (rows::kWarpMaxCols) and
# the Triton multi-row kernels' (TILE_MAX_C). The H200 crossover is NOT measured
# (no GPU lent): re-measure it there with bench/gpu_grid.py before trusting it.
ROW_LOSSES = ("softmax_focal", "dsc")
ROW_CUDA_MAX_CLASSES = 2048


def _device_type(device: str | torch.device | torch.Tensor) -> str:
    if isinstance(device, torch.Tensor):
        return device.device.type
    return torch.device(device).type


def backend_problem(backend: str, device_type: str) -> str | None:
    """Why ``backend`` cannot run on ``device_type`` here, or None if it can."""
    if backend == "torch":
        return None
    if backend == "triton":
        if _TRITON_PROBLEM:
            return _TRITON_PROBLEM
        if device_type == "cuda":
            return None if _CUDA_PRESENT else "no CUDA device is present"
        if device_type == "cpu":
            return None if _INTERPRETED else (
                "Triton kernels run on CPU tensors only under TRITON_INTERPRET=1 "
                "(set it before importing fused_losses)")
        return f"Triton kernels do not run on {device_type!r} tensors"
    if backend in ("cpu", "cuda"):
        if _EXT_PROBLEM:
            return _EXT_PROBLEM
        if device_type != backend:
            return f"the {backend!r} backend takes {backend} tensors, got {device_type} tensors"
        if backend == "cuda" and not _EXT_HAS_CUDA:
            return "not built: fused_losses._C has no CUDA kernels (no nvcc or CUDA torch at install time)"
        if backend == "cuda" and not _CUDA_PRESENT:
            return "no CUDA device is present"
        return None
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def available_backends(device: str | torch.device | torch.Tensor = "cpu") -> list[str]:
    """The concrete backends usable here for tensors on ``device``.

    >>> from fused_losses import available_backends
    >>> "torch" in available_backends("cpu")
    True
    """
    device_type = _device_type(device)
    return [b for b in BACKENDS[1:] if backend_problem(b, device_type) is None]


def check_backend(backend: object) -> str:
    """``backend`` must name one of BACKENDS (available here or not)."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def wide_rows(stem: str, shape) -> bool:
    """True for a row loss whose logits ``shape`` ([N, C, d...] or [C]) has more
    than ROW_CUDA_MAX_CLASSES classes: ``auto`` then orders Triton first on CUDA."""
    if stem not in ROW_LOSSES or len(shape) == 0:
        return False
    classes = shape[0] if len(shape) == 1 else shape[1]
    return classes > ROW_CUDA_MAX_CLASSES


def auto_order(device_type: str, wide: bool = False) -> tuple[str, ...]:
    """The fused backends ``auto`` tries, in order, on ``device_type``.

    CUDA: the C++ kernels first. On the H100 run at 45ff7ec they were faster than
    the Triton ones in 13 of the 18 benchmark cases (Triton's per-launch host
    cost dominates calls of ~0.3 ms); Triton when the extension has no CUDA.
    ``wide`` (``wide_rows``): a row loss above ROW_CUDA_MAX_CLASSES, Triton first.
    """
    if device_type == "cuda":
        return ("triton", "cuda") if wide else ("cuda", "triton")
    return ("cpu",) if device_type == "cpu" else ()


def resolve_backend(backend: str, device_type: str, fused_ok: bool, wide: bool = False) -> str:
    """Turn ``backend=`` into a concrete backend for a call.

    ``fused_ok`` is False when the call needs something only the reference
    gives (float64 maths, gradients for target or weights); ``auto`` then
    picks the reference and an explicit fused backend is refused by the caller.
    ``wide``: see ``auto_order`` (only ``auto`` reads it).
    """
    check_backend(backend)
    if backend != "auto":
        problem = backend_problem(backend, device_type)
        if problem:
            raise BackendUnavailableError(f"backend={backend!r} is unavailable: {problem}")
        return backend
    if not fused_ok:
        return "torch"
    for candidate in auto_order(device_type, wide):
        if backend_problem(candidate, device_type) is None:
            return candidate
    return "torch"


def empty_cpu_cache() -> int:
    """Free the gradient blocks the C++ CPU kernels keep for reuse; returns the bytes freed.

    A fused forward on the CPU writes its gradient into a block of at least 1 MiB
    that, once freed, is kept (at most 4 blocks, 1 GiB in all) and handed to the
    next forward of the same size: a fresh block would fault in every page on its
    first write. ``FUSED_LOSSES_CPU_GRAD_CACHE=0`` turns the cache off. Returns 0
    when the extension is not built.

    >>> import fused_losses
    >>> fused_losses.empty_cpu_cache() >= 0
    True
    """
    if _EXT_PROBLEM:
        return 0
    return int(torch.ops.fused_losses._empty_cpu_cache())

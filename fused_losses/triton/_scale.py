"""The shared backward of the (loss, grad, scale) ops on a GPU without the C++
CUDA kernels: ``grad *= factor`` in place, skipped on the device when the
factor is exactly 1 (a plain ``loss.backward()`` of a mean or a sum), which
is exact (x·1 changes no bit) and needs no host sync. The CUDA twin is
``csrc/cuda/scale.cu``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 4096      # elements per program: 16 per thread of 4 warps, 16-byte accesses
NUM_WARPS = 4


@triton.jit
def _scale_grad_kernel(grad_ptr, factor_ptr, numel, BLOCK: tl.constexpr):
    f = tl.load(factor_ptr)
    if f != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        g = tl.load(grad_ptr + offs, mask=mask)
        tl.store(grad_ptr + offs, (g.to(tl.float32) * f).to(g.dtype), mask=mask)


def scale_grad_(grad: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``grad`` (contiguous, floating) times the one-element float32 ``factor``,
    in place; returns ``grad``."""
    if not (grad.is_contiguous() and grad.is_floating_point()):
        raise ValueError(f"scale_grad_ needs a contiguous floating grad, got {grad.dtype}")
    if factor.numel() != 1 or factor.dtype != torch.float32 or factor.device != grad.device:
        raise ValueError(f"scale_grad_ needs a one-element float32 factor on {grad.device}, "
                         f"got {factor.dtype} of shape {tuple(factor.shape)} on {factor.device}")
    numel = grad.numel()
    if numel:
        _scale_grad_kernel[(triton.cdiv(numel, BLOCK),)](grad, factor, numel, BLOCK=BLOCK,
                                                         num_warps=NUM_WARPS)
    return grad

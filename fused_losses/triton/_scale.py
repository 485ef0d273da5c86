"""The shared backward of the (loss, grad, scale) ops on a GPU without the C++
CUDA kernels: ``grad *= grad_output·scale`` in place, the factor formed in
the kernel (no separate multiply launch), skipped on the device when it is exactly 1 (a plain ``loss.backward()`` of a mean or a sum), which
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
def _scale_grad_kernel(grad_ptr, gout_ptr, scale_ptr, numel, BLOCK: tl.constexpr):
    f = tl.load(gout_ptr).to(tl.float32) * tl.load(scale_ptr)
    if f != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        g = tl.load(grad_ptr + offs, mask=mask)
        tl.store(grad_ptr + offs, (g.to(tl.float32) * f).to(g.dtype), mask=mask)


def _check_scalar(name: str, t: torch.Tensor, grad: torch.Tensor, dtypes) -> None:
    if t.numel() != 1 or t.dtype not in dtypes or t.device != grad.device:
        kinds = "/".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"scale_grad_ needs a one-element {kinds} {name} on {grad.device}, "
                         f"got {t.dtype} of shape {tuple(t.shape)} on {t.device}")


def scale_grad_(grad: torch.Tensor, grad_output: torch.Tensor,
                scale: torch.Tensor) -> torch.Tensor:
    """``grad`` (contiguous, floating) times ``grad_output·scale`` in place, the
    product taken in fp32 of the one-element ``grad_output`` (fp32/fp16/bf16)
    and ``scale`` (fp32); returns ``grad``."""
    if not (grad.is_contiguous() and grad.is_floating_point()):
        raise ValueError(f"scale_grad_ needs a contiguous floating grad, got {grad.dtype}")
    _check_scalar("grad_output", grad_output, grad,
                  (torch.float32, torch.float16, torch.bfloat16))
    _check_scalar("scale", scale, grad, (torch.float32,))
    numel = grad.numel()
    if numel:
        _scale_grad_kernel[(triton.cdiv(numel, BLOCK),)](grad, grad_output, scale, numel,
                                                         BLOCK=BLOCK, num_warps=NUM_WARPS)
    return grad

"""The chunk plan and chunk loop of the fused linear heads (one driver for every backend).

For ``loss(input @ weight.T + bias, target)`` with ``input`` ``[N, H]``,
``weight`` ``[C, H]`` and ``bias`` ``[C]``, the ``[N, C]`` logits are never
built. The loop takes them a chunk at a time, over classes (``C >= N``, the
extreme-label case) or over rows (``C < N``). Per chunk:

1. ``z = x_k @ w_k.T + b_k`` (one GEMM, fp32 accumulate, in the input dtype);
2. ``chunk_loss(z, t_k)`` gives the chunk's summed loss and its gradient
   ``g = d loss/dz``: the library's fused elementwise kernel, or the reference;
3. the parameter gradients, scaled by the reduction's factor inside the GEMMs
   (``alpha``): over classes, ``grad_weight[k] = s·g.T @ x`` and
   ``grad_bias[k] = Σ_rows g`` (times s at the end) are written once and ``grad_input += s·g @ w_k``
   accumulates in fp32; over rows, ``grad_input[k]`` is written once and
   ``grad_weight``/``grad_bias`` accumulate in fp32.

Chunks run in a fixed order, so the result is deterministic.

**The chunk rule** (``plan``, ``chunk_size=None``): a chunk's working set, its
logits and their gradient in the input dtype plus its dense labels (1 byte per
element, 4 for soft labels), is at most ``LOGITS_FRACTION`` (5 %) of the N×C
fp32 logits that are never built, and at most ``CHUNK_BYTES[device]``:

- CPU 32 MiB: the chunk stays in the last-level cache between the GEMM, the
  loss pass and the two gradient GEMMs (at (2048, 128, 200000) fp32 a 2048-class
  chunk ran the step in 3.20 s, 1792 classes (the rule) 3.26 s, 8192 classes
  3.85 s; 2-core AVX2 machine);
- CUDA 1 GiB: each chunk costs about 10 launches and 150–300 µs of host time
  (measured on this project's 2-core CPU machine), so a chunk must hold enough
  GEMM work for the GPU, not the host, to set the pace. At the issue's H200
  shapes the 5 % rule governs: 5120 classes per chunk at (8192, 1024, 131072)
  and 26752 at (4096, 768, 670000), 26 chunks each. Chunks small enough to stay
  in the 60 MB L2 would be host-bound (an estimate: no GPU lent).

Chunks are whole multiples of ``CLASS_GRANULE`` classes or
``ROW_GRANULE`` rows. An integer ``chunk_size`` is the number of classes per
chunk and forces chunks over classes.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from ._linear_targets import ChunkLabels, Targets

LOGITS_FRACTION = 0.05
CHUNK_BYTES = {"cpu": 32 << 20, "cuda": 1 << 30}
DEFAULT_CHUNK_BYTES = 256 << 20
CLASS_GRANULE = 128
ROW_GRANULE = 16


class Plan(NamedTuple):
    """``size`` classes (``by_rows`` False) or rows per chunk; ``count`` chunks."""
    by_rows: bool
    size: int
    count: int


def plan(n: int, c: int, dtype: torch.dtype, device_type: str, target_bytes: int,
         chunk_size=None) -> Plan:
    """The chunks of an ``[N, C]`` problem (see the module docstring for the rule)."""
    if chunk_size is not None:
        size = max(1, min(int(chunk_size), c))
        return Plan(False, size, max(1, math.ceil(c / size)))
    by_rows = c < n
    per_element = 2 * dtype.itemsize + target_bytes
    budget = min(LOGITS_FRACTION * n * c * 4, CHUNK_BYTES.get(device_type, DEFAULT_CHUNK_BYTES))
    other, length = (c, n) if by_rows else (n, c)
    granule = ROW_GRANULE if by_rows else CLASS_GRANULE
    size = int(budget // (per_element * max(other, 1)))
    size = max(granule, size // granule * granule)
    size = min(size, max(length, 1))
    return Plan(by_rows, size, max(1, math.ceil(length / size)))


def reduction_factor(reduction: str, n: int, c: int) -> float:
    """The factor of the summed loss: ``mean`` over N·C, ``batchmean`` over N."""
    if reduction == "mean":
        return 1.0 / (n * c) if n * c else math.nan
    if reduction == "batchmean":
        return 1.0 / n if n else math.nan
    return 1.0


# chunk_loss(logits, target, cols: slice or None, need_grad) -> (summed loss [], grad or None)
ChunkLoss = Callable[[torch.Tensor, torch.Tensor, slice, bool], tuple]


def run(input: torch.Tensor, weight: torch.Tensor, bias, targets: Targets,
        chunk_loss: ChunkLoss, chunks: Plan, factor: float, needs: tuple):
    """``(loss, grad_input, grad_weight, grad_bias)``; a gradient not in ``needs``
    (input, weight, bias) is an empty ``[0]`` tensor. The loss is ``factor`` times
    the summed loss, in the input dtype; gradients have their tensor's dtype."""
    n, c = input.shape[0], weight.shape[0]
    need_x, need_w, need_b = needs
    need_grad = need_x or need_w or need_b
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    total = torch.zeros((), dtype=acc, device=input.device)
    gx = gw = gb = None
    if need_x:
        gx = (torch.empty_like(input) if chunks.by_rows
              else torch.zeros(input.shape, dtype=acc, device=input.device))
    if need_w:
        gw = (torch.zeros(weight.shape, dtype=acc, device=weight.device) if chunks.by_rows
              else torch.empty_like(weight))
    if need_b:
        gb = torch.zeros(c, dtype=acc, device=input.device)
    length = n if chunks.by_rows else c
    labels = ChunkLabels(targets, n, c, chunks.by_rows, chunks.size)
    for k, lo in enumerate(range(0, length, chunks.size)):
        part = slice(lo, min(lo + chunks.size, length))
        rows, cols = (part, slice(None)) if chunks.by_rows else (slice(None), part)
        x, w = input[rows], weight[cols]
        b = None if bias is None else bias[cols]
        z = torch.mm(x, w.t()) if b is None else torch.addmm(b, x, w.t())
        t = labels(k, rows, cols)
        loss, g = chunk_loss(z, t, None if chunks.by_rows else part, need_grad)
        del z, t
        total += loss.to(acc)
        if not need_grad:
            continue
        if chunks.by_rows:
            if need_x:
                gx[part].addmm_(g, weight, beta=0, alpha=factor)
            if need_w:
                _accumulate_mm(gw, g.t(), x, factor)
            if need_b:
                gb.add_(g.sum(0, dtype=acc))
        else:
            if need_x:
                _accumulate_mm(gx, g, w, factor)
            if need_w:
                gw[part].addmm_(g.t(), input, beta=0, alpha=factor)
            if need_b:
                torch.sum(g, 0, dtype=acc, out=gb[part])
        del g
    if gb is not None:
        gb.mul_(factor)
    # A fresh empty tensor per missing gradient: outputs of a custom op may not alias.
    return ((total * factor).to(input.dtype),
            input.new_empty(0) if gx is None else gx.to(input.dtype),
            input.new_empty(0) if gw is None else gw.to(weight.dtype),
            input.new_empty(0) if gb is None else gb.to(bias.dtype))


def _accumulate_mm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float) -> None:
    """``acc += alpha · a @ b`` with ``acc`` in fp32 and a 16-bit ``a``/``b``: the
    product leaves the GEMM in fp32 (``out_dtype``), unrounded."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b, alpha=alpha)
    else:
        acc.add_(_mm_fp32(a, b), alpha=alpha)


def _mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    try:
        return torch.mm(a, b, out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError, TypeError):  # a build without out_dtype here
        return torch.mm(a, b).float()

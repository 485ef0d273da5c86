"""Host-side layout helpers shared by the fused backends (no kernels here).

Kernels see every loss as a row-major [R, C] problem with C the last dim.
Broadcast operands (pos_weight, weight, alpha) are passed as a base tensor plus
(row, column) strides of their expanded view, so a per-class ``[C]`` vector
costs C reads from cache instead of an N×C copy.
"""
from __future__ import annotations

import torch


def rows_cols(shape) -> tuple[int, int]:
    """(R, C) of a logits shape ``[..., C]``; a 0-d tensor is one element."""
    cols = shape[-1] if len(shape) else 1
    numel = 1
    for size in shape:
        numel *= size
    return (numel // cols if cols else 0), cols


def as_rows(operand: torch.Tensor | None, shape, rows: int, cols: int):
    """``(tensor, stride_r, stride_c)`` addressing ``operand`` broadcast to [R, C].

    Falls back to one materialised copy only when the broadcast leading dims
    cannot be merged into a single row stride (e.g. a ``[5, 1]`` weight on a
    ``[3, 5, 7]`` input).
    """
    if operand is None:
        return None, 0, 0
    view = operand.expand(shape)
    if view.dim() == 0:
        return view, 0, 0
    stride_c = view.stride(-1) if cols > 1 else 0
    lead = [(size, stride) for size, stride in zip(view.shape[:-1], view.stride()[:-1])
            if size != 1]
    stride_r = lead[-1][1] if lead else 0
    for (size_a, stride_a), (size_b, stride_b) in zip(lead, lead[1:]):
        if stride_a != stride_b * size_b:
            view = view.reshape(rows, cols)
            return view, view.stride(0), (view.stride(1) if cols > 1 else 0)
    return view, stride_r, stride_c


def contiguous_target(target: torch.Tensor) -> torch.Tensor:
    """Contiguous target, bool kept as bool: Triton loads ``*i1`` as bytes, and a
    bool -> uint8 dtype view inside a traced op does not lower in inductor."""
    return target.contiguous()


def backward_fake(grad_output, input, *options):
    """Fake kernel of every fused backward op: a gradient shaped like ``input``."""
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def fused_outputs(input: torch.Tensor, reduction: str, compute_grad: bool):
    """Empty ``(loss, grad, scale)`` of a fused forward op (also its fake kernel).

    ``loss``: ``[]`` or input's shape for ``none``, in input's dtype; ``grad``:
    input's shape when a reduced loss needs a gradient, else ``[0]``;
    ``scale``: fp32 ``[]``.
    """
    reduce = reduction != "none"
    loss = input.new_empty(() if reduce else input.shape)
    grad = input.new_empty(input.shape if (reduce and compute_grad) else (0,))
    return loss, grad, input.new_empty((), dtype=torch.float32)


def dice_outputs(input: torch.Tensor, reduction: str):
    """Empty ``(loss, sums)`` of a dice forward op (also its fake kernel): loss
    ``[]`` or ``[C]`` (``none``) in input's dtype, fp32 sums ``[3, C]``."""
    cols = input.shape[1]
    loss = input.new_empty(() if reduction != "none" else (cols,))
    return loss, input.new_empty((3, cols), dtype=torch.float32)
def class_layout(shape) -> tuple[int, int, int]:
    """(R, C, D) of class-dim logits ``[N, C, d1, ...]`` (or ``[C]``).

    Kernels address row r = (n, s), n = r // D, s = r % D, at offset
    n·C·D + s with class stride D = d1·d2·…: spatial inputs are read in place,
    with no copy that moves the class dim last.
    """
    if len(shape) == 1:
        return 1, shape[0], 1
    spatial = 1
    for size in shape[2:]:
        spatial *= size
    return shape[0] * spatial, shape[1], spatial


def row_outputs(input: torch.Tensor, target: torch.Tensor, reduction: str, compute_grad: bool):
    """Empty ``(loss, grad, scale)`` of a per-row (class-index) fused forward op.

    As :func:`fused_outputs`, except that ``reduction="none"`` gives one loss
    per row: target's shape.
    """
    reduce = reduction != "none"
    loss = input.new_empty(() if reduce else target.shape)
    grad = input.new_empty(input.shape if (reduce and compute_grad) else (0,))
    return loss, grad, input.new_empty((), dtype=torch.float32)

"""Host-side launch of the Triton kernels, shared by the losses' ops.

Two kernel shapes cover the (loss, grad, scale) losses; each has one kernel
whose forward and backward share a body, told apart by the BACKWARD constexpr:

- elementwise (focal_bce, asl, ghmc): each program handles ``tiles``
  consecutive BLOCK-element tiles (``tiles_per_program``, a function of numel
  alone, so the summation order never depends on the device):
  ``kernel(*pointers, out, grad, part, scale, gout, numel, tiles, *sizes,
  grad_scale, REDUCE=, WRITE_GRAD=, BACKWARD=, COUNT=, FINAL=, MEAN=, **flags)``,
  epilogues in ``_reduce.py``;
- rows (softmax_focal, dsc): each program handles ``tiles`` tiles of ROWS
  class-index rows (ROWS = 1 for the online kernels of large C):
  ``kernel(*pointers, out, grad, gout, den, n_rows, tiles, *sizes, grad_scale,
  WRITE_GRAD=, REDUCE=, BACKWARD=, DEV_SCALE=, ROWS=, **flags)``; ``out``
  holds one partial per program (``mean``/``sum``) or one loss per row.

The slots a mode never touches get a tensor of the call as a placeholder: a
pointer the kernel only reads (the input) where it reads, and the written
output where it writes, so that torch.compile's mutation analysis of the
kernel never mistakes an input for a mutated tensor.
"""
from __future__ import annotations

import torch
import triton
from torch.library import wrap_triton

from .._layout import as_rows, contiguous_target, fused_outputs, row_outputs, rows_cols
from ._reduce import launch_sum_partials
from ._softmax import launch_finish_rows
from ._softmax import tiles_per_program as row_tiles

BLOCK = 1024          # elements per tile of the elementwise kernels
NUM_WARPS = 4
MAX_TILES = 16        # most tiles per program
FILL_PROGRAMS = 2048  # a program takes more tiles only while as many programs remain

# Operand modes (the constexprs of ``_math.operand_tile``).
NONE, SCALAR, CLASS, GENERAL = 0, 1, 2, 3


def tiles_per_program(numel: int) -> int:
    """A power of two <= MAX_TILES; more tiles per program only for large inputs,
    so the grid still fills the GPU. Depends on numel alone (determinism)."""
    n_tiles = triton.cdiv(numel, BLOCK)
    tiles = 1
    while tiles < MAX_TILES and n_tiles >= 2 * tiles * FILL_PROGRAMS:
        tiles *= 2
    return tiles


def operand_mode(operand, shape, rows: int, cols: int):
    """``(tensor or None, stride_r, stride_c, mode)`` of an operand broadcast to [R, C].

    A per-class operand (row stride 0) becomes a contiguous [C] vector (a copy
    of C values only when its column stride is not 1), read by column alone.
    """
    view, stride_r, stride_c = as_rows(operand, shape, rows, cols)
    if view is None:
        return None, 0, 0, NONE
    if stride_r == 0 and stride_c == 0:
        return view, 0, 0, SCALAR
    if stride_r == 0:
        if stride_c != 1:
            view = view[(0,) * (view.dim() - 1)].contiguous()
        return view, 0, 1, CLASS
    return view, stride_r, stride_c, GENERAL


def broadcast_operands(input, target, *operands):
    """``(pointers, sizes, flags, modes)`` common to the elementwise kernels.

    pointers: the input, the target, then each operand (the target stands in
    for an absent one, which its mode keeps unread); sizes: C, 1/C, then the
    (row, column) strides of each operand; flags: SMALL_C, BLOCK, num_warps;
    modes: each operand's NONE / SCALAR / CLASS / GENERAL.
    """
    rows, cols = rows_cols(input.shape)
    t = contiguous_target(target)
    pointers, strides, modes = [input.contiguous(), t], [], []
    for operand in operands:
        view, stride_r, stride_c, mode = operand_mode(operand, input.shape, rows, cols)
        pointers.append(t if view is None else view)
        strides += [stride_r, stride_c]
        modes.append(mode)
    sizes = (max(cols, 1), 1.0 / max(cols, 1), *strides)
    flags = dict(SMALL_C=cols < BLOCK, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return tuple(pointers), sizes, flags, tuple(modes)


def gamma_int(gamma: float) -> int:
    """γ as a small integer exponent (powers by multiplication), or -1 (general)."""
    return int(gamma) if gamma == int(gamma) and 0 <= gamma <= 8 else -1


def forward_plan(input, pointers, sizes, flags, reduction: str, compute_grad: bool, divisor):
    """Buffers and launch of an elementwise forward: ``(out, grad, scale, part,
    grid, args, constexprs, mean, count)``; shared with ``bench/_sass_triton.py``.

    ``divisor`` of a mean: ``"numel"`` (known here: folded into ``grad``, scale
    1), ``"kept"`` (the count of kept elements, known on the device: scale is
    its clamped inverse) or None (already inside the kernel's loss, as GHM-C's
    weights carry 1/tot: the partials are only summed).
    """
    numel = input.numel()
    reduce = reduction != "none"
    mean = 0 if reduction != "mean" or divisor is None else (1 if divisor == "numel" else 2)
    count = mean == 2
    tiles = tiles_per_program(numel)
    n_prog = triton.cdiv(numel, BLOCK * tiles)
    final = reduce and n_prog == 1
    out, grad, scale = fused_outputs(input, reduction, compute_grad)
    part = out
    if reduce and not final:  # one workspace: the partials, then the counts
        part = torch.empty(((2 if count else 1) * n_prog,), dtype=torch.float32,
                           device=input.device)
    grad_scale = 1.0 / numel if (mean == 1 and numel) else 1.0
    args = (*pointers, out, grad, part, scale, pointers[0], numel, tiles, *sizes, grad_scale)
    constexprs = dict(REDUCE=reduce, WRITE_GRAD=reduce and compute_grad, BACKWARD=False,
                      COUNT=count, FINAL=final, MEAN=mean, **flags)
    return out, grad, scale, part, (n_prog,), args, constexprs, mean, count


def elementwise_forward(kernel, input, pointers, sizes, flags, reduction: str,
                        compute_grad: bool, divisor):
    """``(loss, grad, scale)`` of an elementwise kernel (protocol of ops/_protocols.py);
    ``divisor`` as in ``forward_plan``."""
    out, grad, scale, part, grid, args, constexprs, mean, count = forward_plan(
        input, pointers, sizes, flags, reduction, compute_grad, divisor)
    if grid[0]:
        wrap_triton(kernel)[grid](*args, **constexprs)
    if reduction != "none" and not constexprs["FINAL"]:
        launch_sum_partials(wrap_triton, part, grid[0], out, scale, input.numel(), count, mean)
    elif not grid[0]:
        scale.fill_(1.0)
    return out, grad, scale


def elementwise_backward(kernel, grad_output, input, pointers, sizes, flags):
    """d(Σ grad_output·loss)/d(input) of ``reduction="none"``, in one pass."""
    numel = input.numel()
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    tiles = tiles_per_program(numel)
    n_prog = triton.cdiv(numel, BLOCK * tiles)
    if n_prog:
        gin = grad_input
        wrap_triton(kernel)[(n_prog,)](
            *pointers, gin, gin, gin, gin, grad_output.contiguous(), numel, tiles, *sizes, 1.0,
            REDUCE=False, WRITE_GRAD=False, BACKWARD=True, COUNT=False, FINAL=False, MEAN=0,
            **flags)
    return grad_input


def _row_tiles(rows: int, rows_per_tile: int) -> int:
    """Row tiles per program; ROWS = 1 marks the online kernels: one row each."""
    return 1 if rows_per_tile == 1 else row_tiles(rows, rows_per_tile)


def rows_plan(input, target, rows: int, pointers, sizes, flags, reduction: str,
              compute_grad: bool, den=None):
    """Buffers and launch of a rows forward: ``(out, grad, scale, part, grid, args,
    constexprs)``; shared with ``bench/_sass_triton.py``."""
    reduce = reduction != "none"
    out, grad, scale = row_outputs(input, target, reduction, compute_grad)
    tiles = _row_tiles(rows, flags["ROWS"])
    n_prog = triton.cdiv(rows, flags["ROWS"] * tiles)
    part = torch.empty((n_prog,), dtype=torch.float32, device=input.device) if reduce else out
    grad_scale = 1.0 / rows if (reduction == "mean" and den is None and rows) else 1.0
    args = (*pointers, part, grad, pointers[0], pointers[0] if den is None else den, rows, tiles,
            *sizes, grad_scale)
    constexprs = dict(WRITE_GRAD=reduce and compute_grad, REDUCE=reduce, BACKWARD=False,
                      DEV_SCALE=den is not None, **flags)
    return out, grad, scale, part, (n_prog,), args, constexprs


def rows_forward(kernel, input, target, rows: int, pointers, sizes, flags, reduction: str,
                 compute_grad: bool, den=None):
    """``(loss, grad, scale)`` of a rows kernel (protocol of ops/_protocols.py).

    Each program handles ``tiles`` consecutive tiles of ``flags["ROWS"]`` rows
    (``_softmax.tiles_per_program``: a function of the shape alone) and, for
    ``mean``/``sum``, writes one fp32 partial; one program then sums the
    partials in program order. The gradient is written final: a mean's divisor
    is ``den`` (2 fp32 on the device: Σ weights and its inverse, from
    ``_softmax.launch_row_weights``) or, when ``den`` is None, the row count.
    So ``scale`` is always 1.
    """
    out, grad, scale, part, grid, args, constexprs = rows_plan(
        input, target, rows, pointers, sizes, flags, reduction, compute_grad, den)
    if grid[0]:
        wrap_triton(kernel)[grid](*args, **constexprs)
    reduce, mean = reduction != "none", reduction == "mean"
    if reduce:
        launch_finish_rows(wrap_triton, part, grid[0], den, out, scale, rows,
                           0 if not mean else (1 if den is None else 2))
    else:
        scale.fill_(1.0)
    return out, grad, scale


def rows_backward(kernel, grad_output, input, rows: int, pointers, sizes, flags):
    """d(Σ grad_output·loss)/d(input) of ``reduction="none"``, in one pass."""
    grad_input = torch.empty(input.shape, dtype=input.dtype, device=input.device)
    tiles = _row_tiles(rows, flags["ROWS"])
    n_prog = triton.cdiv(rows, flags["ROWS"] * tiles)
    if n_prog:
        gin = grad_input
        wrap_triton(kernel)[(n_prog,)](
            *pointers, gin, gin, grad_output.contiguous(), pointers[0], rows, tiles, *sizes,
            1.0, WRITE_GRAD=True, REDUCE=False, BACKWARD=True, DEV_SCALE=False, **flags)
    return grad_input

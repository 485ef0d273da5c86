"""The deterministic two-stage reductions: stage one's epilogue, stage two.

Stage one writes one fp32 loss partial and one int32 kept-count per program.
A single-program kernel then sums them in a fixed order, so repeated calls are
bit-identical (no float atomics anywhere).
"""
import triton
import triton.language as tl

PARTIAL_BLOCK = 1024


@triton.jit
def write_tile(pid, offs, mask, keep, loss, grad, out_ptr, grad_ptr, psum_ptr, pcnt_ptr,
               gout_ptr, grad_scale, REDUCE: tl.constexpr, WRITE_GRAD: tl.constexpr,
               COUNT: tl.constexpr, BACKWARD: tl.constexpr):
    """Epilogue of the elementwise kernels, whose forward and backward share one body.

    Forward: the tile's loss partial (and, with COUNT, its number of ``keep``
    lanes) plus grad·grad_scale when WRITE_GRAD, or the loss itself for
    ``none``. BACKWARD (of ``none``): grad·grad_output, nothing else. The
    partial sums every lane: the caller zeroes the loss on padding.
    """
    if BACKWARD:
        g_out = tl.load(gout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(grad_ptr + offs, (grad * g_out).to(grad_ptr.dtype.element_ty), mask=mask)
    elif REDUCE:
        tl.store(psum_ptr + pid, tl.sum(loss, axis=0))
        if COUNT:
            tl.store(pcnt_ptr + pid, tl.sum(keep.to(tl.int32), axis=0))
        if WRITE_GRAD:
            g = grad * tl.cast(grad_scale, tl.float32)
            tl.store(grad_ptr + offs, g.to(grad_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + offs, loss.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _ordered_sums(a_ptr, b_ptr, n, LOAD_B: tl.constexpr, B_TYPE: tl.constexpr,
                  BLOCK: tl.constexpr):
    """(Σ a, Σ b) over n values, always in the same order; fp32 a, b summed as
    B_TYPE. Without LOAD_B, Σ b is 0 and ``b_ptr`` may be a placeholder."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    b_acc = tl.zeros([BLOCK], dtype=B_TYPE)
    for i in range(0, n, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        mask = offs < n
        acc += tl.load(a_ptr + offs, mask=mask, other=0.0)
        if LOAD_B:
            b_acc += tl.load(b_ptr + offs, mask=mask, other=0).to(B_TYPE)
    return tl.sum(acc, axis=0), tl.sum(b_acc, axis=0)


@triton.jit
def _sum_partials_kernel(psum_ptr, pcnt_ptr, loss_ptr, scale_ptr, n_partials,
                         MEAN: tl.constexpr, CLAMP_COUNT: tl.constexpr,
                         BLOCK: tl.constexpr):
    """loss = Σ partials (÷ Σ counts for mean); scale = 1/count when the
    gradient still needs the mean's divisor (CLAMP_COUNT: ignore_index in use)."""
    # Counts only matter to a mean (pcnt may be a placeholder otherwise); int64
    # so that no count of int32 partials can overflow.
    total, count = _ordered_sums(psum_ptr, pcnt_ptr, n_partials, MEAN, tl.int64, BLOCK)
    count = count.to(tl.float32)
    scale = tl.full([], 1.0, tl.float32)
    if MEAN:
        if CLAMP_COUNT:
            count = tl.maximum(count, 1.0)
            scale = 1.0 / count
        total = total / count
    tl.store(loss_ptr, total.to(loss_ptr.dtype.element_ty))
    tl.store(scale_ptr, scale)


def launch_sum_partials(wrap, psum, pcnt, loss, scale, mean: bool, clamp_count: bool):
    """Launch stage two; ``wrap`` is ``torch.library.wrap_triton``."""
    wrap(_sum_partials_kernel)[(1,)](
        psum, pcnt, loss, scale, psum.numel(),
        MEAN=mean, CLAMP_COUNT=clamp_count, BLOCK=PARTIAL_BLOCK)


@triton.jit
def _sum_rows_kernel(rows_ptr, w_ptr, loss_ptr, scale_ptr, n_rows,
                     MEAN: tl.constexpr, HAS_W: tl.constexpr, BLOCK: tl.constexpr):
    """Per-row losses -> loss = Σ rows (÷ Σ w, or ÷ n_rows without w, for mean).

    scale = 1/Σ w for a weighted mean (0 when Σ w = 0: the loss is then 0/0 =
    NaN and the gradient 0, as torch's cross_entropy gives; a negative Σ w divides
    like any other), else 1.
    """
    total, w_sum = _ordered_sums(rows_ptr, w_ptr, n_rows, MEAN and HAS_W, tl.float32, BLOCK)
    scale = tl.full([], 1.0, tl.float32)
    if MEAN:
        if HAS_W:
            denom = w_sum
            scale = tl.where(denom != 0.0, 1.0 / denom, 0.0)  # Σ w < 0 divides too
        else:
            denom = tl.full([], 1.0, tl.float32) * n_rows
        total = total / denom
    tl.store(loss_ptr, total.to(loss_ptr.dtype.element_ty))
    tl.store(scale_ptr, scale)


def launch_sum_rows(wrap, rows, w, loss, scale, mean: bool):
    """Sum per-row fp32 losses in a fixed order; ``w`` (or None) weighs a mean."""
    wrap(_sum_rows_kernel)[(1,)](
        rows, rows if w is None else w, loss, scale, rows.numel(),
        MEAN=mean, HAS_W=w is not None, BLOCK=PARTIAL_BLOCK)

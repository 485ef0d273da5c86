"""Second stage of the deterministic two-stage reductions.

Stage one writes one fp32 loss partial and one int32 kept-count per program.
This single-program kernel sums them in a fixed order, so repeated calls are
bit-identical (no float atomics anywhere).
"""
import triton
import triton.language as tl

PARTIAL_BLOCK = 1024


@triton.jit
def _sum_partials_kernel(psum_ptr, pcnt_ptr, loss_ptr, scale_ptr, n_partials,
                         MEAN: tl.constexpr, CLAMP_COUNT: tl.constexpr,
                         BLOCK: tl.constexpr):
    """loss = Σ partials (÷ Σ counts for mean); scale = 1/count when the
    gradient still needs the mean's divisor (CLAMP_COUNT: ignore_index in use)."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    cnt = tl.zeros([BLOCK], dtype=tl.int64)
    for i in range(0, n_partials, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        mask = offs < n_partials
        acc += tl.load(psum_ptr + offs, mask=mask, other=0.0)
        if MEAN:  # counts are only read for a mean (pcnt may be a placeholder otherwise)
            cnt += tl.load(pcnt_ptr + offs, mask=mask, other=0).to(tl.int64)
    total = tl.sum(acc, axis=0)
    count = tl.sum(cnt, axis=0).to(tl.float32)
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
    NaN and the gradient 0, as torch's cross_entropy gives), else 1.
    """
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    wacc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, n_rows, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        mask = offs < n_rows
        acc += tl.load(rows_ptr + offs, mask=mask, other=0.0)
        if MEAN and HAS_W:
            wacc += tl.load(w_ptr + offs, mask=mask, other=0.0)
    total = tl.sum(acc, axis=0)
    scale = tl.full([], 1.0, tl.float32)
    if MEAN:
        if HAS_W:
            denom = tl.sum(wacc, axis=0)
            scale = tl.where(denom > 0.0, 1.0 / denom, 0.0)
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

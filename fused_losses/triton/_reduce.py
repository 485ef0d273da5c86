"""The deterministic reductions of the elementwise kernels, and the rows' stage two.

Each program of an elementwise kernel handles ``tiles`` consecutive BLOCK
tiles (a function of numel alone, ``_launch.tiles_per_program``), adds their
losses lane by lane in registers and writes one fp32 partial (with COUNT, its
kept-element count too, as an exact fp32 integer, after the partials). A
single-program kernel then sums the partials in a fixed order; when the whole
input is one program (FINAL), that program finishes the reduction itself. So
the summation order depends only on the shape, and repeated calls are
bit-identical (no float atomics anywhere).

MEAN codes: 0 a sum; 1 a mean over ``n`` (numel, known on the host, whose
1/n is already in the gradient: scale 1); 2 a mean over the kept count
(clamped to >= 1; scale = 1/count).
"""
import triton
import triton.language as tl

PARTIAL_BLOCK = 1024


@triton.jit
def store_tile(lane, mask, loss, grad, out_ptr, grad_ptr, gout_ptr, grad_scale,
               REDUCE: tl.constexpr, WRITE_GRAD: tl.constexpr, BACKWARD: tl.constexpr):
    """Per-tile stores; the pointers are already offset to the tile's start.

    Forward: grad·grad_scale when WRITE_GRAD, or the loss itself without
    REDUCE. BACKWARD (of ``none``): grad·grad_output, nothing else.
    """
    if BACKWARD:
        g_out = tl.load(gout_ptr + lane, mask=mask, other=0.0).to(tl.float32)
        tl.store(grad_ptr + lane, (grad * g_out).to(grad_ptr.dtype.element_ty), mask=mask)
    elif REDUCE:
        if WRITE_GRAD:
            g = grad * tl.cast(grad_scale, tl.float32)
            tl.store(grad_ptr + lane, g.to(grad_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + lane, loss.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _finish(total, count, loss_ptr, scale_ptr, n, MEAN: tl.constexpr):
    """loss = total (÷ n or ÷ max(count, 1), as MEAN says) and the gradient's scale."""
    scale = tl.full([], 1.0, tl.float32)
    if MEAN == 1:
        total = total / tl.cast(n, tl.float32)
    if MEAN == 2:
        count = tl.maximum(count.to(tl.float32), 1.0)
        scale = 1.0 / count
        total = total / count
    tl.store(loss_ptr, total.to(loss_ptr.dtype.element_ty))
    tl.store(scale_ptr, scale)


@triton.jit
def finish_program(pid, acc, cnt, part_ptr, loss_ptr, scale_ptr, n,
                   REDUCE: tl.constexpr, BACKWARD: tl.constexpr, COUNT: tl.constexpr,
                   FINAL: tl.constexpr, MEAN: tl.constexpr):
    """Epilogue of an elementwise program: its partial (and count), or with FINAL
    (one program) the loss and scale. Without REDUCE (``none`` forward) program 0
    writes the scale 1."""
    if not BACKWARD:
        if REDUCE:
            total = tl.sum(acc, axis=0)
            count = tl.sum(cnt, axis=0)
            if FINAL:
                _finish(total, count, loss_ptr, scale_ptr, n, MEAN)
            else:
                tl.store(part_ptr + pid, total)
                if COUNT:
                    tl.store(part_ptr + tl.num_programs(0) + pid, count.to(tl.float32))
        else:
            if pid == 0:
                tl.store(scale_ptr, 1.0)


@triton.jit
def _sum_partials_kernel(part_ptr, loss_ptr, scale_ptr, n_partials, n,
                         COUNT: tl.constexpr, MEAN: tl.constexpr, BLOCK: tl.constexpr):
    """Stage two: Σ partials (and Σ counts, int64, exact) in a fixed order, then
    ``_finish``."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    cnt = tl.zeros([BLOCK], dtype=tl.int64)
    for i in range(0, n_partials, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        mask = offs < n_partials
        acc += tl.load(part_ptr + offs, mask=mask, other=0.0)
        if COUNT:
            cnt += tl.load(part_ptr + n_partials + offs, mask=mask, other=0.0).to(tl.int64)
    _finish(tl.sum(acc, axis=0), tl.sum(cnt, axis=0), loss_ptr, scale_ptr, n, MEAN)


def launch_sum_partials(wrap, part, n_partials: int, loss, scale, n: int, count: bool,
                        mean: int):
    """Launch stage two; ``wrap`` is ``torch.library.wrap_triton``."""
    wrap(_sum_partials_kernel)[(1,)](part, loss, scale, n_partials, n,
                                     COUNT=count, MEAN=mean, BLOCK=PARTIAL_BLOCK)


@triton.jit
def _ordered_sums(a_ptr, b_ptr, n, LOAD_B: tl.constexpr, BLOCK: tl.constexpr):
    """(Σ a, Σ b) over n fp32 values, always in the same order. Without LOAD_B,
    Σ b is 0 and ``b_ptr`` may be a placeholder."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    b_acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, n, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        mask = offs < n
        acc += tl.load(a_ptr + offs, mask=mask, other=0.0)
        if LOAD_B:
            b_acc += tl.load(b_ptr + offs, mask=mask, other=0.0)
    return tl.sum(acc, axis=0), tl.sum(b_acc, axis=0)


@triton.jit
def _sum_rows_kernel(rows_ptr, w_ptr, loss_ptr, scale_ptr, n_rows,
                     MEAN: tl.constexpr, HAS_W: tl.constexpr, BLOCK: tl.constexpr):
    """Per-row losses -> loss = Σ rows (÷ Σ w, or ÷ n_rows without w, for mean).

    scale = 1/Σ w for a weighted mean (0 when Σ w = 0: the loss is then 0/0 =
    NaN and the gradient 0, as torch's cross_entropy gives; a negative Σ w divides
    like any other), else 1.
    """
    total, w_sum = _ordered_sums(rows_ptr, w_ptr, n_rows, MEAN and HAS_W, BLOCK)
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

"""Row-wise online softmax shared by the class-index (softmax) losses.

One program owns one row of C logits, read in BLOCK_C chunks: pass one keeps
a running max and sum-exp (so C can reach 128k without spilling registers),
pass two recomputes p_j and writes the gradient. Every loss here has a
gradient of the form

    g_j = c_p·p_j + c_r·(p_j / (1 - p_y)) - c_a·a_j   for j ≠ y,
    g_y = c_y - c_a·a_y

with per-row scalars c_*, so only those scalars differ between losses.
p_j / (1 - p_y) is e_j / s_other, where s_other is the sum-exp of the classes
other than y: it stays in [0, 1] and finite even when 1 - p_y underflows.
g_y is one per-row value, so the loss forms it without cancellation (terms
in 1 - p_y from s_other / s, never as p_y - 1).
"""
import triton
import triton.language as tl

from ._math import LOG2E, fast_rcp, log1p_mid, log_unit


@triton.jit
def class_row_base(row, C, D):
    """Offset of (row, class 0) in a contiguous [N, C, D] tensor; class stride D."""
    n = row // D
    return n * C * D + (row - n * D)


@triton.jit
def online_row_stats(x_ptr, a_ptr, base, stride_c, C, y, HAS_A: tl.constexpr,
                     DOT: tl.constexpr, BLOCK_C: tl.constexpr):
    """(m, s, s_other, ax, a_sum) of one row.

    m: max logit; s = Σ_c exp(x_c - m); s_other: the same without class y.
    With DOT: ax = Σ_c a_c·x_c and a_sum = Σ_c a_c (a_c = 1 without HAS_A),
    else zeros.
    """
    m = tl.full([], float("-inf"), tl.float32)
    s = tl.zeros([], tl.float32)
    s_other = tl.zeros([], tl.float32)
    ax = tl.zeros([], tl.float32)
    a_sum = tl.zeros([], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = cols < C
        x = tl.load(x_ptr + base + cols * stride_c, mask=mask,
                    other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        rescale = tl.exp(m - m_new)
        e = tl.exp(x - m_new)
        s = s * rescale + tl.sum(e, axis=0)
        s_other = s_other * rescale + tl.sum(tl.where(cols == y, 0.0, e), axis=0)
        m = m_new
        if DOT:
            x0 = tl.where(mask, x, 0.0)  # padding is -inf: keep it out of the dot
            if HAS_A:
                a = tl.load(a_ptr + cols, mask=mask, other=0.0).to(tl.float32)
                ax += tl.sum(a * x0, axis=0)
                a_sum += tl.sum(a, axis=0)
            else:
                ax += tl.sum(x0, axis=0)
                a_sum += tl.sum(mask.to(tl.float32), axis=0)
    return m, s, s_other, ax, a_sum


@triton.jit
def write_row_grad(x_ptr, g_ptr, a_ptr, base, stride_c, C, y, m, inv_s, inv_s_other,
                   c_p, c_r, c_a, c_y, live, HAS_A: tl.constexpr, BLOCK_C: tl.constexpr):
    """Pass two: g_j as in the module docstring (a_j = 1 without HAS_A); 0 when
    not ``live`` (an ignored row: a select, so its NaN logits cannot leak)."""
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        mask = cols < C
        x = tl.load(x_ptr + base + cols * stride_c, mask=mask, other=0.0).to(tl.float32)
        e = tl.exp(x - m)
        is_y = cols == y
        ratio = tl.where(e == 0.0, 0.0, tl.minimum(e * inv_s_other, 1.0))
        g = tl.where(is_y, c_y, c_p * (e * inv_s) + c_r * ratio)
        if HAS_A:
            g -= c_a * tl.load(a_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        else:
            g -= c_a
        g = tl.where(live, g, 0.0)
        tl.store(g_ptr + base + cols * stride_c, g.to(g_ptr.dtype.element_ty), mask=mask)


@triton.jit
def target_logit(x_ptr, t_ptr, row, base, stride_c, C):
    """(y clamped into [0, C), x_y, y_in_range, raw target): the index load is
    clamped, so an out-of-range target never reads outside the row."""
    y_raw = tl.load(t_ptr + row).to(tl.int64)
    in_range = (y_raw >= 0) & (y_raw < C)
    y = tl.where(in_range, y_raw, 0)
    x_y = tl.load(x_ptr + base + y * stride_c).to(tl.float32)
    return y, x_y, in_range, y_raw


def block_c(cols: int) -> tuple[int, int]:
    """(BLOCK_C, num_warps) for rows of ``cols`` classes: one chunk up to 4096."""
    block = min(max(triton.next_power_of_2(max(cols, 1)), 16), 4096)
    return block, (4 if block <= 1024 else 8)


# -- several rows per program (C <= TILE_MAX_C) ---------------------------------
# A [ROWS, BLOCK_C] tile of whole rows stays in registers: the row is read once,
# exp is taken once per element (e = exp(x - m) feeds both the sums and the
# gradient), and short rows share a program instead of idling most of its lanes.
# Above TILE_MAX_C one row alone fills the tile (BLOCK_C = 4096 is already 16
# fp32 values per thread of 8 warps; more would spill), so the online kernels,
# which stream a row of any length in BLOCK_C chunks, keep those.
TILE_MAX_C = 2048
TILE_ELEMS = 4096     # ROWS * BLOCK_C
TILE_WARPS = 8
FILL_PROGRAMS = 2048  # a program takes more row tiles only while as many programs remain
MAX_TILES = 16
WEIGHT_BLOCK = 4096   # targets per step of the divisor pre-pass


def tile_shape(cols: int) -> tuple[int, int, int]:
    """(ROWS, BLOCK_C, num_warps) of the multi-row kernels for rows of ``cols`` classes."""
    block = max(triton.next_power_of_2(max(cols, 1)), 4)
    rows = max(TILE_ELEMS // block, 1)
    return rows, block, (TILE_WARPS if rows * block >= 2048 else 4)


def tiles_per_program(n_rows: int, rows_per_tile: int) -> int:
    """Row tiles per program: a power of two <= MAX_TILES, more only while the grid
    still fills the GPU. A function of the shape alone (determinism)."""
    n_tiles = triton.cdiv(n_rows, rows_per_tile)
    tiles = 1
    while tiles < MAX_TILES and n_tiles >= 2 * tiles * FILL_PROGRAMS:
        tiles *= 2
    return tiles


@triton.jit
def tile_rows(x_ptr, t_ptr, tile, N, C, D, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """``(row, live, base, cols, mask, x, y, y_raw, in_range, x_y)`` of row tile ``tile``:
    int64 rows and their offsets, the [ROWS, BLOCK_C] fp32 logits (-inf on
    padding), the clamped target (see ``target_logit``) and its logit."""
    row = tile * ROWS + tl.arange(0, ROWS).to(tl.int64)
    live = row < N
    base = class_row_base(row, C, D)
    cols = tl.arange(0, BLOCK_C)
    mask = live[:, None] & (cols < C)[None, :]
    x = tl.load(x_ptr + base[:, None] + (cols * D)[None, :], mask=mask,
                other=float("-inf")).to(tl.float32)
    y_raw = tl.load(t_ptr + row, mask=live, other=0).to(tl.int64)
    in_range = (y_raw >= 0) & (y_raw < C)
    y = tl.where(in_range, y_raw, 0)
    x_y = tl.load(x_ptr + base + y * D, mask=live, other=0.0).to(tl.float32)
    return row, live, base, cols, mask, x, y, y_raw, in_range, x_y


@triton.jit
def tile_softmax(x, live, is_y):
    """``(m, e, s, s_other)``: row max, e = exp(x - m) ([ROWS, BLOCK_C], 0 on
    padding), Σ e and Σ e without class y. Dead rows get m = 0 (no NaN)."""
    m = tl.where(live, tl.max(x, axis=1), 0.0)
    e = tl.exp2((x - m[:, None]) * LOG2E)
    s = tl.sum(e, axis=1)
    s_other = tl.sum(tl.where(is_y, 0.0, e), axis=1)
    return m, e, s, s_other


@triton.jit
def tile_grad(e, is_y, inv_s, s_other, c_p, c_r, c_y):
    """g_j (module docstring) without the α term, from the tile's e.

    e_j ≤ s_other for j ≠ y, so with 1/s_other taken as 0 when s_other = 0 the
    ratio e_j/s_other is 0 there, not NaN; min(·, 1) absorbs the rounding."""
    inv_o = tl.where(s_other > 0.0, 1.0 / s_other, 0.0)
    ratio = tl.minimum(e * inv_o[:, None], 1.0)
    g = e * (c_p * inv_s)[:, None] + c_r[:, None] * ratio
    return tl.where(is_y, c_y[:, None], g)


@triton.jit
def _row_weight_sum_kernel(t_ptr, a_ptr, den_ptr, N, C, ignore, HAS_A: tl.constexpr,
                           HAS_IGNORE: tl.constexpr, BLOCK: tl.constexpr):
    """The mean's divisor from the targets alone: den = [Σ α_y, 1/Σ α_y (0 when
    Σ = 0)] over the kept rows (α_y = 1 without HAS_A; an out-of-range target
    weighs α_0, as in the kernels). One program, a fixed order."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, N, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        keep = offs < N
        y = tl.load(t_ptr + offs, mask=keep, other=0).to(tl.int64)
        if HAS_IGNORE:
            keep = keep & (y != ignore)
        if HAS_A:
            y = tl.where((y >= 0) & (y < C), y, 0)
            acc += tl.load(a_ptr + y, mask=keep, other=0.0).to(tl.float32)
        else:
            acc += keep.to(tl.float32)
    total = tl.sum(acc, axis=0)
    tl.store(den_ptr, total)
    tl.store(den_ptr + 1, tl.where(total != 0.0, 1.0 / total, 0.0))


def launch_row_weights(wrap, target, alpha, cols: int, ignore, den):
    """Fill ``den`` (2 fp32) with the mean's divisor and its inverse, on the device."""
    t = target.reshape(-1)
    wrap(_row_weight_sum_kernel)[(1,)](
        t, t if alpha is None else alpha, den, t.numel(), cols,
        int(ignore if ignore is not None else 0), HAS_A=alpha is not None,
        HAS_IGNORE=ignore is not None, BLOCK=WEIGHT_BLOCK, num_warps=8)


@triton.jit
def _finish_rows_kernel(part_ptr, den_ptr, loss_ptr, scale_ptr, n_part, n_rows,
                        MEAN: tl.constexpr, BLOCK: tl.constexpr):
    """loss = Σ partials (fixed order) ÷ (1, n_rows, or den[0] as MEAN = 0, 1, 2);
    scale = 1: the forward's gradient already holds the divisor (0/0 = NaN loss
    with a 0 gradient when nothing is kept, as torch's cross_entropy gives)."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, n_part, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        acc += tl.load(part_ptr + offs, mask=offs < n_part, other=0.0)
    total = tl.sum(acc, axis=0)
    if MEAN == 1:
        total = total / (tl.full([], 1.0, tl.float32) * n_rows)
    if MEAN == 2:
        total = total / tl.load(den_ptr)
    tl.store(loss_ptr, total.to(loss_ptr.dtype.element_ty))
    tl.store(scale_ptr, 1.0)


def launch_finish_rows(wrap, part, n_part: int, den, loss, scale, n_rows: int, mean: int):
    wrap(_finish_rows_kernel)[(1,)](part, part if den is None else den, loss, scale, n_part,
                                    n_rows, MEAN=mean, BLOCK=1024)


@triton.jit
def log_p_target(x_y, m, log_s, s_other):
    """log p_y without cancellation: for p_y >= 1/2 (e_y >= s_other) it is
    -log1p(s_other / e_y), keeping its digits as p_y -> 1 where
    x_y - m - log s would lose them; else x_y - m - log s (|log p_y| > ln 2)."""
    r = s_other * fast_rcp(tl.exp2((x_y - m) * LOG2E))
    near = -log1p_mid(tl.minimum(r, 1.0))
    return tl.where(r <= 1.0, near, tl.minimum(x_y - m - log_s, 0.0))


@triton.jit
def row_logs(s, s_other):
    """(log s, log s_other) of the per-row sums with ``lg2.approx`` on the GPU
    (absolute error ~2e-7: both feed differences or exponents, never a log1p
    of a tiny value); log 0 = -inf (every other class underflowed)."""
    log_s = log_unit(s, True) + (s - s)  # + 0, or NaN from a NaN logit (the split path's bits)
    log_o = tl.where(s_other > 0.0, log_unit(tl.maximum(s_other, 1e-38), True), float("-inf"))
    return log_s, log_o

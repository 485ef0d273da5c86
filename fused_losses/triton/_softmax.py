"""Row-wise online softmax shared by the class-index (softmax) losses.

One program owns one row of C logits, read in BLOCK_C chunks: pass one keeps
a running max and sum-exp (so C can reach 128k without spilling registers),
pass two recomputes p_j and writes the gradient. Every loss here has a
gradient of the form

    g_j = c_p·p_j + c_r·(p_j / (1 - p_y))·[j ≠ y] - c_a·a_j + c_y·[j = y]

with per-row scalars c_*, so only those scalars differ between losses.
p_j / (1 - p_y) is e_j / s_other, where s_other is the sum-exp of the classes
other than y: it stays in [0, 1] and finite even when 1 - p_y underflows.
"""
import triton
import triton.language as tl


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
        ratio = tl.where(is_y | (e == 0.0), 0.0, tl.minimum(e * inv_s_other, 1.0))
        g = c_p * (e * inv_s) + c_r * ratio + tl.where(is_y, c_y, 0.0)
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


@triton.jit
def store_row(rows_ptr, w_ptr, row, loss, w, WRITE_W: tl.constexpr):
    """The forward's per-row outputs: the loss and, for a weighted mean, its weight."""
    tl.store(rows_ptr + row, loss.to(rows_ptr.dtype.element_ty))
    if WRITE_W:
        tl.store(w_ptr + row, w)

"""Elementwise maths shared by every Triton kernel (fp32 in, fp32 out)."""
import triton
import triton.language as tl


@triton.jit
def log1p_fp32(e):
    """log(1 + e), accurate for tiny |e| (Goldberg's trick: no libdevice needed)."""
    u = 1.0 + e
    d = u - 1.0
    return tl.where(d == 0.0, e, tl.log(u) * (e / d))


@triton.jit
def sigmoid_terms(x):
    """``(log σ(x), log σ(-x), σ(x), σ(-x))`` from one exp and one log.

    Built on e = exp(-|x|) ≤ 1, so nothing overflows for any finite x and
    σ(-x) never suffers the cancellation of 1 - σ(x).
    """
    e = tl.exp(-tl.abs(x))
    softplus_neg_abs = log1p_fp32(e)
    log_p = tl.minimum(x, 0.0) - softplus_neg_abs
    log_n = -tl.maximum(x, 0.0) - softplus_neg_abs
    big = 1.0 / (1.0 + e)
    small = e * big
    pos = x >= 0.0
    return log_p, log_n, tl.where(pos, big, small), tl.where(pos, small, big)


@triton.jit
def log_add_exp(a, b):
    """log(exp a + exp b), exact when one side is -inf."""
    m = tl.maximum(a, b)
    return m + log1p_fp32(tl.exp(-tl.abs(a - b)))


@triton.jit
def focal_factor(log_p, log_n, s_p, s_n, t, gamma, HARD: tl.constexpr):
    """``(f, r)`` with f = (1-p_t)^γ and r = σ(x)σ(-x)/(1-p_t).

    d f/dx = γ·f·(1-2t)·r. For hard targets 1-p_t is σ(-x) or σ(x) and r is
    the other sigmoid; soft targets go through logs, so r never is 0/0.
    """
    if HARD:
        one = t > 0.5
        log_q = tl.where(one, log_n, log_p)
        r = tl.where(one, s_p, s_n)
    else:
        log_q = log_add_exp(log_p + log1p_fp32(-t), log_n + tl.log(t))
        r = tl.exp(log_p + log_n - log_q)
    return tl.exp(gamma * log_q), r


@triton.jit
def row_col(start, C, inv_c, BLOCK: tl.constexpr, SMALL_C: tl.constexpr):
    """Row and column of the flat offsets ``start + arange(BLOCK)`` in a [R, C] view.

    One scalar division per program; per element either a single wrap test
    (C >= BLOCK) or a float reciprocal estimate corrected to the exact value.
    """
    r0 = start // C
    # Offsets inside the program fit int32 (k < C + BLOCK); only the row base is
    # int64. int64 vector maths here cost registers and occupancy.
    c32 = tl.cast(C, tl.int32)
    k = (start - r0 * C).to(tl.int32) + tl.arange(0, BLOCK)
    if SMALL_C:
        dr = (k.to(tl.float32) * tl.cast(inv_c, tl.float32)).to(tl.int32)
        dr = tl.where(k - dr * c32 >= c32, dr + 1, dr)
        dr = tl.where(k - dr * c32 < 0, dr - 1, dr)
        return r0 + dr, k - dr * c32
    dr = (k >= c32).to(tl.int32)
    return r0 + dr, k - dr * c32


@triton.jit
def load_xt(x_ptr, t_ptr, start, numel, BLOCK: tl.constexpr):
    """``(x, t, offs, mask)``: fp32 logits and targets of the elementwise tile at
    flat offset ``start`` (0 on padding)."""
    offs = start + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + offs, mask=mask, other=0).to(tl.float32)
    return x, t, offs, mask


@triton.jit
def load_rc(ptr, row, col, stride_r, stride_c, mask):
    """Load an operand broadcast to [R, C] through (row, column) strides, as fp32."""
    return tl.load(ptr + row * stride_r + col * stride_c, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def rescale_rc(loss, grad, ptr, row, col, stride_r, stride_c, mask):
    """``(loss·w, grad·w)``: a per-element weight w, broadcast as in ``load_rc``,
    is a constant factor of the loss, so it scales the gradient alike."""
    w = load_rc(ptr, row, col, stride_r, stride_c, mask)
    return loss * w, grad * w


@triton.jit
def adjusted_sigmoid(x, alpha, ALPHA_ZERO: tl.constexpr):
    """``(p̃, d p̃/dx)`` with p̃ = (1-p)^α·p, p = σ(x).

    d p̃/dx = p(1-p)·[(1-p)^α - α·p·(1-p)^(α-1)] = p̃·(σ(-x) - α·σ(x)): no
    division by 1-p, so it stays finite for α < 1 as p → 1. (1-p)^α is
    exp(α·log σ(-x)), finite for every finite x.
    """
    log_p, log_n, s_p, s_n = sigmoid_terms(x)
    if ALPHA_ZERO:
        return s_p, s_p * s_n
    pt = tl.exp(log_p + alpha * log_n)
    return pt, pt * (s_n - alpha * s_p)

"""Elementwise maths and tile addressing shared by every Triton kernel (fp32).

Fast, interpreter-identical transcendentals: only ``tl.exp2`` (one
``ex2.approx.ftz`` on sm_90), ``/`` (``div.full.f32``, 2 ulp), bit casts and
FMAs; no libdevice ``log``. Logs come from ``log1p_mid`` (an atanh series,
relative error 4e-7 in fp32 for v in [-1/2, 1]), or ``log_unit`` for any
positive value (exponent split + ``log1p_mid``).

Operand addressing (``_launch.operand_mode``): an operand broadcast to the
[R, C] logits is absent (NONE), one value (SCALAR, loaded once per program),
a contiguous per-class [C] vector (CLASS, addressed by column alone in int32,
the column advanced incrementally from tile to tile) or anything else
(GENERAL, int64 row/column strides).
"""
import os

import triton
import triton.language as tl

# PTX inline asm on the GPU; the interpreter (which cannot run asm) divides exactly.
_ASM = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def fast_rcp(v):
    """1/v for normal v: one ``rcp.approx.ftz.f32`` (1 ulp) on the GPU, where
    ``1.0 / v`` would be ``div.full.f32`` with its range fix-ups (~8 instructions)."""
    if _ASM:
        r = tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [v],
                                      dtype=tl.float32, is_pure=True, pack=1)
    else:
        r = 1.0 / v
    return r


@triton.jit
def log1p_mid(v):
    """log(1 + v) for v in [-1/2, 1], relative error 4e-7 (no cancellation near 0).

    log(1+v) = 2·atanh(s), s = v/(2+v) in [-1/3, 1/3]; 2·atanh(s)/s is a degree-3
    polynomial in u = s² on [0, 1/9], constant term 2 (relative fit error 1.9e-7).
    """
    s = v * fast_rcp(2.0 + v)
    u = s * s
    p = 0.33983558416366577 * u + 0.39635971188545227
    p = p * u + 0.6667348146438599
    p = p * u + 2.0
    return s * p


@triton.jit
def log_unit(v, DENORMAL: tl.constexpr):
    """ln v for finite v > 0 (normal numbers; also subnormal ones with DENORMAL),
    absolute error ~2e-7: for logs that are scaled (a power's exponent) or far
    from 0 (|ln v| > 0.1), never for the log1p of a tiny value.

    GPU: ``lg2.approx`` (absolute error 2^-22 in log2) times ln 2. Interpreter:
    v = m·2^k with m in [1/2, 1), ln v = log1p(m - 1) + k·ln 2, m - 1 exact.
    """
    if _ASM:
        if DENORMAL:
            r = tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [v],
                                          dtype=tl.float32, is_pure=True, pack=1)
        else:
            r = tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [v],
                                          dtype=tl.float32, is_pure=True, pack=1)
        r = r * LN2
    else:
        r = _log_split(v, DENORMAL)
    return r


@triton.jit
def _log_split(v, DENORMAL: tl.constexpr):
    """``log_unit`` in plain arithmetic: exponent split plus ``log1p_mid``."""
    k0 = 0
    if DENORMAL:
        tiny = v < 1.1754943508222875e-38
        v = tl.where(tiny, v * 16777216.0, v)
        k0 = tl.where(tiny, 24, 0)
    bits = v.to(tl.int32, bitcast=True)
    m = ((bits & 0x007FFFFF) | 0x3F000000).to(tl.float32, bitcast=True)
    k = ((bits >> 23) - 126 - k0).to(tl.float32)
    return log1p_mid(m - 1.0) + k * LN2


@triton.jit
def sigmoid_parts(x):
    """``(e, σ(x), σ(-x))`` with e = exp(-|x|) in [0, 1]: one ex2, one division.

    σ of the logit's sign is 1/(1+e), the other e/(1+e): no overflow, and
    σ(-x) never suffers the cancellation of 1 - σ(x).
    """
    e = tl.exp2(-tl.abs(x) * LOG2E)
    big = fast_rcp(1.0 + e)
    small = e * big
    pos = x >= 0.0
    return e, tl.where(pos, big, small), tl.where(pos, small, big)


@triton.jit
def sigmoid_terms(x):
    """``(log σ(x), log σ(-x), σ(x), σ(-x))``: ``sigmoid_parts`` plus one log1p."""
    e, s_p, s_n = sigmoid_parts(x)
    l1p = log1p_mid(e)
    return -(tl.maximum(-x, 0.0) + l1p), -(tl.maximum(x, 0.0) + l1p), s_p, s_n


@triton.jit
def ipow(b, N: tl.constexpr):
    """b^N for a constexpr integer 0 <= N < 16 by squaring (b^0 = 1, also for b = 0)."""
    r = tl.full(b.shape, 1.0, tl.float32)
    p = b
    for i in tl.static_range(4):
        if (N >> i) & 1:
            r = r * p
        if (N >> (i + 1)) > 0:
            p = p * p
    return r


@triton.jit
def pow_log(b, log_b, gamma, G: tl.constexpr):
    """b^γ for b >= 0: by multiplication when G = γ is a small integer (G >= 0),
    else exp(γ·ln b) from ``log_b`` (0 where b = 0, 1 there when γ = 0)."""
    if G >= 0:
        f = ipow(b, G)
    else:
        f = tl.where(b > 0.0, tl.exp2((gamma * LOG2E) * log_b),
                     tl.where(gamma == 0.0, 1.0, 0.0))
    return f


@triton.jit
def tile_cols(first, C, inv_c, BLOCK: tl.constexpr):
    """``(c0, step, jc)``: column of the program's first element, BLOCK mod C, and
    j mod C for j = arange(BLOCK) (int32, exact: a float estimate corrected once
    each way). Column of lane j of a tile whose first column is c0:
    ``wrap_col(c0 + jc, C)``."""
    c32 = tl.cast(C, tl.int32)
    c0 = (first % C).to(tl.int32)
    j = tl.arange(0, BLOCK)
    q = (j.to(tl.float32) * tl.cast(inv_c, tl.float32)).to(tl.int32)
    q = tl.where(j - q * c32 >= c32, q + 1, q)
    q = tl.where(j - q * c32 < 0, q - 1, q)
    return c0, BLOCK % c32, j - q * c32


@triton.jit
def wrap_col(c, C):
    """c mod C for 0 <= c < 2C, as uint32: min(c, c - C) unsigned (c - C wraps
    above c while c < C); unsigned offsets also address in one IMAD.WIDE.U32."""
    return tl.minimum(c.to(tl.uint32), (c - tl.cast(C, tl.int32)).to(tl.uint32))


@triton.jit
def row_col(start, C, inv_c, BLOCK: tl.constexpr, SMALL_C: tl.constexpr):
    """Row and column of the flat offsets ``start + arange(BLOCK)`` in a [R, C] view.

    One scalar division per program; per element either a single wrap test
    (C >= BLOCK) or a float reciprocal estimate corrected to the exact value.
    """
    r0 = start // C
    # Offsets inside the tile fit int32 (k < C + BLOCK); only the row base is int64.
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
def operand_scalar(ptr, MODE: tl.constexpr):
    """The value of a SCALAR operand (1 otherwise), read once per program."""
    v = tl.full([], 1.0, tl.float32)
    if MODE == 1:
        v = tl.load(ptr).to(tl.float32)
    return v


@triton.jit
def operand_tile(ptr, value, col, start, C, inv_c, s_r, s_c, mask, MODE: tl.constexpr,
                 SMALL_C: tl.constexpr, BLOCK: tl.constexpr):
    """An operand's fp32 values on the tile at flat offset ``start``; ``value``
    from ``operand_scalar``, ``col`` the int32 columns (used by CLASS: always in
    [0, C), so that load needs no mask)."""
    v = value
    if MODE == 2:
        v = tl.load(ptr + col).to(tl.float32)
    if MODE == 3:
        row, c = row_col(start, C, inv_c, BLOCK, SMALL_C)
        v = tl.load(ptr + row * s_r + c * s_c, mask=mask, other=0.0).to(tl.float32)
    return v


@triton.jit
def load_tile(x_ptr, t_ptr, start, numel, BLOCK: tl.constexpr, X_PAD: tl.constexpr = 0.0):
    """``(x, t, lane, mask)`` of the tile at flat offset ``start``: fp32 logits
    (X_PAD on padding), raw targets (0 there), int32 lanes and the in-range
    mask. The int64 offset goes into the base pointers once; lanes and the mask
    stay int32."""
    lane = tl.arange(0, BLOCK)
    mask = lane < tl.minimum(numel - start, BLOCK).to(tl.int32)
    x = tl.load(x_ptr + start + lane, mask=mask, other=X_PAD).to(tl.float32)
    # At most 4 targets per thread access, like the fp32 logits: the same register
    # layout, no shuffle through shared memory between the two.
    t = tl.load(t_ptr + start + tl.max_contiguous(lane, 4), mask=mask, other=0)
    return x, t, lane, mask


@triton.jit
def all_hard(t):
    """True when every (fp32) target of the tile is exactly 0 or 1: the tile may
    take the hard-target path (one scalar test, a uniform branch)."""
    return tl.min(tl.abs(t - 0.5), axis=0) >= 0.5


# -- older helpers, used by GHM-C and dice --------------------------------------
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
def adjusted_sigmoid(x, alpha, ALPHA_ZERO: tl.constexpr):
    """``(p̃, d p̃/dx)`` with p̃ = (1-p)^α·p, p = σ(x).

    d p̃/dx = p(1-p)·[(1-p)^α - α·p·(1-p)^(α-1)] = p̃·(σ(-x) - α·σ(x)): no
    division by 1-p, so it stays finite for α < 1 as p → 1. (1-p)^α is
    exp(α·log σ(-x)), finite for every finite x.
    """
    log_p, log_n, s_p, s_n = sigmoid_terms(x)
    if ALPHA_ZERO:
        return s_p, s_p * s_n
    pt = tl.exp2((log_p + alpha * log_n) * LOG2E)
    return pt, pt * (s_n - alpha * s_p)

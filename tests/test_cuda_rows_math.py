"""The per-row maths of the CUDA warp-row kernels (softmax focal, DSC), run on the CPU.

No GPU here: tests/cuda_host_rows.cu includes csrc/cuda/rows_math.cuh (the
row losses' per-row maths on the fast ex2/lg2/rcp helpers) and repeats the
statistics and the gradient form of csrc/cuda/rows_warp.cuh warp_row: m,
e'_j = exp(x_j - m)·[j ≠ y], s_other = Σ e', s = s_other + e_y, then
g_j = e'_j·k1 - c_a·a_j and g_y = c_y - c_a·a_y. It is built with nvcc three
times, every approximate instruction pushed up, down or not at all by its
documented worst-case error (FUSED_LOSSES_HOST_ERR). Each row's loss and
gradient ([C] per row) is compared with the float64 reference
(fused_losses/reference, reduction="none") within 2e-5 relative, plus 1e-30
absolute, plus the reference's own change under a 2^-22 relative nudge of the
row (its fp32 conditioning), plus REF_ABS: the float64 reference itself rounds
log(1 + tiny) and p_y - 1 near p_y = 1 to ~1e-16 absolute (at a loss of
1.4e-12 it is 6e-5 relative off; the kernel maths is 2e-7 off there). Terms
that cancel in fp32 where the nudge cannot see it (zero logits, C = 1) give
absolute slack 2e-5 of their size: the label smoothing's ε·max α (loss and
gradient: a_sum·lse - Σ a·x is 0 at C = 1), DSC's K = (2+s)/den²·p·q^α·(q - α·p)
at its two terms' size (0 at q = α·p), and for the gradient the row's largest |g|.
"""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from fused_losses.reference.dsc import dsc as ref_dsc
from fused_losses.reference.softmax_focal import softmax_focal as ref_focal

from test_cuda_compile import HOST_ERRS as ERRS, NVCC, ROOT, host_builds

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found: host row maths not built")

RTOL, FLOOR, NUDGE, REF_ABS = 2e-5, 1e-30, 2.0 ** -22, 64 * 2.0 ** -52


def _rows():
    """(x [C] fp32-exact, y): random rows of several sizes and scales, a
    confident row (p_y -> 1), a hopeless one (p_y -> 0), ±1e4 logits, ties."""
    g = torch.Generator().manual_seed(14)
    out = []
    for c in (1, 2, 5, 37, 270):
        for scale in (0.5, 4.0, 30.0):
            x = torch.randn(c, generator=g, dtype=torch.float64) * scale
            out.append((x, int(torch.randint(0, c, (1,), generator=g))))
        if c > 1:
            x = torch.randn(c, generator=g, dtype=torch.float64)
            y = c // 2
            confident, hopeless = x.clone(), x.clone()
            confident[y] += 25.0
            hopeless[y] -= 25.0
            big = torch.where(torch.arange(c) % 2 == 0, 1e4, -1e4).to(torch.float64)
            out += [(confident, y), (hopeless, y), (big, 0), (big, 1), (torch.zeros(c), c - 1)]
    return [(x.to(torch.float32).to(torch.float64), y) for x, y in out]


ROWS = _rows()
FOCAL = [dict(gamma=g, label_smoothing=e, alpha=a) for g in (0.0, 0.5, 2.0, 3.7)
         for e in (0.0, 0.1) for a in (False, True)]
DSC = [dict(alpha=a, smooth=s) for a in (0.0, 0.3, 1.0) for s in (0.0, 1.0)]


def _alpha(c):
    return torch.linspace(0.1, 1.0, c, dtype=torch.float64).to(torch.float32).to(torch.float64)


def _ref(kind, x, y, kw):
    """(loss, grad [C]) of the float64 reference for one row."""
    x = x.clone().requires_grad_(True)
    t = torch.tensor([y])
    if kind == "focal":
        a = _alpha(x.numel()) if kw["alpha"] else None
        loss = ref_focal(x[None], t, gamma=kw["gamma"], alpha=a, ignore_index=None,
                         label_smoothing=kw["label_smoothing"], reduction="none")
    else:
        loss = ref_dsc(x[None], t, alpha=kw["alpha"], smooth=kw["smooth"], reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return float(loss.detach()), grad.numpy()


def _terms(kind, x, y, kw):
    """Size of the terms that cancel in fp32 (see the module docstring)."""
    if kind == "focal":
        return kw["label_smoothing"]  # ε·max α, α <= 1
    p = float(torch.softmax(x, 0)[y])
    q = 1.0 - p
    return (2.0 + kw["smooth"]) / (1.0 + kw["smooth"]) ** 2 * p * q ** kw["alpha"] * (
        q + kw["alpha"] * p)


def _line(kind, x, y, kw):
    xs = " ".join(repr(float(v)) for v in x)
    if kind == "dsc":
        return f"dsc {x.numel()} {y} {kw['alpha']!r} {kw['smooth']!r} {xs}"
    a = (" ".join(repr(float(v)) for v in _alpha(x.numel()))) if kw["alpha"] else ""
    return (f"focal {x.numel()} {y} {kw['gamma']!r} {float(np.float32(kw['label_smoothing']))!r}"
            f" {int(kw['alpha'])} {a} {xs}")


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    """{host error sign: executable}, built in parallel."""
    return host_builds(tmp_path_factory.mktemp("hostrows"), "cuda_host_rows.cu")


def _check(kind, configs, binaries):
    lines, expect = [], []
    for kw in configs:
        for x, y in ROWS:
            ref = _ref(kind, x, y, kw)
            bumps = [_ref(kind, x * (1 + s * NUDGE), y, kw) for s in (1, -1)]
            cond_loss = max(abs(b[0] - ref[0]) for b in bumps)
            cond_grad = np.max([np.abs(b[1] - ref[1]) for b in bumps], axis=0)
            lines.append(_line(kind, x, y, kw))
            expect.append((kw, x.numel(), y, ref, cond_loss, cond_grad, _terms(kind, x, y, kw)))
    worst = worst_g = 0.0
    for err, exe in binaries.items():
        res = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True,
                             text=True, timeout=300, check=True)
        out = res.stdout.splitlines()
        assert len(out) == len(lines)
        bad = []
        for got_line, (kw, c, y, (loss, grad), cl, cg, terms) in zip(out, expect):
            got = np.array([float(v) for v in got_line.split()])
            assert got.size == c + 1
            slack = FLOOR + REF_ABS + RTOL * (terms if kind == "focal" else 0.0)
            if not abs(got[0] - loss) <= RTOL * abs(loss) + slack + cl:
                bad.append(f"{kw} C={c} y={y} loss: got {got[0]!r}, ref {loss!r}")
            elif loss != 0 and cl + REF_ABS <= RTOL * abs(loss):  # well-conditioned
                worst = max(worst, abs(got[0] - loss) / abs(loss))
            tol = (RTOL * np.abs(grad) + FLOOR + REF_ABS + cg
                   + RTOL * max(np.max(np.abs(grad)), terms))
            top = np.max(np.abs(grad))
            if top > 0 and np.max(cg) + REF_ABS <= RTOL * top:  # relative to the row's largest
                worst_g = max(worst_g, float(np.max(np.abs(got[1:] - grad))) / top)
            miss = ~(np.abs(got[1:] - grad) <= tol)
            if miss.any():
                j = int(np.argmax(miss))
                bad.append(f"{kw} C={c} y={y} grad[{j}]: got {got[1 + j]!r}, ref {grad[j]!r}")
        assert not bad, (f"host error sign {err}: {len(bad)} mismatches, e.g.\n"
                         + "\n".join(bad[:12]))
    return worst, worst_g


def test_focal_rows_match_float64(binaries):
    worst, worst_g = _check("focal", FOCAL, binaries)
    print(f"softmax focal rows: max relative error: loss {worst:.3g}, gradient {worst_g:.3g}")


def test_dsc_rows_match_float64(binaries):
    worst, worst_g = _check("dsc", DSC, binaries)
    print(f"dsc rows: max relative error: loss {worst:.3g}, gradient {worst_g:.3g}")


def test_rows_cover_the_hard_cases():
    """The confident rows reach p_y -> 1 (the log1p path of log_p_target)."""
    x, y = next((x, y) for x, y in ROWS if x.numel() == 37 and x[y] - x.max() == 0)
    assert math.exp(float(torch.log_softmax(x, 0)[y])) > 1 - 1e-9

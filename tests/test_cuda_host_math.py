"""The CUDA focal BCE / ASL maths and the skeleton's index walk, run on the CPU.

No GPU here: tests/cuda_host_math.cu includes the host-callable maths of
csrc/cuda/focal_bce.cuh, asl.cuh and walk.cuh, built with nvcc three times,
with every approximate device instruction (ex2/lg2/rcp .approx) emulated at
its documented worst-case error pushed up, down, or not at all
(FUSED_LOSSES_HOST_ERR, csrc/cuda/fast_math.cuh). Each element's loss and
gradient is compared with the float64 reference (fused_losses/reference)
within 2e-5 relative, plus 1e-30 absolute, plus the reference's own change
under a 2^-22 relative nudge of x (and of a soft t): the fp32 conditioning of
the point, where any fp32 implementation cancels (ASL's d = σ(x) - clip near
the clip, a soft target's σ(x) - t near σ(x) = t). The reported maximum
relative error is over the well-conditioned points.
"""
import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fused_losses.reference.asl import asl as ref_asl
from fused_losses.reference.focal_bce import focal_bce as ref_focal

from test_cuda_compile import HOST_ERRS as ERRS, NVCC, ROOT, host_builds

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found: host maths not built")

RTOL, FLOOR, NUDGE = 2e-5, 1e-30, 2.0 ** -22
XS = [0.0, 1e-30, -1e-30, 1e-7, -1e-7, 0.01, -0.01, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 2.9,
      -2.9, -3.0, 5.0, -5.0, 10.0, -10.0, 20.0, -20.0, 50.0, -50.0, 87.0, -87.0, 88.0, -88.0,
      100.0, -100.0, 1e4, -1e4]
XS = [float(np.float32(x)) for x in XS]
SOFT = [float(np.float32(t)) for t in (0.0, 0.05, 0.3, 0.5, 0.9, 1.0)]


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    """{host error sign: executable}."""
    d = tmp_path_factory.mktemp("hostmath")
    subprocess.run([sys.executable, str(ROOT / "fused_losses" / "_codegen.py"), str(d / "gen")],
                   check=True, capture_output=True, text=True, timeout=120)
    return host_builds(d, "cuda_host_math.cu", ("-diag-suppress", "20013", "-I", str(d / "gen")))


def run(exe: Path, lines: list[str]) -> list[str]:
    res = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True,
                         text=True, timeout=600, check=True)
    return res.stdout.splitlines()


def f32(v):
    return v if v is None or math.isnan(v) else float(np.float32(v))


def ref_values(fn, xs, ts, hard, kw):
    """(loss, d loss/dx) per element of the float64 reference, reduction="none"."""
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(ts, dtype=torch.int64 if hard else torch.float64)
    loss = fn(x, t, reduction="none", **kw)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach().numpy(), grad.numpy()


def compare(case_fn, configs, binaries):
    """configs: (line prefix per element -> str, reference kwargs, hard, ts, scale).
    Returns the max relative error (over |ref| >= 1e-30) and asserts the bound."""
    worst = 0.0
    lines, expect = [], []
    for prefix, kw, hard, ts, scale in configs:
        grid = list(itertools.product(XS, ts))
        xs, tt = [g[0] for g in grid], [g[1] for g in grid]
        ref = ref_values(case_fn, xs, tt, hard, kw)
        bumps = [ref_values(case_fn, [x * (1 + s * NUDGE) for x in xs], tt, hard, kw)
                 for s in (1, -1)]
        if not hard:
            bumps += [ref_values(case_fn, xs, [t * (1 + s * NUDGE) for t in tt], hard, kw)
                      for s in (1, -1)]
        for j, (x, t) in enumerate(grid):
            lines.append(f"{prefix} {x!r} {t!r}")
            vals = []
            for k in range(2):
                r = ref[k][j] * scale
                cond = max(abs(b[k][j] - ref[k][j]) for b in bumps) * scale
                vals.append((r, cond))
            expect.append((prefix, x, t, vals))
    for err, exe in binaries.items():
        out = run(exe, lines)
        assert len(out) == len(lines)
        bad = []
        for line, (prefix, x, t, vals) in zip(out, expect):
            got = [float(v) for v in line.split()]
            if prefix.split()[1].startswith("m"):  # a mixed tile: the path it took
                want = prefix.split()[2] == "fb" and t in (0.0, 1.0)
                if len(got) != 3 or got[2] != float(want):
                    bad.append(f"{prefix} x={x} t={t}: verdict {got[2:]}, want {int(want)}")
                got = got[:2]
            for what, g, (r, cond) in zip(("loss", "grad"), got, vals):
                if what == "grad" and _ref_grad_inexact(prefix, x):
                    continue
                diff = abs(g - r)
                if not diff <= RTOL * abs(r) + FLOOR + cond:
                    bad.append(f"{prefix} x={x} t={t} {what}: got {g!r}, ref {r!r}, cond {cond:.3g}")
                if abs(r) >= FLOOR and cond <= RTOL * abs(r):
                    worst = max(worst, diff / abs(r))
        assert not bad, f"host error sign {err}: {len(bad)} mismatches, e.g.\n" + "\n".join(bad[:15])
    return worst


def _ref_grad_inexact(prefix: str, x: float) -> bool:
    """ASL's undetached focal gradient through d = σ(x) - clip: for x > 36
    torch's float64 sigmoid backward σ(1-σ) rounds to 0 (σ rounds to 1), so
    the reference drops a term of ~e^-x that the kernel keeps."""
    return prefix.startswith("asl") and prefix.split()[7] == "0" and x > 36


def _nan(v):
    return "nan" if v is None else repr(f32(v))


def focal_configs():
    for gamma, alpha, pw, w in itertools.product((0.0, 0.5, 1.0, 2.0, 3.7), (None, 0.25),
                                                 (1.0, 2.5), (1.0, 0.7)):
        kw = dict(gamma=f32(gamma), alpha=f32(alpha))
        n = 3 if (pw, w) == (2.5, 0.7) else 0  # a mean over 3 folds 1/3 in
        per = dict(pos_weight=torch.tensor(f32(pw), dtype=torch.float64),
                   weight=torch.tensor(f32(w), dtype=torch.float64))
        plans = ["gen", "hr"] + (["h0"] if gamma == 0 else ["h2"] if gamma == 2 else [])
        for plan in plans:
            yield (f"focal {plan} i {gamma!r} {_nan(alpha)} 0 nan {_nan(pw)} {_nan(w)} {n}",
                   {**kw, **per}, True, [0.0, 1.0], 1 / n if n else 1.0)
        yield (f"focal gen f {gamma!r} {_nan(alpha)} 0 nan {_nan(pw)} {_nan(w)} {n}",
               {**kw, **per}, False, SOFT, 1 / n if n else 1.0)
        # Floating targets on the hot plans (mixed tiles): 0/1 tiles take the
        # hard maths, a tile with a soft target the general maths.
        for plan in ["mr"] + (["m0"] if gamma == 0 else ["m2"] if gamma == 2 else []):
            head = f"focal {plan} %s {gamma!r} {_nan(alpha)} 0 nan {_nan(pw)} {_nan(w)} {n}"
            yield head % "fb", {**kw, **per}, True, [0.0, 1.0], 1 / n if n else 1.0
            yield head % "fs", {**kw, **per}, True, [0.0, 1.0], 1 / n if n else 1.0
            yield head % "fb", {**kw, **per}, False, SOFT, 1 / n if n else 1.0
    for eps in (0.1,):  # label smoothing turns hard labels soft
        yield (f"focal gen i 2.0 0.25 {eps!r} nan 1.0 1.0 0", dict(gamma=2.0, alpha=0.25,
               label_smoothing=f32(eps)), True, [0.0, 1.0], 1.0)


def asl_configs():
    grid = itertools.product(((1.0, 4.0), (0.0, 0.0), (0.5, 2.5), (2.0, 1.0)), (0.0, 0.05),
                             (1e-8, 0.0), (True, False), (None, 2.0))
    for (gp, gn), clip, eps, detach, pw in grid:
        kw = dict(gamma_pos=gp, gamma_neg=gn, clip=f32(clip), eps=eps,
                  detach_focal_weight=detach, pos_weight=f32(pw),
                  weight=torch.tensor(f32(0.7), dtype=torch.float64))
        head = f"{gp!r} {gn!r} {clip!r} {eps!r} {int(detach)} {_nan(pw)} {f32(0.7)!r}"
        hot = detach and clip > 0  # Asl::hot's conditions
        plans = ["gen"] + (["hr"] + (["h14"] if (gp, gn) == (1.0, 4.0) else []) if hot else [])
        for plan in plans:
            yield f"asl {plan} i {head} 0 0", kw, True, [0.0, 1.0], 1.0
        yield f"asl gen f {head} 0 0", kw, False, SOFT, 1.0
        if hot:  # floating targets on the hot plans (mixed tiles), as for focal
            for plan in ["mr"] + (["m14"] if (gp, gn) == (1.0, 4.0) else []):
                yield f"asl {plan} fb {head} 0 0", kw, True, [0.0, 1.0], 1.0
                yield f"asl {plan} fs {head} 0 0", kw, True, [0.0, 1.0], 1.0
                yield f"asl {plan} fb {head} 0 0", kw, False, SOFT, 1.0
        if detach and pw is None and clip:
            yield (f"asl gen f {head} 0.1 0", {**kw, "label_smoothing": f32(0.1)}, False,
                   SOFT, 1.0)


def test_focal_bce_matches_float64(binaries, record_property):
    worst = compare(ref_focal, list(focal_configs()), binaries)
    record_property("focal_max_rel", worst)
    print(f"focal_bce max relative error {worst:.3g}")


def test_asl_matches_float64(binaries, record_property):
    worst = compare(ref_asl, list(asl_configs()), binaries)
    record_property("asl_max_rel", worst)
    print(f"asl max relative error {worst:.3g}")


def test_binary_targets(binaries):
    """elementwise::binary_targets, the per-tile test of the float-target hot
    plans: all 8 exactly 0 or 1 (-0 is 0); a soft value, NaN, inf, a value one
    ulp off 0 or 1 (or a denormal) anywhere sends the tile to the general maths."""
    odd = ["0.5", "nan", "inf", "-inf", "-1", "2", "1.0000001", "0.99999994", "1e-45", "-1e-45"]
    lines, want = [], []
    base = ["0", "1", "1", "0", "-0", "1", "0", "1"]
    lines.append("binary " + " ".join(base))
    want.append("1")
    lines.append("binary " + " ".join(["1"] * 8))
    want.append("1")
    for v in odd:
        for pos in (0, 3, 7):
            ts = list(base)
            ts[pos] = v
            lines.append("binary " + " ".join(ts))
            want.append("0")
    got = run(binaries[0], lines)
    bad = [f"{l}: {g}, want {w}" for l, g, w in zip(lines, got, want) if g != w]
    assert not bad, "\n".join(bad)


def test_mixed_tile_paths_differ(binaries):
    """The check can fail: a soft target run through the hard maths (what a
    wrong tile verdict would do) is caught by the float64 comparison."""
    kw = dict(gamma=2.0, alpha=0.25, pos_weight=torch.tensor(2.5, dtype=torch.float64))
    with pytest.raises(AssertionError, match="mismatches"):
        compare(ref_focal, [("focal h2 f 2.0 0.25 0 nan 2.5 1.0 0", kw, False, SOFT, 1.0)],
                binaries)
    akw = dict(gamma_pos=1.0, gamma_neg=4.0, clip=f32(0.05), eps=1e-8,
               detach_focal_weight=True, pos_weight=None,
               weight=torch.tensor(f32(0.7), dtype=torch.float64))
    with pytest.raises(AssertionError, match="mismatches"):
        compare(ref_asl, [(f"asl h14 f 1.0 4.0 {f32(0.05)!r} 1e-08 1 nan {f32(0.7)!r} 0 0",
                           akw, False, SOFT, 1.0)], binaries)


def test_focal_ignore_index(binaries):
    """An ignored element is exactly 0 whatever its logit; the others are unchanged."""
    lines = [f"focal gen i 2.0 0.25 0 -100 1.0 1.0 0 {x!r} {t!r}"
             for x in (-1e4, 0.5, 1e4) for t in (-100.0, 1.0)]
    out = run(binaries[0], lines)
    for line, got in zip(lines, out):
        loss, grad = map(float, got.split())
        if line.endswith("-100.0"):
            assert (loss, grad) == (0.0, 0.0), line
        else:
            assert math.isfinite(loss) and math.isfinite(grad), line


def test_small_gamma_gradient_finite(binaries):
    """0 < γ < 1: the gradient stays finite as p_t -> 1."""
    lines = [f"{plan} {x!r} {t!r}" for plan in ("focal hr i 0.3 nan 0 nan 1 1 0",
                                                "focal gen f 0.3 nan 0 nan 1 1 0",
                                                "asl gen f 1.0 0.2 0.05 1e-8 0 nan 1 0 0")
             for x in (-1e4, -88.0, -30.0, 30.0, 88.0, 1e4) for t in (0.0, 1.0)]
    for got in run(binaries[1], lines):
        assert all(math.isfinite(float(v)) for v in got.split()), got


@pytest.mark.parametrize("numel", [0, 1, 7, 255, 2047, 2048, 2049, 8191, 8192, 8193, 50001])
def test_walk_covers_every_element_once(binaries, numel):
    lines = [f"walk {numel} {cols} {v} {u} {vec} {grid}"
             for cols in (1, 2, 3, 7, 270, 8193)
             for v, u in ((4, 2), (8, 1), (4, 1), (1, 1))
             for vec in (1, 0) for grid in (1, 3)]
    out = run(binaries[0], lines)
    bad = [f"{l}: {o}" for l, o in zip(lines, out) if o != "ok"]
    assert not bad, "\n".join(bad[:10])


# -- GHM-C (csrc/cuda/ghmc.cuh): bin, weight, loss and gradient per element ----
GHMC_BINS = (1, 3, 10, 30, 64)
GHMC_X = XS + [float(np.float32(v)) for v in (0.405465108, -0.405465108, 1.38629436, -2.19722458,
                                                0.0400053346, 4.59511985, -4.59511985)]  # g near edges


def _ghmc_ref(xs, ts, bins):
    """(float32 reference bin index, float64 bce, float64 σ(x) - t, float64 g) per element."""
    from fused_losses.reference.ghmc import bin_edges, ghmc_histogram
    x32 = torch.tensor(xs, dtype=torch.float32)
    t32 = torch.tensor(ts, dtype=torch.float32)
    index, _ = ghmc_histogram(x32, t32, None, bins)
    x = np.array(xs, dtype=np.float64)
    t = np.array(ts, dtype=np.float64)
    bce = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    sig = 0.5 * (1 + np.tanh(0.5 * x))
    return index.numpy(), bce, sig - t, np.abs(sig - t), bin_edges(bins).double().numpy()


def test_ghmc_matches_float64(binaries, record_property):
    """Slot as the float32 reference bins (a neighbouring bin only within 1e-6 of
    an edge, where fp32 σ itself is uncertain), loss = W·bce and grad = W·(σ - t)
    within 2e-5 relative (plus the point's fp32 conditioning) on W of that slot."""
    worst = 0.0
    for bins in GHMC_BINS:
        w = np.array([1 + 0.125 * b for b in range(bins)] + [0.0, 0.0])
        for plan, ts in (("h", [0.0, 1.0]), ("gen", SOFT)):
            grid = list(itertools.product(GHMC_X, ts))
            xs, tt = [g[0] for g in grid], [g[1] for g in grid]
            index, bce, dg, g64, edges = _ghmc_ref(xs, tt, bins)
            lines = [f"ghmc {plan} {bins} 1.0 {x!r} {t!r}" for x, t in grid]
            for err, exe in binaries.items():
                bad = []
                for j, got in enumerate(run(exe, lines)):
                    loss, grad, slot = got.split()
                    loss, grad, slot = float(loss), float(grad), int(slot)
                    if slot != index[j]:
                        near = np.min(np.abs(edges - g64[j])) <= 1e-6
                        if not (near and abs(slot - int(index[j])) == 1):
                            bad.append(f"{lines[j]}: slot {slot}, reference {index[j]} (g {g64[j]!r})")
                            continue
                    # fp32 conditioning: x nudged; a soft target's σ(x) - t
                    # cancels by the rounding of σ(x) and t themselves.
                    x, t = xs[j], tt[j]
                    cx = abs(x) * NUDGE * 2
                    ct = (dg[j] + 2 * t) * NUDGE * 2 if plan == "gen" else 0.0
                    for what, got_v, ref_v, cond in (("loss", loss, w[slot] * bce[j],
                                                      w[slot] * (cx + ct * abs(x))),
                                                     ("grad", grad, w[slot] * dg[j],
                                                      w[slot] * (cx * 0.25 + ct))):
                        diff = abs(got_v - ref_v)
                        if not diff <= RTOL * abs(ref_v) + FLOOR + cond:
                            bad.append(f"{lines[j]} {what}: got {got_v!r}, ref {ref_v!r}")
                        if abs(ref_v) >= FLOOR and cond <= RTOL * abs(ref_v):
                            worst = max(worst, diff / abs(ref_v))
                assert not bad, (f"host error sign {err}: {len(bad)} mismatches, e.g.\n"
                                 + "\n".join(bad[:15]))
    record_property("ghmc_max_rel", worst)
    print(f"ghmc max relative error {worst:.3g}")


@pytest.mark.parametrize("bins", GHMC_BINS + (7, 49))
def test_ghmc_bin_edges_exact(binaries, bins):
    """bin_of against torch.bucketize on the reference's fp32 edges, for every
    float within 4 ulps of every edge (where trunc(g·bins) guesses a bin off
    by one either way), past the top, and NaN."""
    from fused_losses.reference.ghmc import bin_edges
    edges = bin_edges(bins).numpy()
    gs = [np.float32(1.5), np.float32(2.0), np.float32(np.nan)]
    for e in edges:
        g = np.float32(e)
        for _ in range(4):
            g = np.nextafter(g, np.float32(-1))
        for _ in range(9):
            if g >= 0:
                gs.append(g)
            g = np.nextafter(g, np.float32(2))
    g32 = torch.tensor(np.array(gs, dtype=np.float32))
    ref = torch.bucketize(g32, torch.from_numpy(edges), right=True) - 1
    ref = torch.where((ref >= 0) & (ref < bins), ref, bins).tolist()
    lines = [f"bin {bins} {float(g)!r}" for g in gs]
    got = [int(v) for v in run(binaries[0], lines)]
    bad = [f"g={float(g)!r}: {o} != {r}" for g, o, r in zip(gs, got, ref) if o != r]
    assert not bad, "\n".join(bad[:10])


def test_ghmc_invalid_and_nan(binaries):
    """label_weight <= 0 (or NaN): slot bins + 1, zero loss and gradient; a NaN
    logit: slot bins (valid, in no bin) and a NaN loss, as in the reference."""
    lines = [f"ghmc {plan} 10 {lw} {x!r} {t!r}" for plan in ("h", "gen")
             for lw in ("0", "-1", "nan") for x in (-1e4, 0.5, 1e4) for t in (0.0, 1.0)]
    for line, got in zip(lines, run(binaries[0], lines)):
        loss, grad, slot = got.split()
        assert (float(loss), float(grad), int(slot)) == (0.0, 0.0, 11), line
    lines = [f"ghmc {plan} 10 1 nan {t!r}" for plan in ("h", "gen") for t in (0.0, 1.0)]
    for line, got in zip(lines, run(binaries[0], lines)):
        loss, _, slot = got.split()
        assert math.isnan(float(loss)) and int(slot) == 10, line


# -- dice (csrc/cuda/dice.cuh): p̃ and d p̃/dx per element ----------------------
def test_dice_adjusted_sigmoid_matches_float64(binaries, record_property):
    """p̃ = exp(log σ(x) + α·log σ(-x)) and its derivative (autograd of the
    reference's adjusted_sigmoid in float64) within 2e-5 relative, plus the
    point's fp32 conditioning: x nudged by 2^-22, and for d p̃/dx = p̃·(σ(-x) -
    α·σ(x)) the rounding of its two terms (they cancel near σ(x) = 1/(1+α))."""
    from fused_losses.reference._math import adjusted_sigmoid
    worst = 0.0
    for alpha in (0.0, 0.1, 0.5, 1.0, 2.5):
        def ref(xs):
            x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
            p = adjusted_sigmoid(x, alpha)
            (d,) = torch.autograd.grad(p.sum(), x)
            return p.detach().numpy(), d.numpy()
        r = ref(XS)
        sig = 1 / (1 + np.exp(-np.array(XS, dtype=np.float64)))
        terms = r[0] * ((1 - sig) + f32(alpha) * sig) * NUDGE * 2  # cancellation scale
        bumps = [ref([x * (1 + s * NUDGE) for x in XS]) for s in (1, -1)]
        lines = [f"dice {f32(alpha)!r} {x!r}" for x in XS]
        for err, exe in binaries.items():
            bad = []
            for j, got in enumerate(run(exe, lines)):
                for k, g in enumerate(float(v) for v in got.split()):
                    want = r[k][j]
                    cond = max(abs(b[k][j] - want) for b in bumps) + (terms[j] if k else 0.0)
                    diff = abs(g - want)
                    if not (math.isfinite(g) and diff <= RTOL * abs(want) + FLOOR + cond):
                        bad.append(f"{lines[j]} {('pt', 'dpt')[k]}: got {g!r}, ref {want!r}")
                    if abs(want) >= FLOOR and cond <= RTOL * abs(want):
                        worst = max(worst, diff / abs(want))
            assert not bad, f"host error sign {err}: " + "\n".join(bad[:15])
    record_property("dice_max_rel", worst)
    print(f"dice max relative error {worst:.3g}")

"""CUDA half of ``make sass-check``: nvcc of the hot sources and their rows.

Per element, honestly: the elementwise kernels (csrc/cuda/elementwise.cuh) loop
over fixed chunks of 8192 elements (32 per thread of a 256-thread block) and,
inside a chunk, over tiles (E elements per thread per iteration). Their cost is
    hot / E  +  (chunk - hot) / 32
where ``chunk`` is the largest loop's static body (every runtime branch in it,
the element-wise tail loop and the block reduction included) and ``hot`` the
largest loop nested in it. GHM-C's histogram pass and dice's [N, C] backward
walk the same chunks and are counted the same way. Other kernels: largest loop body / elements per
iteration (``_CUDA_ELEMS_PER_ITER``, default 1).

GHM-C and dice rows are shown (fp32 logits, bool targets) but not budgeted.

Warp-per-row softmax focal / DSC kernels (issue 14, csrc/cuda/rows_warp.cuh):
the C=270 bucket (K=16 columns per lane), fp32 and bf16 logits, pairs (V=2,
even C) and scalar (V=1), no label smoothing, are shown, unbudgeted. A row
is the body of the row loop (every runtime branch in it: all K/V column
steps, the ignored-row path, the partial and `none` stores); per element is
that body / K (a padded slot of the bucket), and the method text adds the
same body over the 270/32 real columns per lane of C=270, an upper bound
there since column steps wholly past C are skipped at run time.

Floating 0/1 targets (issue #13): focal BCE's and ASL's ``Hot`` plans with
float targets (fp32 logits) or the logits' half type are shown, unbudgeted.
Their tile loop holds both paths of the per-tile branch (all targets 0/1 ->
hard maths, else the general maths; warp-uniform, ``__all_sync``), so the
static count above is both paths together, an upper bound on either. The
hard path alone is about the bool-target row of the same plan and logits
(same maths, narrower target loads), quoted in the method text.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .sass_check import ROOT, Row, _branch_target, demangle, nvcc_path, parse_ptxas, sass_of

CUDA_SOURCES = ("focal_bce.cu", "asl.cu", "ghmc.cu", "dice.cu", "scale.cu", "softmax_focal.cu",
                "dsc.cu")
BUDGETED_SOURCES = ("focal_bce.cu", "asl.cu")  # hold the budgeted kernels (--budgeted-only)
_CUDA_ELEMS_PER_ITER = {"scale_grad_kernel<float>": 4}  # main-loop elements (default 1)
CHUNK_PER_THREAD = 8192 // 256  # elementwise.cuh kChunk / kBlock
# The hot configurations (#13): focal gamma=2 with pos_weight[C] and
# alpha in the per-class table; ASL defaults (1, 4) with pos_weight[C].
BUDGETED = ("_elementwise_fwd_kernel<FocalBce, Hot<2, Table>, float, uint8_t>",
            "_elementwise_fwd_kernel<Asl, Hot<14, Table>, float, uint8_t>")
_SIZE = {"float": 4, "__half": 2, "__nv_bfloat16": 2, "double": 8, "uint8_t": 1,
         "signed char": 1, "short": 2, "int": 4, "long": 8}


def _short(pretty: str) -> str:
    """``_elementwise_fwd_kernel<FocalBce, Hot<2, Table>, float, uint8_t>``."""
    s = pretty.replace("(anonymous namespace)::", "").replace("fused_losses::", "")
    s = s.replace("elementwise::", "").replace("warp_rows::", "").replace("void ", "")
    return s.split("(")[0].replace("unsigned char", "uint8_t")


def _cuda_hot(short: str) -> tuple[bool, bool]:
    """(shown by default, budgeted): the forwards with float logits and bool
    targets (dispatched as uint8_t), and the float scale."""
    fwd = short.startswith("_elementwise_fwd_kernel<") and short.endswith(", float, uint8_t>")
    ghmc = short.startswith("_ghmc_hist_kernel<") and short.endswith(", float, uint8_t>")
    dice = short.startswith(("_dice_fwd_kernel<", "_dice_bwd")) and "float, uint8_t" in short
    return (fwd or ghmc or dice or _mixed(short) or _warp_row(short) is not None
            or short == "scale_grad_kernel<float>", short in BUDGETED)


_WARP_ROW = re.compile(r"_warp_rows_kernel<\w+, (float|__nv_bfloat16), (\d+), (\d+), false>$")
WARP_ROW_SHOWN_K = 16  # the bucket of C = 270 (257..512 columns)


def _warp_row(short: str) -> int | None:
    """K (columns per lane) of a shown warp-row kernel, else None."""
    m = _WARP_ROW.match(short)
    return int(m.group(2)) if m and int(m.group(2)) == WARP_ROW_SHOWN_K else None


def _warp_row_per_element(short: str, found) -> tuple[float | None, str] | None:
    """The row loop (largest loop nested in the chunk loop) / K slots per lane."""
    m = re.match(r"_warp_rows_kernel<\w+, .+?, (\d+), (\d+), \w+>$", short)
    if not m:
        return None
    k = int(m.group(1))
    outer = max(found, key=lambda l: l[2])
    inner = [l for l in found if l != outer and outer[0] <= l[0] and l[1] <= outer[1]]
    row = max(inner, key=lambda l: l[2]) if inner else outer
    real = 270 / 32
    return row[2] / k, (f"row loop body {row[2]} (static: every runtime branch) / {k} "
                        f"slots per lane; / {real:.2f} real columns per lane at C=270: "
                        f"{row[2] / real:.1f}")


_FLOATS = ("float", "__half", "__nv_bfloat16")


def _mixed(short: str) -> bool:
    """A Hot forward on floating targets (elementwise.cuh mixed()): per-tile branch."""
    m = re.match(r"_elementwise_fwd_kernel<\w+, Hot<.*?>, (.+), (.+)>$", short)
    return bool(m) and m.group(2) in _FLOATS


def elems_per_iter(short: str) -> int:
    """Elements one thread takes per tile iteration (elementwise.cuh vec_width x unroll)."""
    m = re.match(r"_(?:elementwise_\w+|ghmc_hist)_kernel<(?:\w+, )?(Hot|General)<.*?>, (.+), (.+)>$",
                 short)
    if short.startswith("_dice_bwd_flat_kernel<"):  # <TIn, TT, alpha_zero, V>: V per tile
        return int(short.rstrip(">").split(",")[-1])
    if not m:
        return next((n for k, n in _CUDA_ELEMS_PER_ITER.items() if k in short), 1)
    plan, tin, tt = m.groups()
    v = 16 // _SIZE.get(tin, 4)
    if plan == "Hot":
        return 8
    return v if tt in ("uint8_t", "float", "long") else 1


_CHUNKED = ("_elementwise_", "_ghmc_hist_kernel<", "_dice_bwd_flat_kernel<")  # walk.cuh chunks


def loops(instrs) -> list[tuple[int, int, int]]:
    """(start, end, static body) of every backward branch, NOPs and branch-to-self excluded."""
    real = [(a, op, o) for a, op, o in instrs if op != "NOP" and _branch_target(op, o) != a]
    out = []
    for addr, op, operands in real:
        target = _branch_target(op, operands)
        if target is not None and target < addr:
            out.append((target, addr, sum(1 for a, _, _ in real if target <= a <= addr)))
    return out


def per_element(short: str, instrs) -> tuple[float | None, str]:
    found = loops(instrs)
    if not found:
        return None, "no loop found"
    warp = _warp_row_per_element(short, found)
    if warp is not None:
        return warp
    outer = max(found, key=lambda l: l[2])
    e = elems_per_iter(short)
    inner = [l for l in found if l != outer and outer[0] <= l[0] and l[1] <= outer[1]]
    if not short.startswith(_CHUNKED) or not inner:
        return outer[2] / e, (f"largest loop body ({outer[2]}, static: every runtime branch "
                              f"in it counted) / {e} element(s) per iteration")
    hot = max(inner, key=lambda l: l[2])
    per = hot[2] / e + (outer[2] - hot[2]) / CHUNK_PER_THREAD
    return per, (f"tile loop {hot[2]} / {e} elements + rest of the chunk loop "
                 f"({outer[2] - hot[2]}: tail, reduction; static) / {CHUNK_PER_THREAD}")


def compile_cuda(source: str, gen: Path, tmp: Path, all_variants: bool) -> list[Row]:
    nvcc = nvcc_path()
    if nvcc is None:
        raise RuntimeError("nvcc not found")
    cubin = tmp / (source + ".cubin")
    cmd = [nvcc, "-arch=sm_90", "-cubin", "-O3", "-std=c++17", "-DFUSED_LOSSES_WITH_CUDA",
           "-I", str(ROOT / "csrc"), "-I", str(gen), "-Xptxas", "-v", "-o", str(cubin),
           str(ROOT / "csrc" / "cuda" / source)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode:
        raise RuntimeError(f"nvcc failed on {source}:\n{res.stderr}")
    usage = parse_ptxas(res.stdout + res.stderr)
    funcs = sass_of(cubin)
    names = demangle(sorted(funcs))
    rows = []
    for mangled, instrs in sorted(funcs.items(), key=lambda kv: names[kv[0]]):
        short = _short(names[mangled])
        shown, budgeted = _cuda_hot(short)
        if not (shown or all_variants):
            continue
        total = sum(1 for a, op, o in instrs if op != "NOP" and _branch_target(op, o) != a)
        per_elem, method = per_element(short, instrs)
        regs, spills = usage.get(mangled, (None, None))
        rows.append(Row(short, "cuda", source, total, per_elem, method, regs, spills, budgeted))
    _note_mixed(rows, source, funcs, names)
    return rows


def _note_mixed(rows: list[Row], source: str, funcs, names) -> None:
    """A mixed row's method: both paths counted; the hard path alone ~ the
    tile loop of the same plan and logits on bool targets (uint8_t)."""
    by_short = {_short(names[m]): instrs for m, instrs in funcs.items()}
    for i, row in enumerate(rows):
        if not _mixed(row.kernel):
            continue
        tin = re.match(r".*, (.+), (.+)>$", row.kernel).group(1)
        bool_twin = re.sub(r", ([^,]+), ([^,]+)>$", f", {tin}, uint8_t>", row.kernel)
        note = ("; tile loop = both paths of the per-tile hard/general branch (static, "
                "warp-uniform)")
        if bool_twin in by_short:
            pe, _ = per_element(bool_twin, by_short[bool_twin])
            if pe is not None:
                note += f"; hard path alone ~{pe:.1f}/elem (bool-target twin)"
        rows[i] = Row(row.kernel, row.backend, row.variant, row.instructions, row.per_element,
                      row.method + note, row.registers, row.spills, row.budgeted)

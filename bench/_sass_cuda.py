"""CUDA half of ``make sass-check``: nvcc of the hot sources and their rows."""
from __future__ import annotations

import subprocess
from pathlib import Path

from .sass_check import ROOT, Row, count, demangle, nvcc_path, parse_ptxas, sass_of

CUDA_SOURCES = ("focal_bce.cu", "asl.cu", "scale.cu")
_CUDA_ELEMS_PER_ITER = {"scale_grad_kernel<float>": 4}  # main-loop elements (default 1)


def _short(pretty: str) -> str:
    """``_elementwise_fwd_kernel<FocalBce, float, uint8_t>`` of a demangled name."""
    s = pretty.replace("(anonymous namespace)::", "").replace("fused_losses::", "")
    s = s.replace("elementwise::", "").replace("void ", "")
    return s.split("(")[0].replace("unsigned char", "uint8_t")


def _cuda_hot(short: str) -> tuple[bool, bool]:
    """(shown by default, budgeted) of a CUDA kernel: the forwards with float
    logits and bool targets (dispatched as uint8_t), and the float scale."""
    fwd = short.startswith("_elementwise_fwd_kernel<") and short.endswith(
        ", float, uint8_t>")
    budget = fwd and short.split("<")[1].split(",")[0] in ("FocalBce", "Asl")
    return fwd or short == "scale_grad_kernel<float>", budget


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
        total, loop = count(instrs)
        per_iter = next((n for k, n in _CUDA_ELEMS_PER_ITER.items() if k in short), 1)
        if loop is None:
            per_elem, method = None, "no loop found"
        else:
            per_elem = loop / per_iter
            method = (f"largest loop body ({loop}, static: every runtime branch in it "
                      f"counted) / {per_iter} element(s) per iteration")
        regs, spills = usage.get(mangled, (None, None))
        rows.append(Row(short, "cuda", source, total, per_elem, method, regs, spills, budgeted))
    return rows



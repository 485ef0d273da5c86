"""Offline SASS budget of the hot GPU kernels for sm_90 (``make sass-check``), no GPU.

    python -m bench.sass_check [--strict] [--out [PATH]] [--backend triton|cuda|all]
                               [--only NAME] [--all-variants] [--json] [--clock-ghz F]

Triton kernels go through ``triton.compile`` for ``GPUTarget("cuda", 90, 32)``
with the arguments the real launchers give (``_launch_args`` on meta tensors,
then Triton's own specialisation: int 1 -> constexpr, 16-divisible -> aligned);
CUDA sources through ``nvcc -arch=sm_90 -cubin -O3 -Xptxas -v``. Triton's
``cuobjdump`` prints the SASS; NOPs and the branch-to-self after EXIT are not
counted. Per element: Triton (one BLOCK tile per program, no loop) divides the
whole kernel (prologue and reduction epilogue included) by BLOCK/(32·num_warps)
elements per thread; CUDA (grid-stride loops) divides the largest loop body by
the elements of one iteration, a static count of every runtime branch in it.
Issue time = instr/elem · numel/32 over SMs·schedulers·clock; memory time =
B/elem · numel over HBM bandwidth. Budget (issue #13): focal BCE and ASL
forwards (bool targets, fp32 logits) <= 70 instr/elem, 0 spills; an overrun
prints "OVER BUDGET" and fails only with ``--strict``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "sass-check.txt"

# H200 (SXM) figures of the estimate.
SMS, SCHEDULERS, CLOCK_GHZ, HBM_TBS = 132, 4, 1.98, 4.3
SHAPE = (262144, 270)
BYTES_PER_ELEM = 9  # fp32 logits (4) + bool targets (1) read, fp32 gradient (4) written
BUDGET_INSTR, BUDGET_SPILLS = 70, 0
BUDGETED_PER_BACKEND = 2  # the focal BCE and ASL forwards


_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_FUNC = re.compile(r"^\s*Function\s*:\s*(\S+)")
_BRA_TARGET = re.compile(r"0x([0-9a-f]+)")


@dataclass
class Row:
    kernel: str
    backend: str
    variant: str
    instructions: int           # whole kernel, NOPs excluded
    per_element: float | None   # estimated SASS instructions per element
    method: str
    registers: int | None
    spills: int | None          # bytes, spill stores + spill loads
    budgeted: bool = False      # the issue's 70 instr/element, 0 spills apply

    def over_budget(self) -> list[str]:
        if not self.budgeted:
            return []
        pe = None if self.per_element is None else round(self.per_element, 1)
        return ([f"{pe} instructions/element > {BUDGET_INSTR}"]
                if pe is None or pe > BUDGET_INSTR else []) + (
            [f"{self.spills} spill bytes > {BUDGET_SPILLS}"]
            if self.spills is None or self.spills > BUDGET_SPILLS else [])


# -- tools --------------------------------------------------------------------
def cuobjdump_path() -> str | None:
    try:
        import triton
        p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        return str(p) if os.access(p, os.X_OK) else shutil.which("cuobjdump")
    except ImportError:
        return shutil.which("cuobjdump")


def nvcc_path() -> str | None:
    cands = (shutil.which("nvcc"), os.path.join(os.environ.get("CUDA_HOME", "/none"), "bin",
                                                 "nvcc"), "/usr/local/cuda/bin/nvcc")
    return next((c for c in cands if c and os.access(c, os.X_OK)), None)


def demangle(names: list[str]) -> dict[str, str]:
    filt = shutil.which("c++filt") or shutil.which("cu++filt")
    out = subprocess.run([filt], input="\n".join(names), capture_output=True,
                         text=True).stdout.splitlines() if filt and names else []
    return dict(zip(names, out if len(out) == len(names) else names))


# -- SASS parsing -------------------------------------------------------------
def parse_sass(text: str) -> dict[str, list[tuple[int, str, str]]]:
    """{function: [(address, opcode, operands)]} of ``cuobjdump -sass`` output."""
    funcs: dict[str, list] = {}
    cur = None
    for line in text.splitlines():
        if m := _FUNC.match(line):
            cur = funcs.setdefault(m.group(1), [])
        elif (m := _INSTR.match(line)) and cur is not None:
            cur.append((int(m.group(1), 16), m.group(3), m.group(4).strip()))
    return funcs


def _branch_target(op: str, operands: str) -> int | None:
    if op.split(".")[0] not in ("BRA", "BRX", "JMP"):
        return None
    m = _BRA_TARGET.search(operands)
    return int(m.group(1), 16) if m else None


def count(instrs: list[tuple[int, str, str]]) -> tuple[int, int | None]:
    """(whole-kernel count, largest-loop body count or None), NOPs and
    branch-to-self padding excluded."""
    real = [(a, op, o) for a, op, o in instrs
            if op != "NOP" and _branch_target(op, o) != a]
    loop = None
    for addr, op, operands in real:
        target = _branch_target(op, operands)
        if target is not None and target < addr:
            body = sum(1 for a, _, _ in real if target <= a <= addr)
            loop = body if loop is None else max(loop, body)
    return len(real), loop


def sass_of(cubin: Path) -> dict[str, list]:
    tool = cuobjdump_path()
    if tool is None:
        raise RuntimeError("cuobjdump not found (Triton's backends/nvidia/bin or PATH)")
    res = subprocess.run([tool, "-sass", str(cubin)], capture_output=True, text=True, timeout=300)
    if res.returncode:
        raise RuntimeError(f"cuobjdump failed on {cubin}: {res.stderr}")
    return parse_sass(res.stdout)


def parse_ptxas(log: str) -> dict[str, tuple[int | None, int | None]]:
    """{function: (registers, spill bytes)} of ``ptxas -v`` output."""
    out: dict[str, list] = {}
    cur = None
    for line in log.splitlines():
        if m := re.search(r"(?:Compiling entry function|Function properties for) '?([\w$.]+)'?",
                          line):
            cur = out.setdefault(m.group(1), [None, None])
        elif cur is None:
            continue
        elif m := re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line):
            cur[1] = int(m.group(1)) + int(m.group(2))
        elif m := re.search(r"Used (\d+) registers", line):
            cur[0] = int(m.group(1))
    return {k: (v[0], v[1]) for k, v in out.items()}


# -- report ---------------------------------------------------------------------
def estimate(per_elem: float | None, clock_ghz: float) -> tuple[float | None, float]:
    """(issue µs, memory µs) at SHAPE on the H200."""
    numel = SHAPE[0] * SHAPE[1]
    mem = numel * BYTES_PER_ELEM / (HBM_TBS * 1e12) * 1e6
    if per_elem is None:
        return None, mem
    issue = per_elem * numel / 32 / (SMS * SCHEDULERS * clock_ghz * 1e9) * 1e6
    return issue, mem


def report(rows: list[Row], errors: list[str], clock_ghz: float) -> str:
    numel = SHAPE[0] * SHAPE[1]
    # instr/elem whose issue time equals the memory time
    be = BYTES_PER_ELEM / (HBM_TBS * 1e12) * 32 * SMS * SCHEDULERS * clock_ghz * 1e9
    lines = [
        "SASS check for sm_90 (H200), compiled offline",
        f"Estimate at {SHAPE} = {numel} elements: issue = instr/elem * numel / 32 / "
        f"({SMS} SMs * {SCHEDULERS} schedulers * {clock_ghz} GHz assumed clock); memory = "
        f"{BYTES_PER_ELEM} B/elem (fp32 logits 4 + bool targets 1 read, fp32 grad 4 written) "
        f"/ {HBM_TBS} TB/s. Break-even: {be:.1f} instr/elem.",
        f"Budget (issue #13, focal BCE / ASL forwards): <= {BUDGET_INSTR} instr/elem, "
        f"{BUDGET_SPILLS} spills.",
        "",
    ]
    head = (f"{'kernel':<50} {'backend':<7} {'instr':>6} {'/elem':>7} {'regs':>5} "
            f"{'spill B':>7} {'issue us':>9} {'mem us':>7}  budget")
    lines += [head, "-" * len(head)]
    for r in rows:
        issue, mem = estimate(r.per_element, clock_ghz)
        verdict = "-" if not r.budgeted else ("OVER" if r.over_budget() else "ok")
        pe = "?" if r.per_element is None else f"{r.per_element:.1f}"
        lines.append(f"{r.kernel[:50]:<50} {r.backend:<7} {r.instructions:>6} {pe:>7} "
                     f"{r.registers if r.registers is not None else '?':>5} "
                     f"{r.spills if r.spills is not None else '?':>7} "
                     f"{'?' if issue is None else f'{issue:.0f}':>9} {mem:>7.0f}  {verdict}")
    lines += ["", "Variants and counting method:"]
    lines += [f"  {r.backend}/{r.kernel}: {r.variant}; {r.method}" for r in rows]
    lines += [""] + [f"OVER BUDGET: {r.backend} {r.kernel}: {why}"
                     for r in rows for why in r.over_budget()]
    lines += [f"NOT CHECKED: {e}" for e in errors]
    lines += ["", "A static proxy: ncu's counts and bandwidth on a GPU are the truth."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--strict", action="store_true", help="exit 1 when a budget is exceeded")
    ap.add_argument("--out", nargs="?", const=str(RESULT), default=None,
                    help=f"also write the report (default path {RESULT.relative_to(ROOT)})")
    ap.add_argument("--backend", choices=("triton", "cuda", "all"), default="all")
    ap.add_argument("--only", default=None, help="only kernels whose name contains this")
    ap.add_argument("--all-variants", action="store_true",
                    help="every CUDA template instantiation, not just fp32/bool forwards")
    ap.add_argument("--budgeted-only", action="store_true",
                    help="only the budgeted kernels (and the CUDA sources holding them): CI")
    ap.add_argument("--clock-ghz", type=float, default=CLOCK_GHZ)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead")
    args = ap.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)  # the interpreter's kernels cannot compile
    sys.path.insert(0, str(ROOT))

    from ._sass_cuda import BUDGETED_SOURCES, CUDA_SOURCES, compile_cuda
    from ._sass_triton import _triton_cases, compile_triton

    rows: list[Row] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sass-check-") as d:
        tmp = Path(d)
        if args.backend in ("triton", "all"):
            try:
                cases = _triton_cases()
            except Exception as e:  # noqa: BLE001 - reported, then the CUDA half runs
                cases, _ = [], errors.append(f"triton cases: {type(e).__name__}: {e}")
            for case in [c for c in cases if (not args.only or args.only in c[0])
                         and (c[5] or not args.budgeted_only)]:
                try:
                    rows.append(compile_triton(*case, tmp=tmp))
                except Exception as e:  # noqa: BLE001
                    errors.append(f"triton {case[0]}: {type(e).__name__}: {str(e)[:400]}")
        if args.backend in ("cuda", "all"):
            gen = tmp / "generated"  # the options header the build generates
            codegen = subprocess.run([sys.executable, str(ROOT / "fused_losses" / "_codegen.py"),
                                      str(gen)], capture_output=True, text=True, timeout=120)
            sources = BUDGETED_SOURCES if args.budgeted_only else CUDA_SOURCES
            for source in sources if codegen.returncode == 0 else ():
                try:
                    rows += [r for r in compile_cuda(source, gen, tmp, args.all_variants)
                             if not args.only or args.only in r.kernel]
                except Exception as e:  # noqa: BLE001
                    errors.append(f"cuda {source}: {type(e).__name__}: {str(e)[:400]}")
            if codegen.returncode:
                errors.append(f"cuda codegen failed: {codegen.stderr[-400:]}")

    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "errors": errors}, indent=1))
    else:
        text = report(rows, errors, args.clock_ghz)
        print(text, end="")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text)
    over = any(r.over_budget() for r in rows)
    # --strict also fails when a budgeted kernel went missing (renamed, or its
    # case no longer built): focal BCE and ASL forwards on each backend checked.
    missing = [f"{b}: {n} budgeted kernel(s), expected {BUDGETED_PER_BACKEND}"
               for b in (("triton", "cuda") if args.backend == "all" else (args.backend,))
               if not args.only
               for n in [sum(r.budgeted and r.backend == b for r in rows)]
               if n != BUDGETED_PER_BACKEND]
    for m in missing:
        print(f"MISSING: {m}", file=sys.stderr)
    return 1 if args.strict and (over or errors or missing) else 0


if __name__ == "__main__":
    sys.exit(main())

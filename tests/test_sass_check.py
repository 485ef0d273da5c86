"""``make sass-check``'s Triton path on one kernel: compiles the focal BCE forward
for sm_90 offline and parses its SASS count, registers and spills.

Runs the tool in a subprocess: conftest sets TRITON_INTERPRET, under which the
kernels are not JIT functions and cannot be compiled for a GPU target.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import sass_check  # noqa: E402


def test_triton_focal_bce_counts():
    if sass_check.cuobjdump_path() is None:
        pytest.skip("cuobjdump not found (Triton's backends/nvidia/bin or PATH)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-m", "bench.sass_check", "--backend", "triton",
                          "--only", "focal_bce_fwd", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    if not out["rows"]:
        pytest.skip(f"Triton cannot compile for sm_90 here: {out['errors']}")
    (row,) = out["rows"]
    assert row["kernel"] == "focal_bce_fwd" and row["backend"] == "triton"
    assert isinstance(row["instructions"], int) and row["instructions"] > 0
    assert row["per_element"] > 0
    assert isinstance(row["registers"], int) and 0 < row["registers"] <= 255
    assert isinstance(row["spills"], int) and row["spills"] >= 0
    assert row["budgeted"]


def test_parsers():
    sass = """
        Function : k
        /*0000*/                   LDC R1, c[0x0][0x28] ;   /* 0x */
        /*0010*/              @!P0 BRA 0x40 ;               /* 0x */
        /*0020*/                   FADD R2, R2, R3 ;        /* 0x */
        /*0030*/               @P1 BRA 0x20 ;               /* 0x */
        /*0040*/                   EXIT ;                   /* 0x */
        /*0050*/                   BRA 0x50;                /* 0x */
        /*0060*/                   NOP;                     /* 0x */
"""
    funcs = sass_check.parse_sass(sass)
    assert sass_check.count(funcs["k"]) == (5, 2)
    log = ("ptxas info    : Compiling entry function 'k' for 'sm_90'\n"
           "ptxas info    : Function properties for k\n"
           "    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 1 barriers\n")
    assert sass_check.parse_ptxas(log) == {"k": (40, 12)}

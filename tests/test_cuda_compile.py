"""Compile-check every CUDA source with nvcc alone, for sm_80 and sm_90.

CI has no GPU, so this is the only check the CUDA kernels get there. The .cu
files include CUDA headers only (no torch), which is what makes it possible.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
ARCHES = ["80", "90"]


def _find_nvcc():
    candidates = [shutil.which("nvcc")]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc"))
    candidates.append("/usr/local/cuda/bin/nvcc")
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


NVCC = _find_nvcc()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The option structs the build generates from the specs (build/generated
    in a real build), written afresh so the check needs no prior build."""
    out = tmp_path_factory.mktemp("generated")
    subprocess.run([sys.executable, str(ROOT / "fused_losses" / "_codegen.py"), str(out)],
                   check=True, capture_output=True, text=True, timeout=120)
    return out


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (not on PATH, $CUDA_HOME/bin "
                                         "or /usr/local/cuda/bin): CUDA sources not compile-checked")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles(source, tmp_path, generated):
    # Every architecture in one nvcc call: the host side is compiled once and
    # --threads compiles the device code of the architectures in parallel.
    gencodes = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHES]
    cmd = [NVCC, "-c", "-std=c++17", "-O2", "-DFUSED_LOSSES_WITH_CUDA", "--threads", "0",
           "-I", str(ROOT / "csrc"), "-I", str(generated), *gencodes,
           "-o", str(tmp_path / "x.o"), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    archs = ", ".join(f"sm_{a}" for a in ARCHES)
    assert result.returncode == 0, (
        f"nvcc failed on {source.relative_to(ROOT)} for {archs} "
        f"(exit {result.returncode}):\n{' '.join(cmd)}\n{result.stderr}{result.stdout}")


HOST_ERRS = (-1, 0, 1)  # FUSED_LOSSES_HOST_ERR: fast maths' worst-case error down, none, up


def host_builds(out_dir: Path, source: str, flags=()) -> dict:
    """{error sign: executable}: tests/<source> (a host build of the device maths)
    compiled by nvcc for the CPU once per HOST_ERRS value, in parallel."""
    procs = {}
    for err in HOST_ERRS:
        exe = out_dir / f"{Path(source).stem}_{err + 1}"
        cmd = [NVCC, "-std=c++17", "-O2", *flags, f"-DFUSED_LOSSES_HOST_ERR={err}", "-I",
               str(ROOT / "csrc"), "-o", str(exe), str(ROOT / "tests" / source)]
        procs[err] = (exe, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True))
    for exe, p in procs.values():
        out, errtext = p.communicate(timeout=600)
        assert p.returncode == 0, f"nvcc failed:\n{errtext}{out}"
    return {err: exe for err, (exe, _) in procs.items()}

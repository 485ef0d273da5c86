"""Compile-check every CUDA source with nvcc alone, for sm_80 and sm_90.

CI has no GPU, so this is the only check the CUDA kernels get there. The .cu
files include CUDA headers only (no torch), which is what makes it possible.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
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


def _generate(out: Path) -> Path:
    """The option structs the build generates from the specs (build/generated in a
    real build), written afresh so the check needs no prior build."""
    subprocess.run([sys.executable, str(ROOT / "fused_losses" / "_codegen.py"), str(out)],
                   check=True, capture_output=True, text=True, timeout=120)
    return out


def _nvcc_command(source: Path, generated: Path, out: Path, threads: int) -> list:
    # Every architecture in one nvcc call: the host side is compiled once and
    # --threads compiles the device code of the architectures in parallel.
    gencodes = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHES]
    return [NVCC, "-c", "-std=c++17", "-O2", "-DFUSED_LOSSES_WITH_CUDA", "--threads",
            str(threads), "-I", str(ROOT / "csrc"), "-I", str(generated), *gencodes,
            "-o", str(out / f"{source.stem}.o"), str(source)]


class BackgroundCompiles:
    """The compile checks started when collection ends (tests/conftest.py), one
    nvcc at a time on one thread at low priority, so they overlap the rest of the
    suite (mostly one busy core) instead of adding ~2.5 min to it; conftest also
    moves these tests to the end. ``result(source)`` waits for one compile."""

    def __init__(self, sources):
        self.dir = Path(tempfile.mkdtemp(prefix="nvcc-check-"))
        self.results, self.done = {}, {s: threading.Event() for s in sources}
        self.thread = threading.Thread(target=self._run, args=(list(sources),), daemon=True)
        self.thread.start()

    def _run(self, sources):
        try:
            generated = _generate(self.dir / "generated")
        except Exception as e:  # noqa: BLE001 - reported by every test that waits
            generated, error = None, e
        for source in sources:
            if generated is None:
                self.results[source] = (None, f"codegen failed: {error}")
            else:
                cmd = ["nice", "-n", "10", *_nvcc_command(source, generated, self.dir, 1)]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
                self.results[source] = (proc.returncode, f"{' '.join(cmd)}\n"
                                                         f"{proc.stderr}{proc.stdout}")
            self.done[source].set()

    def result(self, source):
        assert self.done[source].wait(timeout=3600), f"nvcc on {source} never finished"
        return self.results[source]


_BACKGROUND = None


def start_background(sources) -> None:
    """Called by conftest once the selected tests are known."""
    global _BACKGROUND
    if NVCC is not None and sources and shutil.which("nice"):
        _BACKGROUND = BackgroundCompiles(sources)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("generated"))


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (not on PATH, $CUDA_HOME/bin "
                                         "or /usr/local/cuda/bin): CUDA sources not compile-checked")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles(source, tmp_path, request):
    if _BACKGROUND is not None and source in _BACKGROUND.done:
        returncode, log = _BACKGROUND.result(source)
    else:
        cmd = _nvcc_command(source, request.getfixturevalue("generated"), tmp_path, 0)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        returncode, log = proc.returncode, f"{' '.join(cmd)}\n{proc.stderr}{proc.stdout}"
    archs = ", ".join(f"sm_{a}" for a in ARCHES)
    assert returncode == 0, (
        f"nvcc failed on {source.relative_to(ROOT)} for {archs} (exit {returncode}):\n{log}")


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

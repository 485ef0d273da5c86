"""Build fused_losses, with the optional C++/CUDA extension fused_losses._C.

The extension is optional: with FUSED_LOSSES_SKIP_EXT=1, with no C++ sources,
or when compiling fails (no compiler), the package installs as pure Python
(reference + Triton backends) and says so once.
CUDA kernels are added when torch has CUDA and nvcc is found, or when
FUSED_LOSSES_FORCE_CUDA=1.

Compiling goes through torch's BuildExtension with ninja (parallel; MAX_JOBS
caps the jobs). Each CPU kernel is built once per ISA by its own translation
unit (csrc/cpu/<loss>_{default,avx2,avx512}.cpp), which enables its ISA in the
source, so every file shares one set of compiler flags.
"""
import filecmp
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# Headers written at build time; kept under build/ so `make clean` drops them.
GENERATED = os.path.join(ROOT, "build", "generated")
CODEGEN = os.path.join(ROOT, "fused_losses", "_codegen.py")


def _generate_headers():
    """Run fused_losses/_codegen.py into GENERATED (a failure stops the build).

    The header is replaced only when its text changes, so an unchanged spec
    does not make ninja recompile every source that includes it.
    """
    if not os.path.exists(CODEGEN):  # not written yet: nothing includes it either
        return
    os.makedirs(GENERATED, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=GENERATED) as tmp:
        subprocess.run([sys.executable, CODEGEN, tmp], cwd=ROOT, check=True)
        for name in os.listdir(tmp):
            new, old = os.path.join(tmp, name), os.path.join(GENERATED, name)
            if not (os.path.exists(old) and filecmp.cmp(new, old, shallow=False)):
                shutil.copyfile(new, old)


def _cpu_sources():
    # Baseline kernels link first: an inline helper emitted by several ISA
    # builds is kept from the first object that has it, and only the baseline
    # copy is safe on every CPU.
    def order(path):
        return (not path.endswith("_default.cpp"), path)
    return sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"), key=order)


def _extension_kwargs():
    if os.environ.get("FUSED_LOSSES_SKIP_EXT", "0") == "1":
        return {}
    cpp = _cpu_sources()
    if not cpp:
        return {}
    try:
        import torch
        from torch.utils import cpp_extension as ext
    except ImportError:
        warnings.warn("fused_losses: torch is not importable at build time; "
                      "installing without the C++ extension")
        return {}
    force_cuda = os.environ.get("FUSED_LOSSES_FORCE_CUDA", "0") == "1"
    cu = sorted(glob.glob("csrc/cuda/*.cu"))
    with_cuda = bool(cu) and (force_cuda or (torch.version.cuda is not None
                                             and ext.CUDA_HOME is not None))
    sources = cpp + (cu if with_cuda else [])
    macros = [("FUSED_LOSSES_WITH_CUDA", "1")] if with_cuda else []
    cls = ext.CUDAExtension if with_cuda else ext.CppExtension
    # at::parallel_for is inline OpenMP: without -fopenmp it silently runs on one thread.
    # -g0 undoes the -g that Python's own CFLAGS add: debug info for torch's
    # headers is most of each object and almost half the compile time.
    module = cls("fused_losses._C", sources, define_macros=macros,
                 include_dirs=[os.path.join(ROOT, "csrc"), GENERATED],
                 extra_compile_args={"cxx": ["-O3", "-g0", "-std=c++17", "-fopenmp"],
                                     "nvcc": ["-O3", "-std=c++17"]},
                 extra_link_args=["-fopenmp"])
    build = ext.BuildExtension.with_options(use_ninja=True)
    return {"ext_modules": [module], "cmdclass": {"build_ext": _optional_build(build)}}


def _optional_build(base):
    class OptionalBuildExt(base):
        """Falls back to a pure-Python install, with one warning, if compiling fails."""

        _failed = False

        def run(self):
            _generate_headers()  # outside the fallback: a broken spec must fail loudly
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler failure
                self._give_up(exc)

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
            except Exception as exc:  # noqa: BLE001
                self._give_up(exc)

        def copy_extensions_to_source(self):
            if not self._failed:  # nothing was built to copy (editable installs)
                super().copy_extensions_to_source()

        def _give_up(self, exc):
            if not self._failed:
                warnings.warn(f"fused_losses: C++ extension not built ({exc}); "
                              "only the 'torch' and 'triton' backends will be available")
            self._failed = True
    return OptionalBuildExt


setup(**_extension_kwargs())

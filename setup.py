"""Build fused_losses, with the optional C++/CUDA extension fused_losses._C.

The extension is optional: with FUSED_LOSSES_SKIP_EXT=1, with no C++ sources,
or when compiling fails (no compiler), the package installs as pure Python
(reference + Triton backends) and says so once.
CUDA kernels are added when torch has CUDA and nvcc is found, or when
FUSED_LOSSES_FORCE_CUDA=1.
"""
import glob
import os
import warnings

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _extension_kwargs():
    if os.environ.get("FUSED_LOSSES_SKIP_EXT", "0") == "1":
        return {}
    cpp = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
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
    cu = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")) + glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
    with_cuda = bool(cu) and (force_cuda or (torch.version.cuda is not None and ext.CUDA_HOME is not None))
    sources = cpp + (cu if with_cuda else [])
    macros = [("FUSED_LOSSES_WITH_CUDA", "1")] if with_cuda else []
    cls = ext.CUDAExtension if with_cuda else ext.CppExtension
    module = cls("fused_losses._C", sources, define_macros=macros,
                 extra_compile_args={"cxx": ["-O3", "-std=c++17"],
                                     "nvcc": ["-O3", "--use_fast_math", "-std=c++17"]})
    return {"ext_modules": [module],
            "cmdclass": {"build_ext": _optional_build(ext.BuildExtension)}}


def _optional_build(base):
    class OptionalBuildExt(base):
        """Falls back to a pure-Python install, with one warning, if compiling fails."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any compiler failure
                warnings.warn(f"fused_losses: C++ extension not built ({exc}); "
                              "only the 'torch' and 'triton' backends will be available")

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"fused_losses: C++ extension not built ({exc}); "
                              "only the 'torch' and 'triton' backends will be available")
    return OptionalBuildExt


setup(**_extension_kwargs())

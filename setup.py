"""Build fused_losses, with the optional C++/CUDA extension fused_losses._C.

The extension is optional: with FUSED_LOSSES_SKIP_EXT=1, with no C++ sources,
or when compiling fails (no compiler), the package installs as pure Python
(reference + Triton backends) and says so once.
CUDA kernels are added when torch has CUDA and nvcc is found, or when
FUSED_LOSSES_FORCE_CUDA=1.
"""
import glob
import os
import platform
import warnings

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


# Per-file flags: each CPU kernel is compiled once per capability and the
# fastest one the running CPU supports is chosen at run time (csrc/cpu/dispatch.cpp).
# ATen's Vectorized only uses SIMD (and Sleef's exp/log) under these macros.
CAPABILITY_FLAGS = {
    "_default.cpp": ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"],
    "_avx2.cpp": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "_avx512.cpp": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c",
                    "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
}
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _cpu_sources():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    if not X86:  # only the baseline build of each kernel elsewhere
        sources = [s for s in sources if not s.endswith(("_avx2.cpp", "_avx512.cpp"))]
    return sources


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
    module = cls("fused_losses._C", sources, define_macros=macros,
                 include_dirs=[os.path.join(ROOT, "csrc")],
                 extra_compile_args={"cxx": ["-O3", "-std=c++17", "-fopenmp"],
                                     "nvcc": ["-O3", "-std=c++17"]},
                 extra_link_args=["-fopenmp"])
    build = ext.BuildExtension.with_options(use_ninja=False)
    return {"ext_modules": [module], "cmdclass": {"build_ext": _optional_build(build)}}


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
            _add_per_file_flags(self.compiler)
            _compile_in_parallel(self.compiler)
            try:
                super().build_extension(extension)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"fused_losses: C++ extension not built ({exc}); "
                              "only the 'torch' and 'triton' backends will be available")
    return OptionalBuildExt


def _add_per_file_flags(compiler):
    """Wrap torch's per-source compile step to append CAPABILITY_FLAGS by file name."""
    inner = compiler._compile
    if getattr(inner, "_fused_losses", False):
        return

    def compile_one(obj, src, ext, cc_args, extra_postargs, pp_opts):
        extra = [f for suffix, flags in CAPABILITY_FLAGS.items() if src.endswith(suffix)
                 for f in flags]
        if extra and isinstance(extra_postargs, dict):
            extra_postargs = dict(extra_postargs, cxx=list(extra_postargs["cxx"]) + extra)
        elif extra:
            extra_postargs = list(extra_postargs) + extra
        return inner(obj, src, ext, cc_args, extra_postargs, pp_opts)

    compile_one._fused_losses = True
    compiler._compile = compile_one


_PENDING = []


def _run_pending(index):
    fn, args = _PENDING[index]
    fn(*args)


def _compile_in_parallel(compiler):
    """Compile an extension's sources in forked worker processes (MAX_JOBS, default
    all cores). Forked, because torch's per-source step swaps the compiler
    executable on the shared compiler object for .cu files."""
    if getattr(compiler.compile, "_fused_losses", False):
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    def compile_all(sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                    extra_preargs=None, extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)
        jobs = int(os.environ.get("MAX_JOBS", "0")) or os.cpu_count() or 1
        todo = [obj for obj in objects if obj in build]
        if jobs == 1 or len(todo) < 2:
            for obj in todo:
                compiler._compile(obj, *build[obj], cc_args, extra_postargs, pp_opts)
            return objects
        # Workers are forked after this is set, so they inherit it and nothing is pickled.
        _PENDING[:] = [(compiler._compile, (obj, *build[obj], cc_args, extra_postargs, pp_opts))
                       for obj in todo]
        try:
            with ProcessPoolExecutor(min(jobs, len(todo)),
                                     mp_context=multiprocessing.get_context("fork")) as pool:
                list(pool.map(_run_pending, range(len(todo))))
        except Exception:  # noqa: BLE001 - e.g. pip runs setup.py as an unpicklable __main__
            for obj in todo:  # serial: the same compiles, and a real error is raised here
                compiler._compile(obj, *build[obj], cc_args, extra_postargs, pp_opts)
        return objects

    compile_all._fused_losses = True
    compiler.compile = compile_all


setup(**_extension_kwargs())

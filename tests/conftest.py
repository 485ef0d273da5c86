"""Test set-up: without a GPU, Triton kernels run through the interpreter.

TRITON_INTERPRET must be set before ``fused_losses`` (and its @triton.jit
kernels) is imported, so it is set here, before any test module loads.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fused_losses  # noqa: E402
from helpers import triton_device  # noqa: E402

# (backend, device, CPU capability forced through FUSED_LOSSES_CPU_CAPABILITY)
FUSED = [("triton", triton_device(), None), ("cpu", "cpu", None), ("cpu", "cpu", "avx2"),
         ("cpu", "cpu", "default"), ("cuda", "cuda", None)]


def fused_id(param):
    backend, _, capability = param
    return backend + (f"-{capability}" if capability else "")


@pytest.fixture(params=FUSED, ids=fused_id)
def fused(request, monkeypatch):
    """(backend, device) for one fused backend, skipped where it cannot run."""
    backend, device, capability = request.param
    if backend not in fused_losses.available_backends(device):
        pytest.skip(f"{backend} backend unavailable for {device} here")
    if capability:
        monkeypatch.setenv("FUSED_LOSSES_CPU_CAPABILITY", capability)
        if torch.ops.fused_losses._cpu_capability() != capability:
            pytest.skip(f"this CPU cannot run the {capability} build")
    return backend, device


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_dynamo(request):
    """Each torch.compile test starts from an empty Dynamo cache: the compile tests
    reuse one code object with new closures, and after 8 of them in one process
    (xdist workers run many) Dynamo's recompile limit fails fullgraph=True."""
    if "compile" in request.node.name:
        torch._dynamo.reset()
    yield


def pytest_collection_finish(session):
    """The nvcc compile checks of tests/test_cuda_compile.py: run them last, and
    start their compiles now in the background (one nvcc at a time, one thread,
    low priority) so they overlap the rest of the suite."""
    compile_items = [item for item in session.items
                     if item.nodeid.split("::")[0].endswith("test_cuda_compile.py")
                     and item.originalname == "test_cuda_source_compiles"]
    if not compile_items:
        return
    chosen = set(map(id, compile_items))
    session.items[:] = [i for i in session.items if id(i) not in chosen] + compile_items
    import test_cuda_compile
    test_cuda_compile.start_background([item.callspec.params["source"] for item in compile_items])

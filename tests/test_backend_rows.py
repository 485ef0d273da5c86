"""``auto`` on a CUDA device picks the row losses' backend by class count
(fused_losses/_backend.py ROW_CUDA_MAX_CLASSES): CUDA's warp-per-row kernels
for C <= 2048, Triton's online row kernels above; every other loss keeps
CUDA first. Availability is mocked, so this runs on any CPU machine."""
import pytest

from fused_losses import _backend
from fused_losses._backend import ROW_CUDA_MAX_CLASSES, resolve_backend, wide_rows


@pytest.fixture
def everything_available(monkeypatch):
    monkeypatch.setattr(_backend, "backend_problem", lambda backend, device_type: None)


@pytest.fixture
def no_triton(monkeypatch):
    monkeypatch.setattr(_backend, "backend_problem",
                        lambda backend, device_type: "mocked" if backend == "triton" else None)


@pytest.mark.parametrize("stem", ["softmax_focal", "dsc"])
@pytest.mark.parametrize("shape,wide", [
    ((65536, 270), False), ((37, 2048), False), ((8, 2049), True), ((8192, 32000), True),
    ((8, 19, 64, 64), False), ((4, 4096, 7, 3), True), ((2048,), False), ((2049,), True),
    ((), False)])
def test_wide_rows_by_class_count(stem, shape, wide):
    assert wide_rows(stem, shape) is wide


@pytest.mark.parametrize("stem", ["focal_bce", "asl", "ghmc", "dice"])
def test_other_losses_are_never_wide(stem):
    assert not wide_rows(stem, (8, 32000))


def test_crossover_is_the_warp_kernels_limit():
    assert ROW_CUDA_MAX_CLASSES == 2048


@pytest.mark.parametrize("wide,want", [(False, "cuda"), (True, "triton")])
def test_auto_on_cuda_orders_by_width(everything_available, wide, want):
    assert resolve_backend("auto", "cuda", True, wide) == want


def test_auto_default_keeps_cuda_first(everything_available):
    assert resolve_backend("auto", "cuda", True) == "cuda"


def test_wide_falls_back_to_cuda_without_triton(no_triton):
    assert resolve_backend("auto", "cuda", True, True) == "cuda"


@pytest.mark.parametrize("wide", [False, True])
def test_wide_changes_nothing_else(everything_available, wide):
    assert resolve_backend("auto", "cpu", True, wide) == "cpu"
    assert resolve_backend("auto", "cuda", False, wide) == "torch"
    assert resolve_backend("cuda", "cuda", True, wide) == "cuda"
    assert resolve_backend("triton", "cuda", True, wide) == "triton"


@pytest.mark.parametrize("stem,classes,wide", [("softmax_focal", 270, False),
                                               ("softmax_focal", 32000, True),
                                               ("dsc", 4096, True), ("focal_bce", 32000, False)])
def test_api_passes_the_class_count_to_the_choice(monkeypatch, stem, classes, wide):
    import torch

    from fused_losses import _api
    from fused_losses.spec import BY_STEM

    seen = []

    def spy(backend, device_type, fused_ok, wide=False):
        seen.append(wide)
        return "torch"

    monkeypatch.setattr(_api, "resolve_backend", spy)
    monkeypatch.setattr(_api, "_RESOLVED", {})
    x = torch.zeros(2, classes)
    assert _api.resolve(BY_STEM[stem], "auto", x, torch.zeros(2), {}) == "torch"
    assert seen == [wide]

"""fused_losses.label_counts (fused_losses/_counts.py): streamed counts equal
in-memory counts, and the optional tqdm progress bar. Bad input is covered
with the other helpers in tests/test_weights.py."""
import doctest
import sys
import types
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fused_losses
from fused_losses import _counts, label_counts, weights


def _labels(n=103, c=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, generator=gen) < torch.linspace(0.02, 0.6, c)


def test_exported_from_package_and_weights():
    assert fused_losses.label_counts is weights.label_counts is _counts.label_counts


def test_docstring_example_runs():
    result = doctest.testmod(_counts, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


# ---- streaming counts equal in-memory counts ----

@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float32])
def test_streaming_counts_equal_in_memory(dtype):
    y = _labels().to(dtype)
    expected = y.double().sum(0).float()
    x = torch.randn(y.shape[0], 3)
    sources = {
        "tensor": y,
        "list of batches": list(y.split(10)),
        "generator": (b for b in y.split(17)),
        "list of (x, y)": list(zip(x.split(10), y.split(10))),
        "DataLoader": DataLoader(TensorDataset(x, y), batch_size=16),
    }
    for what, source in sources.items():
        counts, n = label_counts(source, num_classes=7)
        assert counts.dtype == torch.float32, what
        assert torch.equal(counts, expected) and n == 103, what


class _FakeTqdm:
    """Stands in for tqdm.tqdm: records its arguments and whether it was iterated."""
    calls = []

    def __init__(self, iterable, **kwargs):
        self.iterable, self.kwargs, self.yielded, self.closed = iterable, kwargs, 0, False
        _FakeTqdm.calls.append(self)

    def __iter__(self):
        for item in self.iterable:
            self.yielded += 1
            yield item

    def close(self):
        self.closed = True


@pytest.fixture
def fake_tqdm(monkeypatch):
    module = types.ModuleType("tqdm")
    module.tqdm = _FakeTqdm
    monkeypatch.setitem(sys.modules, "tqdm", module)
    monkeypatch.setattr(_FakeTqdm, "calls", [])
    return _FakeTqdm


def test_progress_bar_wraps_the_loader(fake_tqdm):
    y = _labels()
    loader = DataLoader(TensorDataset(torch.randn(103, 3), y), batch_size=16)
    counts, n = label_counts(loader, progress=True)
    assert torch.equal(counts, y.double().sum(0).float()) and n == 103
    (bar,) = fake_tqdm.calls
    assert bar.iterable is loader and bar.yielded == len(loader) == 7 and bar.closed
    assert bar.kwargs["total"] == 7 and "label_counts" in bar.kwargs["desc"]
    label_counts((b for b in y.split(50)), progress=True)  # no len: no total
    assert fake_tqdm.calls[1].kwargs["total"] is None and fake_tqdm.calls[1].yielded == 3
    label_counts(y, progress=True)  # one tensor: a bar over its single batch
    label_counts(loader)  # progress=False: no bar
    assert len(fake_tqdm.calls) == 3


def test_progress_without_tqdm_still_counts(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    with pytest.raises(ImportError):
        import tqdm  # noqa: F401
    y = _labels()
    loader = DataLoader(TensorDataset(torch.randn(103, 3), y), batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts, n = label_counts(loader, progress=True)
    assert torch.equal(counts, y.double().sum(0).float()) and n == 103


def test_empty_iterable():
    counts, n = label_counts([], num_classes=3)
    assert torch.equal(counts, torch.zeros(3)) and n == 0
    with pytest.raises(ValueError, match="num_classes"):
        label_counts([])

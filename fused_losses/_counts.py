r"""Label counts for :mod:`fused_losses.weights`: positives per class, streamed.

:func:`label_counts` lives here so that ``weights.py`` stays short; it is
exported as ``fused_losses.label_counts`` and ``fused_losses.weights.label_counts``.
"""
from __future__ import annotations

import importlib
import numbers
from collections.abc import Iterable, Sized
from typing import Any, Union

import torch

from ._validate import check_tensor

__all__ = ["label_counts"]

#: What :func:`label_counts` accepts: a tensor or any iterable of batches.
LabelSource = Union[torch.Tensor, Iterable[Any]]


def _check_multi_hot(name: str, labels: Any) -> torch.Tensor:
    """A 2-D ``[N, C]`` tensor of 0/1 values, returned as bool."""
    check_tensor(name, labels)
    if labels.is_complex():
        raise TypeError(f"{name} must be a real or bool tensor, got {labels.dtype}")
    if labels.dim() != 2:
        raise ValueError(
            f"{name} must be a 2-D [N, C] multi-hot tensor, got shape {tuple(labels.shape)}"
            f"; for class indices use torch.nn.functional.one_hot(y, num_classes)")
    if labels.dtype != torch.bool:
        bad = (labels != 0) & (labels != 1)
        if bool(bad.any()):
            value = labels[bad][0].item()
            raise ValueError(f"{name} must hold only 0 and 1 (multi-hot), found {value}")
    return labels.bool() if labels.dtype != torch.bool else labels


def _batch_labels(batch: Any, index: int) -> torch.Tensor:
    """The label tensor of one batch: the batch itself, or y of (x, y)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[1]
    raise TypeError(f"labels_or_loader: batch {index} must be a [B, C] label tensor or an (x, y) pair, got "
                    f"{type(batch).__name__}" +
                    (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))


def _with_progress(batches: Iterable[Any]) -> Iterable[Any]:
    """``batches`` wrapped in a tqdm bar when tqdm can be imported, else as is.

    The bar's total is ``len(batches)`` when the iterable has a length (a list,
    a ``DataLoader``); a generator gets a bar that only counts.
    """
    try:
        tqdm = importlib.import_module("tqdm").tqdm
    except (ImportError, AttributeError):  # not installed (or a stub without .tqdm)
        return batches
    total = None
    if isinstance(batches, Sized):
        try:
            total = len(batches)
        except TypeError:  # e.g. a DataLoader over an IterableDataset without __len__
            total = None
    return tqdm(batches, total=total, desc="label_counts", unit="batch")


def label_counts(labels_or_loader: LabelSource, *, num_classes: int | None = None,
                 progress: bool = False) -> tuple[torch.Tensor, int]:
    r"""Positives per class and the number of samples, streamed batch by batch.

    Computes n_c = Σ_i y_ic (the positives of class c) and N (the number of
    rows) over every batch.

    Args:
        labels_or_loader: a ``[N, C]`` multi-hot tensor; or any iterable of
            batches (a list, a generator, a ``torch.utils.data.DataLoader``)
            where each batch is a ``[B, C]`` label tensor or an ``(x, y, ...)``
            tuple/list whose second item is that tensor. Only one batch is
            held at a time.
        num_classes: C, if known. Checked against every batch; needed when the
            iterable may be empty.
        progress: show a ``tqdm`` progress bar (desc ``"label_counts"``, total
            ``len(labels_or_loader)`` when it has one) while iterating. Only
            when tqdm is installed; without it, nothing is shown and nothing is
            raised.

    Returns:
        ``(pos_counts, num_samples)``: float32 ``[C]`` on the labels' device
        (n_c, counted exactly in int64) and a Python int N.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from fused_losses import label_counts
        >>> y = torch.tensor([[1, 0], [1, 1], [0, 0]])
        >>> loader = DataLoader(TensorDataset(torch.randn(3, 8), y), batch_size=2)
        >>> label_counts(loader)
        (tensor([2., 1.]), 3)
    """
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
            raise TypeError(f"num_classes must be an int or None, got "
                            f"{type(num_classes).__name__}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    if isinstance(labels_or_loader, torch.Tensor):
        batches: Iterable[Any] = (labels_or_loader,)
    elif isinstance(labels_or_loader, Iterable) and not isinstance(labels_or_loader,
                                                                   (str, bytes, dict)):
        batches = labels_or_loader
    else:
        raise TypeError("labels_or_loader must be a [N, C] tensor, an iterable of batches "
                        f"or a DataLoader, got {type(labels_or_loader).__name__}")
    single = batches is not labels_or_loader
    shown = _with_progress(batches) if progress else batches
    counts, total = None, 0
    try:
        for i, batch in enumerate(shown):
            name = "labels_or_loader" if single else f"labels of batch {i}"
            y = _check_multi_hot(name, _batch_labels(batch, i))
            width = counts.numel() if counts is not None else num_classes
            if width is not None and y.shape[1] != width:
                what = "num_classes" if counts is None else "earlier batches"
                raise ValueError(f"{name} has {y.shape[1]} classes but {what} had {width}")
            if counts is None:
                counts = torch.zeros(y.shape[1], dtype=torch.int64, device=y.device)
            counts += y.sum(dim=0, dtype=torch.int64).to(counts.device)
            total += y.shape[0]
    finally:
        if shown is not batches and hasattr(shown, "close"):
            shown.close()  # the bar we opened, also when a batch is rejected
    if counts is None:
        if num_classes is None:
            raise ValueError("labels_or_loader yielded no batches; pass num_classes= to get "
                             "zero counts")
        counts = torch.zeros(num_classes, dtype=torch.int64)
    return counts.to(torch.float32), total

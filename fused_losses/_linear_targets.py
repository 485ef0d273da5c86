"""The targets of the fused linear heads: dense, sparse CSR or padded positives.

A linear head sees ``[N, C]`` labels in one of three forms, never densified
to N×C as a whole:

- **dense**: a ``[N, C]`` bool, uint8 or float tensor (float: soft labels in
  [0, 1]); each chunk is a slice of it;
- **CSR**: ``torch.sparse_csr_tensor(crow_indices, col_indices, values, (N, C))``;
  the listed entries hold the labels (bool/integer 0/1 or float in [0, 1]), all
  others are 0. Repeated float entries are summed, as ``to_dense()`` does; a
  repeated hard entry is one positive;
- **padded**: a ``[N, K]`` int32/int64 tensor of positive class indices per row,
  ``-1`` for padding (K ≠ C, so that it cannot be mistaken for dense labels).
  A class listed twice in a row is one positive.

Sparse forms become one list of positions ``(rows, cols, values)`` of length
P. A chunk's dense target (the chunk's rows × columns, 1 byte per element for
hard labels) is built by scattering every position into a zeroed buffer, with
positions outside the chunk sent to one spare slot at its end (``ChunkLabels``):
no shape ever depends on the data, so there is no host sync and CUDA graphs
can capture it.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from . import _validate as v
from ._strict import checks_values

INDEX_DTYPES = (torch.int32, torch.int64)


class Targets(NamedTuple):
    """One call's labels: ``dense`` ``[N, C]``, or positions ``cols`` ``[P]``
    (``-1``: none) with ``rows`` ``[P]`` (None: ``cols`` is ``[N, K]`` padded)
    and ``values`` ``[P]`` (None: every position is a hard 1)."""
    dense: Optional[torch.Tensor]
    rows: Optional[torch.Tensor]
    cols: Optional[torch.Tensor]
    values: Optional[torch.Tensor]

    @property
    def soft(self) -> bool:
        t = self.dense if self.dense is not None else self.values
        return t is not None and t.is_floating_point()

    def element_bytes(self) -> int:
        """Bytes per element of a chunk's dense target."""
        return 4 if self.soft else 1


def normalize(target, n: int, c: int, device: torch.device) -> Targets:
    """Check ``target``'s form and shape against ``[N, C]`` logits and return its
    :class:`Targets`. Value checks (ranges, indices) run where
    ``_strict.checks_values`` allows: CPU tensors always, GPU ones in strict mode."""
    v.check_tensor("target", target)
    if target.device != device:
        raise ValueError(f"target is on {target.device} but input is on {device}")
    if target.requires_grad:
        raise ValueError("the linear heads do not support target.requires_grad")
    if target.layout == torch.sparse_csr:
        return _csr(target, n, c)
    if target.layout != torch.strided:
        raise TypeError(f"target must be a dense tensor, a sparse CSR tensor or a padded "
                        f"[N, K] index tensor, got layout {target.layout} (convert COO "
                        f"targets with .to_sparse_csr())")
    if target.is_complex():
        raise TypeError(f"target must be a real or bool tensor, got {target.dtype}")
    if target.dim() != 2 or target.shape[0] != n:
        raise ValueError(f"target must be [N, C] labels or [N, K] padded indices with "
                         f"N = {n}, got shape {tuple(target.shape)}")
    if target.dtype in INDEX_DTYPES:
        if target.shape[1] == c:
            raise ValueError(
                f"an {target.dtype} target of shape {tuple(target.shape)} is ambiguous: "
                f"integer targets are padded [N, K] positive indices (K ≠ C = {c}); pass "
                f"dense [N, C] labels as bool, uint8 or float")
        if checks_values(target) and target.numel():
            lo, hi = v._aminmax(target)
            if lo < -1 or hi >= c:
                raise ValueError(f"padded target indices must lie in [-1, {c}) (-1: "
                                 f"padding), got {lo if lo < -1 else hi}")
        return Targets(None, None, target.to(torch.int64), None)
    if target.shape[1] != c:
        raise ValueError(f"dense target shape {tuple(target.shape)} must equal the "
                         f"logits' [N, C] = [{n}, {c}]")
    if checks_values(target):
        v.check_binary_target_values(target)
    return Targets(target, None, None, None)


def _csr(target: torch.Tensor, n: int, c: int) -> Targets:
    if tuple(target.shape) != (n, c):
        raise ValueError(f"sparse CSR target shape {tuple(target.shape)} must equal the "
                         f"logits' [N, C] = [{n}, {c}]")
    # values() is a view whose _base is the sparse tensor itself: detached, the
    # positions hold no reference to it, which torch.compile (a graph break on
    # the sparse target) and fake tensors (opcheck) need: both fail on the view
    crow, cols, values = target.crow_indices(), target.col_indices(), target.values().detach()
    if values.is_complex():
        raise TypeError(f"target values must be real or bool, got {values.dtype}")
    if checks_values(values):
        if cols.numel():
            lo, hi = v._aminmax(cols)
            if lo < 0 or hi >= c:
                raise ValueError(f"sparse target column indices must lie in [0, {c}), "
                                 f"got {lo if lo < 0 else hi}")
        v.check_binary_target_values(values)
    counts = crow[1:] - crow[:-1]
    # output_size: the length is known (nnz), so no host sync on a GPU
    rows = torch.repeat_interleave(torch.arange(n, device=crow.device), counts,
                                   output_size=cols.numel())
    return Targets(None, rows, cols.to(torch.int64), values)


class ChunkLabels:
    """The dense labels of each chunk of one call, ``labels(k, height, width)`` for
    chunk k (chunks of ``size`` rows when ``by_rows``, else of ``size`` classes).

    For sparse targets the positions are placed once per call: each position's
    chunk, and its flat offset inside a full chunk and inside the last one. A
    chunk's labels are then four operations (compare, select, zero-fill,
    scatter) whatever the form, instead of recomputing the offsets per chunk:
    the host work per chunk is what bounds a GPU step with many chunks.
    """

    def __init__(self, t: Targets, n: int, c: int, by_rows: bool, size: int):
        self.t, self.n, self.c, self.by_rows, self.size = t, n, c, by_rows, size
        if t.dense is not None:
            return
        cols = t.cols.reshape(-1)
        rows = t.rows
        if rows is None:  # padded [N, K]: row r holds positions r·K ... r·K + K-1
            k = t.cols.shape[1]
            rows = torch.arange(n, device=cols.device).repeat_interleave(k, output_size=n * k)
        valid = cols >= 0
        self.soft = t.values is not None and t.values.is_floating_point()
        if t.values is not None and not self.soft:  # hard 0/1 values: a listed 0 stays 0
            valid = valid & (t.values != 0)
        along, across = (rows, cols) if by_rows else (cols, rows)
        self.chunk = torch.where(valid, along // size, -1)
        offset = along % size
        length = n if by_rows else c
        last = length - (max(1, -(-length // size)) - 1) * size
        if by_rows:  # row-major [height, C]: the same offsets in every chunk
            self.full = self.last = offset * c + across
        else:        # row-major [N, width]: the last chunk may be narrower
            self.full = across * size + offset
            self.last = across * last + offset if last != size else self.full
        self.count = max(1, -(-length // size))

    def __call__(self, k: int, rows: slice, cols: slice) -> torch.Tensor:
        t = self.t
        if t.dense is not None:
            return t.dense[rows, cols].contiguous()
        height = len(range(*rows.indices(self.n)))
        width = len(range(*cols.indices(self.c)))
        spare = height * width
        local = self.last if k == self.count - 1 else self.full
        flat = torch.where(self.chunk == k, local, spare)
        if self.soft:
            buf = torch.zeros(spare + 1, dtype=torch.float32, device=flat.device)
            buf.index_put_((flat,), t.values.to(torch.float32), accumulate=True)
        else:
            buf = torch.zeros(spare + 1, dtype=torch.bool, device=flat.device)
            buf.index_fill_(0, flat, True)
        return buf[:spare].view(height, width)

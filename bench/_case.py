"""The interface between the runner and the per-loss ``bench_<loss>.py`` modules.

A loss module exposes:

- ``LOSS``: the loss's file stem, e.g. ``"focal_bce"``;
- ``cases(device, quick=False) -> list[Case]``: the (shape, dtype) points to time;
- ``candidates(case) -> list[Candidate]``: the implementations to compare, each
  one forward+backward call. Names the runner knows are ``fused`` (the library
  with ``backend="auto"``) and the baselines in ``run.BASELINES``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Case:
    """One (loss, shape, dtype) point.

    ``make_inputs`` builds fresh tensors on demand, so that only one case's
    inputs are alive at a time; its dict holds the logits under ``"input"``
    (a leaf with ``requires_grad``) and every other tensor the loss reads.
    """
    loss: str
    shape: tuple
    dtype: torch.dtype
    device: torch.device
    make_inputs: Callable[[], dict]

    @property
    def shape_str(self) -> str:
        return "x".join(str(s) for s in self.shape)

    @property
    def dtype_str(self) -> str:
        return str(self.dtype).replace("torch.", "")


@dataclass
class Candidate:
    """One implementation: ``fn(inputs)`` runs forward and ``loss.backward()``.

    ``backend`` is what actually executes (e.g. ``triton``, ``torch``,
    ``inductor``), so the CSV says what a ``fused`` row really measured.
    """
    name: str
    backend: str
    fn: Callable[[dict], None]


# On a CPU, shapes above this many elements are left out: their eager baselines
# take seconds per call, and `make bench` must finish in minutes on 2 cores.
CPU_MAX_NUMEL = 1 << 25


def grid(loss: str, shapes, dtypes, device, make_inputs) -> list:
    """One Case per (shape, dtype); ``make_inputs(shape, dtype, device)`` runs lazily."""
    device = torch.device(device)
    if device.type == "cpu":
        shapes = [s for s in shapes if math.prod(s) <= CPU_MAX_NUMEL]
    return [Case(loss, shape, dtype, device,
                 lambda s=shape, d=dtype: make_inputs(s, d, device))
            for shape in shapes for dtype in dtypes]

"""The interface between the runner and the per-loss ``bench_<loss>.py`` modules.

A loss module exposes ``BENCH``, a ``LossBench`` that declares what is
specific to the loss (shapes, the library call, the reference, the anchor,
options) and gives the runner:

- ``cases(device, quick=False) -> list[Case]``: the (shape, dtype) points to time;
- ``candidates(case) -> list[Candidate]``: the implementations to compare, each
  one forward+backward call, in this order:

  - ``fused-<backend>``: the library call with ``backend=<backend>`` for each fused
    backend native to the device (``triton`` and ``cuda`` on a GPU, ``cpu`` on a CPU);
    where there is none, one ``fused`` row with what ``backend="auto"`` resolves to;
  - ``eager``: the library call with ``backend="torch"``, the pure-PyTorch reference;
  - ``compile``: ``torch.compile`` of the ``fused_losses.reference`` function;
  - ``anchor``: the formula people use today, named by the row's backend column.

The runner computes speed-ups against the baselines in ``run.BASELINES``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

import fused_losses
from fused_losses._backend import resolve_backend


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
DTYPES = (torch.float32, torch.bfloat16)


def grid(loss: str, shapes, dtypes, device, make_inputs) -> list:
    """One Case per (shape, dtype); ``make_inputs(shape, dtype, device)`` runs lazily."""
    device = torch.device(device)
    if device.type == "cpu":
        shapes = [s for s in shapes if math.prod(s) <= CPU_MAX_NUMEL]
    return [Case(loss, shape, dtype, device,
                 lambda s=shape, d=dtype: make_inputs(s, d, device))
            for shape in shapes for dtype in dtypes]


def _seeded_logits(shape, dtype, device, scale: float):
    # A fixed seed, so every run of a case times the same data.
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(shape, generator=gen, device=device)
    if scale != 1.0:
        logits = scale * logits
    return gen, logits.to(dtype).requires_grad_()


def multilabel_inputs(shape, dtype, device, *, positive_rate: float = 0.02,
                      logit_scale: float = 1.0, target_dtype=torch.bool, more=None) -> dict:
    """Logits with 0/1 targets that are ``positive_rate`` positive (the imbalance
    these losses exist for). ``more(gen, shape, device)`` adds a loss's other
    tensors, drawn from the same stream after the targets."""
    gen, logits = _seeded_logits(shape, dtype, device, logit_scale)
    target = torch.rand(shape, generator=gen, device=device) < positive_rate
    if target_dtype != torch.bool:
        target = target.to(target_dtype)
    return {"input": logits, "target": target, **(more(gen, shape, device) if more else {})}


def class_index_inputs(shape, dtype, device, *, ignore_rate: float = 0.0) -> dict:
    """Logits ``[N, C]`` with one int64 class index per row; ``ignore_rate`` of
    the rows get -100, the ignore index, so the masking path is timed too."""
    gen, logits = _seeded_logits(shape, dtype, device, 1.0)
    target = torch.randint(0, shape[1], (shape[0],), generator=gen, device=device)
    if ignore_rate:
        ignored = torch.rand(shape[0], generator=gen, device=device) < ignore_rate
        target = torch.where(ignored, torch.full_like(target, -100), target)
    return {"input": logits, "target": target}


def native_backends(device: torch.device, has_kernels=None) -> list:
    """Every fused backend that runs natively on ``device`` (interpreted Triton
    on a CPU is a test vehicle, not a contender); ``has_kernels(backend)`` drops
    those a loss has no kernels for in this installation."""
    native = ("triton", "cuda") if device.type == "cuda" else ("cpu",)
    return [b for b in fused_losses.available_backends(device)
            if b in native and (has_kernels is None or has_kernels(b))]


@dataclass
class LossBench:
    """What a ``bench_<loss>.py`` declares; ``cases`` and ``candidates`` serve the runner.

    Every implementation takes ``input`` and ``target``, and every other tensor
    of the inputs dict as a keyword; the library call and the reference also
    take ``options``, and the library call ``backend=``. ``anchor`` is
    (its name in the CSV's backend column, its function).
    """
    loss: str
    shapes: tuple
    quick_shapes: tuple
    make_inputs: Callable
    fused: Callable
    reference: Callable
    anchor: tuple
    options: dict = field(default_factory=dict)
    dtypes: tuple = DTYPES
    has_kernels: Callable | None = None
    auto_fallback: bool = True
    _compiled: Callable = field(default=None, init=False, repr=False)

    def cases(self, device, quick: bool = False) -> list:
        """The (shape, dtype) points on ``device``; ``quick`` gives small shapes for smoke tests."""
        return grid(self.loss, self.quick_shapes if quick else self.shapes, self.dtypes,
                    device, self.make_inputs)

    @staticmethod
    def _tensors(inputs) -> dict:
        return {k: v for k, v in inputs.items() if k not in ("input", "target")}

    def run_fused(self, inputs, backend: str = "auto") -> None:
        self.fused(inputs["input"], inputs["target"], **self._tensors(inputs), **self.options,
                   backend=backend).backward()

    def run_compiled(self, inputs) -> None:
        # One compiled callable per loss; dynamic=False gives each (shape, dtype)
        # its own specialised graph, as a training loop with a fixed batch shape would.
        if self._compiled is None:
            self._compiled = torch.compile(self.reference, dynamic=False)
        self._compiled(inputs["input"], inputs["target"], **self._tensors(inputs),
                       **self.options).backward()

    def run_anchor(self, inputs) -> None:
        self.anchor[1](inputs["input"], inputs["target"], **self._tensors(inputs)).backward()

    def native_backends(self, device: torch.device) -> list:
        return native_backends(device, self.has_kernels)

    def candidates(self, case: Case) -> list:
        """One ``fused-<backend>`` row per fused backend, then eager, compile and the anchor."""
        fused = [Candidate(f"fused-{b}", b, functools.partial(self.run_fused, backend=b))
                 for b in self.native_backends(case.device)]
        if not fused and self.auto_fallback:  # nothing fused here: show what auto gives
            auto = resolve_backend("auto", case.device.type, case.dtype != torch.float64)
            fused = [Candidate("fused", auto, self.run_fused)]
        return fused + [
            Candidate("eager", "torch", functools.partial(self.run_fused, backend="torch")),
            Candidate("compile", "inductor", self.run_compiled),
            Candidate("anchor", self.anchor[0], self.run_anchor),
        ]

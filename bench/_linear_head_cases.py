"""Cases, inputs and candidates of ``bench.linear_head`` (see its docstring)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

import fused_losses
from fused_losses._backend import resolve_backend

from .bench_focal_bce import torchvision_focal

GAMMA, ALPHA = 2.0, 0.25
GIB = 1 << 30
# The eager torchvision chain's peak in logits' sizes (measured on the CPU: 11.0x the
# fp32 logits at (2048, 128, 20000)), plus its dense target: it is skipped where that
# does not fit in 95 % of the free memory.
EAGER_TEMPS = 11
@dataclass
class Case:
    loss: str  # "focal_bce" or "asl"
    n: int
    h: int
    c: int
    dtype: torch.dtype
    device: torch.device
    k_min: int
    k_max: int
    csr: bool = False  # also a fused-csr row
    baselines: bool = True  # eager, compile, linear_cross_entropy (focal only)

    @property
    def shape_str(self) -> str:
        return f"{self.n}x{self.h}x{self.c}"

    @property
    def dtype_str(self) -> str:
        return str(self.dtype).replace("torch.", "")


@dataclass
class Candidate:
    name: str
    backend: str
    target_form: str
    fn: Callable[[], None]
    skip: str = ""


def cases(device: torch.device, quick: bool) -> list:
    if device.type == "cuda":
        bf = torch.bfloat16
        if quick:
            return [Case("focal_bce", 1024, 256, 16384, bf, device, 10, 50, csr=True),
                    Case("asl", 1024, 256, 16384, bf, device, 10, 50, baselines=False)]
        return [Case("focal_bce", 8192, 1024, 131072, bf, device, 10, 50, csr=True),
                Case("focal_bce", 4096, 768, 670000, bf, device, 10, 50),
                Case("asl", 8192, 1024, 131072, bf, device, 10, 50, baselines=False)]
    f32 = torch.float32
    if quick:
        return [Case("focal_bce", 128, 32, 2048, f32, device, 2, 6, csr=True),
                Case("asl", 128, 32, 2048, f32, device, 2, 6, baselines=False)]
    return [Case("focal_bce", 2048, 128, 200000, f32, device, 8, 12, csr=True),
            Case("asl", 2048, 128, 200000, f32, device, 8, 12, baselines=False)]


class Inputs:
    """Seeded parameters and targets; the dense targets are built on first use."""

    def __init__(self, case: Case):
        self.case = case
        dev, dt, n, h, c = case.device, case.dtype, case.n, case.h, case.c
        gen = torch.Generator(device=dev).manual_seed(0)
        self.x = torch.randn(n, h, generator=gen, device=dev).to(dt).requires_grad_()
        self.w = (torch.randn(c, h, generator=gen, device=dev) / math.sqrt(h)).to(dt)
        self.w.requires_grad_()
        # A prior bias (~2 % positive), as a trained extreme-multilabel head starts.
        self.b = (-4.0 + 0.1 * torch.randn(c, generator=gen, device=dev)).to(dt).requires_grad_()
        counts = torch.randint(case.k_min, case.k_max + 1, (n,), generator=gen, device=dev)
        idx = torch.randint(0, c, (n, case.k_max), generator=gen, device=dev)
        pad = torch.arange(case.k_max, device=dev) >= counts[:, None]
        idx = torch.where(pad, c, idx).sort(dim=1).values  # positives first, sorted
        self.padded = torch.where(idx == c, -1, idx)
        self.class_target = self.padded[:, 0].clone()  # every row has >= 1 positive
        self._dense: dict = {}

    @property
    def params(self) -> tuple:
        return self.x, self.w, self.b

    def zero_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def dense(self, dtype) -> torch.Tensor:
        if dtype not in self._dense:
            if torch.bool not in self._dense:
                d = torch.zeros(self.case.n, self.case.c, dtype=torch.bool, device=self.x.device)
                rows = torch.arange(self.case.n, device=d.device)[:, None].expand_as(self.padded)
                keep = self.padded >= 0
                d[rows[keep], self.padded[keep]] = True
                self._dense[torch.bool] = d
            self._dense[dtype] = self._dense[torch.bool].to(dtype)
        return self._dense[dtype]

    def csr(self) -> torch.Tensor:
        keep = self.padded >= 0
        crow = torch.zeros(self.case.n + 1, dtype=torch.int64, device=self.x.device)
        crow[1:] = keep.sum(1).cumsum(0)
        cols = self.padded[keep]
        with warnings.catch_warnings():  # "beta state" and invariant-check notices
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, cols, torch.ones_like(cols, dtype=torch.bool),
                                           (self.case.n, self.case.c))


def lce_rows(case: Case):
    """``batch_chunk_size`` of F.linear_cross_entropy: the default options on a CPU
    (torch 2.13) take 1 row per chunk, a GEMV and a rank-1 update of the whole
    grad_weight per row (minutes per call at (2048, 128, 200000)); here a chunk's
    fp32 logits get the fused head's budget (5 % of N·C·4 B, at most 32 MiB).
    None (torch's default) on a GPU."""
    if case.device.type != "cpu":
        return None
    budget = min(0.05 * case.n * case.c * 4, 32 << 20)
    return max(1, min(case.n, int(budget // (case.c * 4))))


def eager_step(x, w, b, target):
    return torchvision_focal(F.linear(x, w, b), target, None, GAMMA, ALPHA)


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as fh:
        info = dict(line.split(":", 1) for line in fh)
    return int(info["MemAvailable"].split()[0]) * 1024


def candidates(case: Case, inp: Inputs, no_compile: bool, quick: bool) -> list:
    x, w, b = inp.params
    dev = case.device
    auto = resolve_backend("auto", dev.type, True)
    if case.loss == "asl":
        def fused_asl():
            fused_losses.linear_asymmetric_loss(x, w, inp.padded, linear_bias=b).backward()

        def unfused_asl():
            fused_losses.asymmetric_loss(F.linear(x, w, b), inp.dense(torch.bool)).backward()
        return [Candidate("fused", auto, "padded", fused_asl),
                Candidate("unfused", f"linear+{auto}", "dense bool", unfused_asl)]
    opts = dict(gamma=GAMMA, alpha=ALPHA, reduction="mean")

    def fused(target_of):
        def run():
            fused_losses.linear_focal_bce(x, w, target_of(), linear_bias=b, **opts).backward()
        return run

    def unfused():
        fused_losses.focal_bce(F.linear(x, w, b), inp.dense(torch.bool), **opts).backward()

    def eager():
        eager_step(x, w, b, inp.dense(case.dtype)).backward()

    compiled = None

    def compile_run():
        nonlocal compiled
        if compiled is None:
            compiled = torch.compile(eager_step, dynamic=False)
        compiled(x, w, b, inp.dense(case.dtype)).backward()

    from torch.nn.modules.linear_cross_entropy_options import LinearCrossEntropyOptions
    lce_options = LinearCrossEntropyOptions(batch_chunk_size=lce_rows(case))

    def linear_ce():
        F.linear_cross_entropy(x, w, inp.class_target, linear_bias=b,
                               options=lce_options).backward()

    csr = None

    def csr_target():
        nonlocal csr
        if csr is None:
            csr = inp.csr()
        return csr

    out = [Candidate("fused", auto, "padded", fused(lambda: inp.padded)),
           Candidate("unfused", f"linear+{auto}", "dense bool", unfused)]
    if case.csr:
        out.append(Candidate("fused-csr", auto, "csr", fused(csr_target)))
    if not case.baselines:
        return out
    need = (EAGER_TEMPS + 1) * case.n * case.c * case.dtype.itemsize
    free = free_bytes(dev)
    eager_skip = (f"skipped: the eager chain needs ~{need / GIB:.1f} GiB, "
                  f"{free / GIB:.1f} GiB free" if need > 0.95 * free else "")
    form = f"dense {case.dtype_str}"
    compile_skip = eager_skip or ("skipped: --no-compile" if no_compile else "")
    if not compile_skip and dev.type == "cpu" and quick:
        compile_skip = "skipped: --quick on a CPU (inductor's compile alone takes ~15 s here)"
    out += [Candidate("eager", "torchvision formula", form, eager, eager_skip),
            Candidate("linear_cross_entropy", "F.linear_cross_entropy", "class index",
                      linear_ce),
            Candidate("compile", "inductor", form, compile_run, compile_skip)]
    return out

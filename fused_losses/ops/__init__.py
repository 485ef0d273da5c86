"""torch.library wiring of every fused op, driven by the loss specs.

For each spec and each fused backend this registers the fake kernels and the
autograd of the ops (``fused_losses::<stem>_triton_*`` for Triton,
``fused_losses::<stem>_*`` for the C++ CPU/CUDA kernels) from the spec's output
protocol (``_protocols.py``), and keeps the callable that runs them.
``run(spec, backend, ...)`` is what the functional forms call.
"""
from __future__ import annotations

import torch

from .. import _backend
from ..spec import SPECS
from ._protocols import PROTOCOLS

_RUNNERS = {}   # (stem, backend) -> runner(input, target, values, reduction)
_MISSING = {}   # (stem, backend) -> why it is absent


def _cpp_problem(spec) -> str | None:
    """Why the C++ extension cannot serve ``spec`` (None when it can)."""
    if _backend._EXT_PROBLEM is not None:
        return _backend._EXT_PROBLEM
    ops = torch.ops.fused_losses
    if not hasattr(ops, PROTOCOLS[spec.protocol].op_names(spec.stem)[0]):
        return "not built: fused_losses._C predates this loss; rebuild it"
    built = ops._option_names(spec.stem) if hasattr(ops, "_option_names") else None
    wanted = ",".join(o.name for o in spec.kernel_options)
    if built != wanted:
        return (f"stale build: fused_losses._C was built with {spec.stem} options "
                f"[{built}], the spec declares [{wanted}]; rebuild it (make test)")
    return None


def _register() -> None:
    for spec in SPECS:
        protocol = PROTOCOLS[spec.protocol]
        problems = {"triton": _backend._TRITON_PROBLEM, "cpp": _cpp_problem(spec)}
        for kind, prefix in (("triton", f"{spec.stem}_triton"), ("cpp", spec.stem)):
            backends = ("triton",) if kind == "triton" else ("cpu", "cuda")
            if problems[kind] is not None:
                for b in backends:
                    _MISSING[(spec.stem, b)] = problems[kind]
                continue
            runner = protocol.register(spec, prefix)
            for b in backends:
                _RUNNERS[(spec.stem, b)] = runner


_register()


def has_backend(spec, backend: str) -> bool:
    """Whether ``backend`` has kernels for ``spec``'s loss in this installation."""
    return backend == "torch" or (spec.stem, backend) in _RUNNERS


def missing_reason(spec, backend: str) -> str:
    return _MISSING.get((spec.stem, backend), "no kernels registered")


def run(spec, backend: str, input, target, values: dict, reduction: str):
    """Run ``spec``'s fused ops on a resolved ``backend`` (arguments validated)."""
    return _RUNNERS[(spec.stem, backend)](input, target, values, reduction)

"""Conformance battery, ops: ``torch.library.opcheck`` on every C++ op a loss
dispatches, the C++ ops' own input checks, and ``torch.compile(fullgraph=True)``
of a training step through every loss module on CPU (C++ and reference
backends). The same checks on CUDA, and on the Triton ops (whose opcheck
cannot run under the interpreter), are in test_conformance_cuda.py.

The ops and their arguments are recorded from a real forward+backward of
each loss (tests/_conformance_ops.py), so the tests follow their signatures.
"""
import pytest
import torch

import fused_losses
from _conformance import REDUCTIONS, allows, spec_params
from _conformance_ops import opcheck_calls, record_ops, takes_input, training_step
from fused_losses.spec import SPECS

SPECS_P = spec_params()


def _needs_cpu_kernels(spec):
    if "cpu" not in fused_losses.available_backends("cpu") or \
            not fused_losses.ops.has_backend(spec, "cpu"):
        pytest.skip(f"no C++ {spec.stem} kernels in this build")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("spec", SPECS_P)
def test_opcheck_cpp_ops(spec, reduction):
    _needs_cpu_kernels(spec)
    opcheck_calls(record_ops(spec, "cpu", reduction))


def _outside(opt):
    """Values just outside a ranged option's spec range (None: no range)."""
    if opt.type is bool or opt.low is None:
        return []
    return [opt.low - 0.5, opt.high if opt.high_open else opt.high + 0.5]


def _broken(spec, func, args):
    """(what, index, value): each tensor argument one row longer, an options
    bundle of the wrong length or with an option outside its spec range, an
    unknown reduction, integer logits, a complex target: calls the Python
    layer never makes."""
    out = []
    for i, (a, arg) in enumerate(zip(func._schema.arguments, args)):
        if isinstance(arg, torch.Tensor) and arg.dim() and arg.shape[0]:
            out.append((f"{a.name} one row longer", i, torch.cat([arg, arg[:1]])))
        if a.name == "options":
            out += [("options short", i, arg[:-1]), ("options long", i, arg + [0.0])]
            for k, opt in enumerate(spec.kernel_options):
                out += [(f"{opt.name}={value}", i, arg[:k] + [value] + arg[k + 1:])
                        for value in _outside(opt)]
        if a.name == "reduction":
            out.append(("reduction", i, "avg"))
    if takes_input(func):
        out += [("integer input", 0, args[0].long()),
                ("complex target", 1, args[1].to(torch.complex64))]
    return out


@pytest.mark.parametrize("spec", SPECS_P)
def test_cpp_ops_refuse_what_the_python_layer_would(spec):
    """Called directly through torch.ops, every op refuses arguments that do not
    fit together with a RuntimeError instead of reading out of bounds."""
    _needs_cpu_kernels(spec)
    for reduction in REDUCTIONS:
        for func, args, kwargs, _ in record_ops(spec, "cpu", reduction):
            for what, i, value in _broken(spec, func, args):
                bad = list(args)
                bad[i] = value
                name = what.split("=")[0] if "=" in what else ""
                with pytest.raises(RuntimeError, match=f"{name} must be in" if name else None):
                    func(*bad, **kwargs)
                    pytest.fail(f"{func._schema.name} accepted {what}")


def test_cpu_capability_is_reported():
    if "cpu" not in fused_losses.available_backends("cpu"):
        pytest.skip("C++ extension not built")
    assert torch.ops.fused_losses._cpu_capability() in ("default", "avx2", "avx512")


def _compile_cases():
    """Inductor once per loss on the C++ kernels (a full compile costs seconds on
    CPU); the other variants through aot_eager, which traces the same graph
    (Dynamo fullgraph, fake kernels, AOTAutograd) without generating code."""
    out = []
    for spec in SPECS:
        default = spec.default_reduction
        variants = [("cpu", default, False, "inductor"), ("cpu", "none", False, "aot_eager"),
                    ("torch", default, False, "aot_eager")]
        if allows(spec, (2, 3, 4)):
            variants.append(("cpu", default, True, "aot_eager"))
        out += [pytest.param(spec, *v, id=f"{spec.stem}-{v[0]}-{v[1]}-"
                             f"{'spatial-' if v[2] else ''}{v[3]}") for v in variants]
    return out


@pytest.mark.parametrize("spec,backend,reduction,spatial,compile_backend", _compile_cases())
def test_compile_fullgraph_training_step(spec, backend, reduction, spatial, compile_backend):
    if backend == "cpu":
        _needs_cpu_kernels(spec)
    training_step(spec, backend, reduction, spatial, compile_backend=compile_backend)


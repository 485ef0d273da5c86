"""Spec-driven op and compile checks for the conformance battery
(tests/test_conformance_ops.py on CPU, tests/test_conformance_cuda.py on a GPU).

The fused ops and their arguments are recorded from a real forward+backward
of each loss (``record_ops``), not written down, so the checks follow the
ops' signatures as they change.
"""
from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from _conformance import case, first_shape, module_class, run
from helpers import assert_compiled_step_matches_eager

C = 12  # classes of the training-step cases
OPCHECKS = ("test_schema", "test_autograd_registration", "test_faketensor",
            "test_aot_dispatch_dynamic")


def _clone(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


class _Recorder(TorchDispatchMode):
    """Every ``fused_losses`` op dispatched inside it: (op, args, kwargs, output),
    the arguments copied before the op runs (some update state in place)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace != "fused_losses":
            return func(*args, **kwargs)
        copied = tree_map(_clone, (args, kwargs))
        out = func(*args, **kwargs)
        self.calls.append((func, *copied, out))
        return out


def record_ops(spec, backend, reduction, device="cpu"):
    """The fused ops one forward+backward of ``spec``'s loss dispatches."""
    x, t, values = case(spec, first_shape(spec, [(3, 5, 7), (13, 20)]), "everything",
                        device=device, hard=True)
    with _Recorder() as rec:
        run(spec, x, t, values, backend, reduction)
    assert rec.calls, f"{spec.stem}: backend={backend} dispatched no fused op"
    return rec.calls


def takes_input(func):
    return func._schema.arguments[0].name == "input"


def opcheck_calls(calls):
    """opcheck every recorded call; a forward op's logits require grad.

    A forward is an op on (input, target) returning a tuple, the loss first.
    Skipped: the AOT check of a (loss, grad, scale) forward whose scale is not
    1 (a mean): its backward scales the op's own ``grad`` output in place, so
    eager and AOT outputs differ after the backward by design."""
    for func, args, kwargs, out in calls:
        args = tree_map(_clone, args)
        utils = OPCHECKS
        if takes_input(func) and isinstance(out, tuple):
            args = (args[0].requires_grad_(True),) + tuple(args[1:])
            if len(out) == 3 and not bool((out[2] == 1).all()):
                utils = OPCHECKS[:-1]
        torch.library.opcheck(func, args, kwargs, test_utils=utils)


def training_step(spec, backend, reduction, spatial=False, device="cpu",
                  compile_backend="inductor"):
    """Compiled and eager steps of ``Linear -> loss module`` agree (loss, weight
    gradient, module state). ``spatial``: logits [N, C, S] read through a
    transpose of the model's [N, S, C] output, so they are not contiguous."""
    torch.manual_seed(0)
    model = torch.nn.Linear(16, C).to(device)
    n = 16 if spatial else 64
    shape = (n, C, 4) if spatial else (n, C)
    _, y, values = case(spec, shape, "everything", hard=True, device=device)
    held = {p.name: values[p.name] for p in module_class(spec).held_params()}
    crit = module_class(spec)(**held, reduction=reduction, backend=backend).to(device)
    h = torch.randn(n, 4, 16, device=device) if spatial else torch.randn(n, 16, device=device)

    def forward(h, y):
        logits = model(h)
        if spatial:
            logits = logits.transpose(1, 2)
        loss = crit(logits, y)
        return loss if loss.dim() == 0 else loss.mean()

    assert_compiled_step_matches_eager(model, forward, h, y, state=crit,
                                       compile_backend=compile_backend)

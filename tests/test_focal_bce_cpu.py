"""The C++ CPU kernel beyond parity: threads, torch.compile, direct op calls."""
import pytest
import torch

import fused_losses
from helpers import check_compiled_training_step, forward_backward, make_inputs

pytestmark = pytest.mark.skipif("cpu" not in fused_losses.available_backends("cpu"),
                                reason="fused_losses._C is not built")


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bit_identical_for_one_and_two_threads(threads, reduction):
    x, t = make_inputs((300, 1001), torch.float32, torch.int64)
    t.view(-1)[::11] = -1
    runs = []
    for n in (1, 2, 1, 2):
        threads(n)
        runs.append(forward_backward(lambda z: fused_losses.focal_bce(
            z, t, ignore_index=-1, alpha=0.25, reduction=reduction, backend="cpu"), x))
    for loss, grad in runs[1:]:
        assert torch.equal(loss, runs[0][0]) and torch.equal(grad, runs[0][1])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compile_fullgraph_training_step(reduction):
    check_compiled_training_step("cpu", "cpu", reduction)


@pytest.mark.parametrize("args,match", [
    (lambda x, t: (x, t[:, :5]), "target shape"),
    (lambda x, t: (x.long(), t), "input must be"),
    (lambda x, t: (x, t.to(torch.complex64)), "unsupported dtype"),
])
def test_direct_op_call_rejects_bad_input(args, match):
    x, t = make_inputs((4, 6))
    x, t = args(x, t)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fused_losses.focal_bce_fwd(x, t, None, None, None, 2.0, None, 0.0, None,
                                             "mean", False)


def test_direct_op_call_rejects_bad_operand():
    x, t = make_inputs((4, 6))
    with pytest.raises(RuntimeError):
        torch.ops.fused_losses.focal_bce_fwd(x, t, None, torch.ones(5), None, 2.0, None, 0.0,
                                             None, "mean", False)
    with pytest.raises(RuntimeError, match="reduction"):
        torch.ops.fused_losses.focal_bce_fwd(x, t, None, None, None, 2.0, None, 0.0, None,
                                             "avg", False)


def test_auto_picks_cpu_kernel_for_cpu_tensors():
    from fused_losses._backend import resolve_backend
    assert resolve_backend("auto", "cpu", True) == "cpu"
    assert resolve_backend("auto", "cpu", False) == "torch"


def test_capability_is_reported():
    assert torch.ops.fused_losses._cpu_capability() in ("default", "avx2", "avx512")

"""The shared backward of the (loss, grad, scale) ops: ``grad *= factor`` in
place, skipped when the factor is exactly 1 (a plain ``loss.backward()`` of a
mean or a sum). The Triton kernel runs under the interpreter here, the C++ op
on the CPU; the CUDA kernel is compile-checked (test_cuda_compile.py) and run
by the tests marked ``cuda``."""
import pytest
import torch

import fused_losses
from fused_losses.ops._fused import _scale_saved_grad

HAS_TRITON = "triton" in fused_losses.available_backends("cpu")
HAS_CPP = "cpu" in fused_losses.available_backends("cpu")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# 0, 1, a tail after the 16-byte groups, more than one Triton program
SIZES = [0, 1, 13, 4096 * 2 + 5]


def _triton_scale():
    if not HAS_TRITON:
        pytest.skip("triton unavailable (CPU tensors need TRITON_INTERPRET=1)")
    from fused_losses.triton._scale import scale_grad_
    return scale_grad_


def _cpp_scale():
    if not HAS_CPP:
        pytest.skip("C++ extension not built")
    return torch.ops.fused_losses.scale_grad_


def _expected(grad, factor):
    return (grad.float() * factor).to(grad.dtype)


def _check_scaled(got, want):
    # One bf16 ulp: the interpreter's float32 -> bfloat16 cast does not round
    # to nearest as the GPU's does.
    ulp = {torch.bfloat16: 2 ** -7, torch.float16: 0.0, torch.float32: 0.0}[got.dtype]
    torch.testing.assert_close(got.float(), want.float(), rtol=ulp, atol=0.0)


def _one(value, dtype=torch.float32, device="cpu"):
    return torch.tensor(value, dtype=dtype, device=device)


@pytest.mark.parametrize("kind", ["triton", "cpp"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("numel", SIZES)
def test_factor_one_leaves_grad_untouched_and_others_scale(kind, dtype, numel):
    scale = _triton_scale() if kind == "triton" else _cpp_scale()
    gen = torch.Generator().manual_seed(numel)
    grad = torch.randn(numel, generator=gen).to(dtype)
    before = grad.clone()
    scale(grad, _one(1.0), _one(1.0))
    assert torch.equal(grad.view(torch.int8), before.view(torch.int8))  # every bit
    scale(grad, _one(4.0), _one(0.25))  # the product is 1: skipped too
    assert torch.equal(grad.view(torch.int8), before.view(torch.int8))
    scale(grad, _one(0.37), _one(1.0))
    _check_scaled(grad, _expected(before, 0.37))
    scale(grad, _one(1.0), _one(float("nan")))
    assert grad.isnan().all()


@pytest.mark.parametrize("kind", ["triton", "cpp"])
@pytest.mark.parametrize("gout_dtype", [torch.float16, torch.bfloat16])
def test_factor_is_the_fp32_product_of_a_half_grad_output(kind, gout_dtype):
    """A bf16/fp16 loss's grad_output is widened and multiplied in fp32, as
    autograd's ``grad_output * scale`` with an fp32 scale would."""
    scale = _triton_scale() if kind == "triton" else _cpp_scale()
    grad = torch.randn(1000)
    before = grad.clone()
    gout, s = _one(0.3, gout_dtype), _one(1.0 / 3.0)
    scale(grad, gout, s)
    torch.testing.assert_close(grad, before * (gout.float() * s), rtol=0.0, atol=0.0)


@pytest.mark.parametrize("kind", ["triton", "cpp"])
def test_bad_arguments_are_refused(kind):
    scale = _triton_scale() if kind == "triton" else _cpp_scale()
    exc = ValueError if kind == "triton" else RuntimeError
    grad = torch.randn(4, 6)
    with pytest.raises(exc, match="contiguous"):
        scale(grad.t(), _one(2.0), _one(1.0))
    with pytest.raises(exc, match="float16/bfloat16 grad_output"):
        scale(grad, _one(2.0, torch.float64), _one(1.0))
    with pytest.raises(exc, match="float32 scale"):
        scale(grad, _one(2.0), _one(1.0, torch.bfloat16))
    with pytest.raises(exc, match="one-element float32 scale"):
        scale(grad, _one(2.0), torch.tensor([2.0, 3.0]))


def test_cpp_op_schema():
    _cpp_scale()
    grad = torch.randn(8, 3)
    torch.library.opcheck(torch.ops.fused_losses.scale_grad_.default,
                          (grad, _one(0.5, torch.bfloat16), _one(0.5)))


def test_backward_helper_on_the_cpu():
    g = torch.randn(5, 7)
    want = g.clone()
    assert _scale_saved_grad(g, _one(2.0), _one(0.5)) is g and torch.equal(g, want)
    assert _scale_saved_grad(g, _one(0.5), _one(1.0)) is g and torch.equal(g, want * 0.5)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_kernels_skip_on_device_and_capture(dtype):
    """Both GPU kernels: factor 1 leaves every bit, others scale, no host sync;
    a CUDA graph replays the decision with a factor changed on the device."""
    kernels = []
    if fused_losses._backend._EXT_HAS_CUDA:
        kernels.append(torch.ops.fused_losses.scale_grad_)
    if "triton" in fused_losses.available_backends("cuda"):
        from fused_losses.triton._scale import scale_grad_
        kernels.append(scale_grad_)
    if not kernels:
        pytest.skip("no GPU scale kernel in this build")
    for scale in kernels:
        grad = torch.randn(262144 * 3 + 7, device="cuda").to(dtype)
        gout, factor = _one(1.0, dtype, "cuda"), torch.ones((), device="cuda")
        before = grad.clone()
        torch.cuda.set_sync_debug_mode("error")
        try:
            scale(grad, gout, factor)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.equal(grad, before)
        scale(grad, gout, factor * 0.37)
        _check_scaled(grad, _expected(before, 0.37))
        graph_grad, graph_factor = before.clone(), torch.ones((), device="cuda")
        scale(graph_grad, gout, graph_factor)  # warm-up (Triton compiles outside capture)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            scale(graph_grad, gout, graph_factor)
        graph_grad.copy_(before)
        graph.replay()
        assert torch.equal(graph_grad, before)
        graph_factor.fill_(0.37)
        graph.replay()
        _check_scaled(graph_grad, _expected(before, 0.37))

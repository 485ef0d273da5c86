// fused_losses::scale_grad_: the shared backward of every (loss, grad, scale)
// op, grad *= grad_output * scale in place (csrc/cuda/scale.cu on CUDA), the
// factor formed where the kernel runs so the backward launches nothing else.
// A factor of exactly 1, what a plain loss.backward() of a mean or a sum gives,
// leaves grad untouched: on CUDA the kernel decides on the device (no host
// sync); on the CPU the factor is read on the host, which costs no sync there.
#include "binding.h"

namespace fused_losses {
namespace {

void check_scalar(const char* name, const at::Tensor& t, const at::Tensor& grad, bool fp32) {
  const auto dtype = t.scalar_type();
  const bool ok_dtype = fp32 ? dtype == at::kFloat
                             : (dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16);
  TORCH_CHECK(t.numel() == 1 && ok_dtype && t.device() == grad.device(),
              "fused_losses: scale_grad_ needs a one-element ",
              fp32 ? "float32" : "float32/float16/bfloat16", " ", name, " on ", grad.device(),
              ", got ", dtype, " of shape ", t.sizes(), " on ", t.device());
}

void scale_grad_(at::Tensor grad, const at::Tensor& grad_output, const at::Tensor& scale) {
  TORCH_CHECK(grad.is_floating_point() && grad.is_contiguous(),
              "fused_losses: scale_grad_ needs a contiguous floating grad, got ",
              grad.scalar_type(), grad.is_contiguous() ? "" : " (not contiguous)");
  check_scalar("grad_output", grad_output, grad, false);
  check_scalar("scale", scale, grad, true);
  run_on_device(
      grad.device(),
      [&] {
        // The fp32 product, as the CUDA kernel forms it; an fp32 tensor factor
        // keeps half grads' multiply in fp32 (a Python scalar would round to half).
        const float f = grad_output.item<float>() * scale.item<float>();
        if (f != 1.f) grad.mul_(at::scalar_tensor(f, scale.options()));
      },
      [&](void* stream) {
#ifdef FUSED_LOSSES_WITH_CUDA
        cuda_scale_grad(grad.data_ptr(), dtype_code(grad), grad.numel(), grad_output.data_ptr(),
                        dtype_code(grad_output), scale.data_ptr<float>(), stream);
#else
        (void)stream;
#endif
      });
}

void define_scale_impls(torch::Library& m) { m.impl("scale_grad_", &scale_grad_); }

}  // namespace
}  // namespace fused_losses

TORCH_LIBRARY_FRAGMENT(fused_losses, m) {
  m.def("scale_grad_(Tensor(a!) grad, Tensor grad_output, Tensor scale) -> ()");
}

FUSED_LOSSES_IMPL(fused_losses::define_scale_impls)

// fused_losses::scale_grad_: the shared backward of every (loss, grad, scale)
// op, grad *= factor in place (csrc/cuda/scale.cu on CUDA). A factor of
// exactly 1, what a plain loss.backward() of a mean or a sum gives, leaves
// grad untouched: on CUDA the kernel decides on the device (no host sync); on
// the CPU the factor is read on the host, which costs no sync there.
#include "binding.h"

namespace fused_losses {
namespace {

void scale_grad_(at::Tensor grad, const at::Tensor& factor) {
  TORCH_CHECK(grad.is_floating_point() && grad.is_contiguous(),
              "fused_losses: scale_grad_ needs a contiguous floating grad, got ",
              grad.scalar_type(), grad.is_contiguous() ? "" : " (not contiguous)");
  TORCH_CHECK(factor.numel() == 1 && factor.scalar_type() == at::kFloat &&
                  factor.device() == grad.device(),
              "fused_losses: scale_grad_ needs a one-element float32 factor on ", grad.device(),
              ", got ", factor.scalar_type(), " of shape ", factor.sizes(), " on ",
              factor.device());
  run_on_device(
      grad.device(),
      [&] {
        if (factor.item<float>() != 1.f) grad.mul_(factor);
      },
      [&](void* stream) {
#ifdef FUSED_LOSSES_WITH_CUDA
        cuda_scale_grad(grad.data_ptr(), dtype_code(grad), grad.numel(),
                        factor.data_ptr<float>(), stream);
#else
        (void)stream;
#endif
      });
}

void define_scale_impls(torch::Library& m) { m.impl("scale_grad_", &scale_grad_); }

}  // namespace
}  // namespace fused_losses

TORCH_LIBRARY_FRAGMENT(fused_losses, m) {
  m.def("scale_grad_(Tensor(a!) grad, Tensor factor) -> ()");
}

FUSED_LOSSES_IMPL(fused_losses::define_scale_impls)

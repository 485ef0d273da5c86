// softmax_focal ops: schemas and what the shared binding (binding.h) needs to
// know about the loss. Kernels: csrc/cpu/softmax_focal_kernel.h,
// csrc/cuda/softmax_focal.cu.
#include "binding.h"

namespace fused_losses {
namespace {

struct SoftmaxFocal : LossTraits<SoftmaxFocalOptions, Targets::Index, Dims::ClassDim> {
  // alpha: one float weight per class.
  static void operands(Launch<Options>& l, const OptionalTensor& alpha) {
    if (!alpha.has_value()) return;
    const int64_t cols = l.args.cols;
    TORCH_CHECK(alpha->device() == l.input.device() && alpha->is_floating_point() &&
                    alpha->dim() == 1 && alpha->size(0) == cols,
                "fused_losses: alpha must be a floating [", cols, "] tensor on ",
                l.input.device(), ", got ", alpha->sizes(), " on ", alpha->device());
    at::Tensor& keep = l.keep[SoftmaxFocalOperands::alpha];
    keep = alpha->to(at::kFloat).contiguous();
    l.args.operands[SoftmaxFocalOperands::alpha] = vector_operand(keep);
  }
};

using Ops = ElementwiseOps<SoftmaxFocal, OptionalTensor>;

}  // namespace
}  // namespace fused_losses

TORCH_LIBRARY_FRAGMENT(fused_losses, m) {
  m.def(
      "softmax_focal_fwd(Tensor input, Tensor target, Tensor? alpha, float[] options, "
      "str reduction, bool compute_grad) -> (Tensor, Tensor, Tensor)");
  m.def(
      "softmax_focal_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor? alpha, "
      "float[] options) -> Tensor");
}

FUSED_LOSSES_IMPL(fused_losses::Ops::define_impls)

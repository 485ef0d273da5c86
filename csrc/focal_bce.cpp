// focal_bce ops: schemas and what the shared binding (binding.h) needs to know
// about the loss. Kernels: csrc/cpu/focal_bce_kernel.h, csrc/cuda/focal_bce.cu.
#include "binding.h"

namespace fused_losses {
namespace {

struct FocalBce : LossTraits<FocalBceOptions, Targets::Binary, Dims::Any> {
  static void operands(Launch<Options>& l, const OptionalTensor& alpha,
                       const OptionalTensor& pos_weight, const OptionalTensor& weight) {
    l.broadcast(FocalBceOperands::alpha, alpha, "alpha");
    l.broadcast(FocalBceOperands::pos_weight, pos_weight, "pos_weight");
    l.broadcast(FocalBceOperands::weight, weight, "weight");
  }
};

using Ops = ElementwiseOps<FocalBce, OptionalTensor, OptionalTensor, OptionalTensor>;

}  // namespace
}  // namespace fused_losses

TORCH_LIBRARY_FRAGMENT(fused_losses, m) {
  m.def(
      "focal_bce_fwd(Tensor input, Tensor target, Tensor? alpha, Tensor? pos_weight, "
      "Tensor? weight, float[] options, str reduction, bool compute_grad) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "focal_bce_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor? alpha, "
      "Tensor? pos_weight, Tensor? weight, float[] options) -> Tensor");
}

FUSED_LOSSES_IMPL(fused_losses::Ops::define_impls)

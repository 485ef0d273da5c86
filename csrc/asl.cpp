// asl (asymmetric loss) ops: schemas and what the shared binding (binding.h)
// needs to know about the loss. Kernels: csrc/cpu/asl_kernel.h, csrc/cuda/asl.cu.
#include "binding.h"

namespace fused_losses {
namespace {

struct Asl : LossTraits<AslOptions, Targets::Binary, Dims::Any> {
  // pos_weight: a tensor here wins over the float in the options (NaN then).
  static void operands(Launch<Options>& l, const OptionalTensor& weight,
                       const OptionalTensor& pos_weight) {
    l.broadcast(AslOperands::weight, weight, "weight");
    l.broadcast(AslOperands::pos_weight, pos_weight, "pos_weight");
  }
};

using Ops = ElementwiseOps<Asl, OptionalTensor, OptionalTensor>;

}  // namespace
}  // namespace fused_losses

TORCH_LIBRARY_FRAGMENT(fused_losses, m) {
  m.def(
      "asl_fwd(Tensor input, Tensor target, Tensor? weight, Tensor? pos_weight, "
      "float[] options, str reduction, bool compute_grad) -> (Tensor, Tensor, Tensor)");
  m.def(
      "asl_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor? weight, "
      "Tensor? pos_weight, float[] options) -> Tensor");
}

FUSED_LOSSES_IMPL(fused_losses::Ops::define_impls)

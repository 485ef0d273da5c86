// asl (asymmetric loss) ops: schemas and what the shared binding (binding.h)
// needs to know about the loss. Kernels: csrc/cpu/asl_kernel.h, csrc/cuda/asl.cu.
#include "binding.h"

namespace fused_losses {
namespace {

struct Asl : LossTraits<AslOptions, Targets::Binary, Dims::Any> {
  static void check(const Options& o) {
    TORCH_CHECK(o.gamma_pos >= 0 && o.gamma_neg >= 0, "fused_losses: gamma_pos and gamma_neg "
                "must be >= 0, got ", o.gamma_pos, " and ", o.gamma_neg);
    TORCH_CHECK(o.clip >= 0 && o.clip <= 1, "fused_losses: clip must be in [0, 1], got ", o.clip);
    TORCH_CHECK(o.eps >= 0 && o.eps < 1, "fused_losses: eps must be in [0, 1), got ", o.eps);
  }

  static void operands(Launch<Options>& l, const OptionalTensor& weight) {
    l.broadcast(AslOperands::weight, weight, "weight");
  }
};

using Ops = ElementwiseOps<Asl, OptionalTensor>;

}  // namespace
}  // namespace fused_losses

TORCH_LIBRARY_FRAGMENT(fused_losses, m) {
  m.def(
      "asl_fwd(Tensor input, Tensor target, Tensor? weight, float[] options, str reduction, "
      "bool compute_grad) -> (Tensor, Tensor, Tensor)");
  m.def(
      "asl_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor? weight, "
      "float[] options) -> Tensor");
}

FUSED_LOSSES_IMPL(fused_losses::Ops::define_impls)

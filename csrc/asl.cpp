// asl (asymmetric loss) ops: schemas and what the shared binding (binding.h)
// needs to know about the loss. Kernels: csrc/cpu/asl_kernel.h, csrc/cuda/asl.cu.
#include <cmath>

#include "binding.h"

namespace fused_losses {
namespace {

struct Asl : LossTraits<AslOptions, Targets::Binary, Dims::Any> {
  static void check(const Options& o) {
    TORCH_CHECK(o.gamma_pos >= 0 && o.gamma_neg >= 0, "fused_losses: gamma_pos and gamma_neg "
                "must be >= 0, got ", o.gamma_pos, " and ", o.gamma_neg);
    TORCH_CHECK(o.clip >= 0 && o.clip <= 1, "fused_losses: clip must be in [0, 1], got ", o.clip);
    TORCH_CHECK(o.eps >= 0 && o.eps < 1, "fused_losses: eps must be in [0, 1), got ", o.eps);
    TORCH_CHECK(!o.has_pos_weight || (o.pos_weight >= 0 && std::isfinite(o.pos_weight)),
                "fused_losses: pos_weight must be finite and >= 0, got ", o.pos_weight);
    TORCH_CHECK(o.label_smoothing >= 0 && o.label_smoothing < 1,
                "fused_losses: label_smoothing must be in [0, 1), got ", o.label_smoothing);
  }

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

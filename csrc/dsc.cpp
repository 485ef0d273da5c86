// dsc (self-adjusting dice, Li et al. 2020) ops: schemas and what the shared
// binding (binding.h) needs to know about the loss. Kernels:
// csrc/cpu/dsc_kernel.h, csrc/cuda/dsc.cu.
#include "binding.h"

namespace fused_losses {
namespace {

struct Dsc : LossTraits<DscOptions, Targets::Index, Dims::Matrix> {
  static void operands(Launch<Options>&) {}
};

using Ops = ElementwiseOps<Dsc>;

}  // namespace
}  // namespace fused_losses

TORCH_LIBRARY_FRAGMENT(fused_losses, m) {
  m.def(
      "dsc_fwd(Tensor input, Tensor target, float[] options, str reduction, "
      "bool compute_grad) -> (Tensor, Tensor, Tensor)");
  m.def("dsc_bwd(Tensor grad_output, Tensor input, Tensor target, float[] options) -> Tensor");
}

FUSED_LOSSES_IMPL(fused_losses::Ops::define_impls)

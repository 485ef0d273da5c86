// dice (multilabel soft dice) ops: schemas and the column-sums protocol on the
// shared binding (binding.h). Forward -> (loss, fp32 sums [3, C]); the backward
// recomputes d loss/dx from x, t and the saved sums. Kernels:
// csrc/cpu/dice_kernel.h, csrc/cuda/dice.cu.
#include "binding.h"

namespace fused_losses {
namespace {

struct Dice : LossTraits<DiceOptions, Targets::Binary, Dims::ClassDim> {};

std::tuple<at::Tensor, at::Tensor> dice_fwd(const at::Tensor& input, const at::Tensor& target,
                                            c10::ArrayRef<double> options,
                                            c10::string_view reduction) {
  Launch<DiceOptions> l = prepare<Dice>(input, target, options);
  LaunchArgs<DiceOptions>& a = l.args;
  set_reduction(reduction, a.reduce, a.mean);
  at::Tensor loss = a.reduce ? at::empty({}, input.options())
                             : at::empty({a.cols}, input.options());
  at::Tensor sums = at::empty({3, a.cols}, input.options().dtype(at::kFloat));
  a.out = loss.data_ptr();
  a.aux = sums.data_ptr<float>();
  launch(a, Pass::Forward, input.device());
  return {loss, sums};
}

// grad_output: [] (mean/sum) or [C] (none).
at::Tensor dice_bwd(const at::Tensor& grad_output, const at::Tensor& input,
                    const at::Tensor& target, const at::Tensor& sums,
                    c10::ArrayRef<double> options, c10::string_view reduction) {
  Launch<DiceOptions> l = prepare<Dice>(input, target, options);
  LaunchArgs<DiceOptions>& a = l.args;
  set_reduction(reduction, a.reduce, a.mean);
  TORCH_CHECK(sums.scalar_type() == at::kFloat && sums.dim() == 2 && sums.size(0) == 3 &&
                  sums.size(1) == a.cols,
              "fused_losses: dice sums must be float32 of shape [3, ", a.cols, "], got ",
              sums.scalar_type(), " of shape ", sums.sizes());
  TORCH_CHECK(grad_output.numel() == (a.reduce ? 1 : a.cols), "fused_losses: dice grad_output "
              "must have ", (a.reduce ? 1 : a.cols), " elements, got shape ", grad_output.sizes());
  TORCH_CHECK(sums.device() == input.device() && grad_output.device() == input.device(),
              "fused_losses: dice sums and grad_output must be on ", input.device());
  at::Tensor s = sums.contiguous();
  at::Tensor g = grad_output.to(at::kFloat).contiguous();
  at::Tensor grad_input = at::empty(input.sizes(), input.options());
  a.aux = s.data_ptr<float>();
  a.grad_output = g.data_ptr();
  a.grad = grad_input.data_ptr();
  launch(a, Pass::Backward, input.device());
  return grad_input;
}

void define_impls(torch::Library& m) {
  m.impl("dice_fwd", &dice_fwd);
  m.impl("dice_bwd", &dice_bwd);
}

}  // namespace
}  // namespace fused_losses

TORCH_LIBRARY_FRAGMENT(fused_losses, m) {
  m.def("dice_fwd(Tensor input, Tensor target, float[] options, str reduction) "
        "-> (Tensor, Tensor)");
  m.def(
      "dice_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor sums, float[] options, "
      "str reduction) -> Tensor");
}

FUSED_LOSSES_IMPL(fused_losses::define_impls)

// dice ops for the CPU and CUDA dispatch keys: tensors in, DiceArgs out to the
// kernels in cpu/ and cuda/. Schemas are in ops.cpp; fake kernels and autograd
// are registered from Python (fused_losses/ops/dice.py).
#include <torch/library.h>

#include "binding.h"
#include "dice_args.h"

namespace fused_losses {
namespace {

struct Prepared {
  at::Tensor input, target;
  DiceArgs args;
};

void check_reduction(c10::string_view reduction) {
  TORCH_CHECK(reduction == "none" || reduction == "mean" || reduction == "sum",
              "fused_losses: reduction must be none, mean or sum, got ", reduction);
}

Prepared prepare(const at::Tensor& input, const at::Tensor& target, double smooth, double alpha,
                 bool square_denominator, c10::string_view reduction) {
  check_pair(input, target);
  check_reduction(reduction);
  TORCH_CHECK(input.dim() >= 2, "fused_losses: dice input must be [N, C] or [N, C, d1, ...], "
              "got shape ", input.sizes());
  TORCH_CHECK(smooth >= 0 && alpha >= 0, "fused_losses: dice smooth and alpha must be >= 0, "
              "got ", smooth, " and ", alpha);
  Prepared p;
  p.input = input.contiguous();
  p.target = target.contiguous();
  if (p.target.scalar_type() == at::kBool) p.target = p.target.view(at::kByte);
  DiceArgs& a = p.args;
  a.input = p.input.data_ptr();
  a.input_dtype = dtype_code(p.input);
  a.target = p.target.data_ptr();
  a.target_dtype = dtype_code(p.target);
  a.rows = input.size(0);
  a.cols = input.size(1);
  a.inner = 1;
  for (int64_t d = 2; d < input.dim(); ++d) a.inner *= input.size(d);
  a.smooth = static_cast<float>(smooth);
  a.alpha = static_cast<float>(alpha);
  a.square = square_denominator;
  a.reduce = reduction != "none";
  a.mean = reduction == "mean";
  return p;
}

void launch(const DiceArgs& a, const at::Tensor& input, bool forward) {
  run_on_device(
      input.device(), [&] { forward ? dice_cpu_forward(a) : dice_cpu_backward(a); },
      [&](void* stream) {
#ifdef FUSED_LOSSES_WITH_CUDA
        forward ? dice_cuda_forward(a, stream) : dice_cuda_backward(a, stream);
#else
        (void)stream;
#endif
      });
}

std::tuple<at::Tensor, at::Tensor> dice_fwd(const at::Tensor& input, const at::Tensor& target,
                                            double smooth, double alpha, bool square_denominator,
                                            c10::string_view reduction) {
  Prepared p = prepare(input, target, smooth, alpha, square_denominator, reduction);
  DiceArgs& a = p.args;
  const auto f32 = input.options().dtype(at::kFloat);
  at::Tensor loss = a.reduce ? at::empty({}, input.options()) : at::empty({a.cols}, input.options());
  at::Tensor sums = at::empty({3, a.cols}, f32);
  at::Tensor partials, dice;
#ifdef FUSED_LOSSES_WITH_CUDA
  if (input.is_cuda()) {
    partials = at::empty({dice_cuda_num_partials(a.rows * a.inner) * 3 * a.cols}, f32);
    dice = at::empty({a.cols}, f32);
    a.partials = partials.data_ptr<float>();
    a.dice = dice.data_ptr<float>();
  }
#endif
  a.sums = sums.data_ptr<float>();
  a.out = loss.data_ptr();
  launch(a, input, true);
  return {loss, sums};
}

at::Tensor dice_bwd(const at::Tensor& grad_output, const at::Tensor& input,
                    const at::Tensor& target, const at::Tensor& sums, double smooth, double alpha,
                    bool square_denominator, c10::string_view reduction) {
  Prepared p = prepare(input, target, smooth, alpha, square_denominator, reduction);
  DiceArgs& a = p.args;
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
  a.sums = s.data_ptr<float>();
  a.grad_output = g.data_ptr<float>();
  a.grad_output_stride = a.reduce ? 0 : 1;
  a.grad_output_scale = (a.mean && a.cols) ? 1.f / static_cast<float>(a.cols) : 1.f;
  a.grad = grad_input.data_ptr();
  launch(a, input, false);
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_losses, CPU, m) {
  m.impl("dice_fwd", &dice_fwd);
  m.impl("dice_bwd", &dice_bwd);
}

#ifdef FUSED_LOSSES_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_losses, CUDA, m) {
  m.impl("dice_fwd", &dice_fwd);
  m.impl("dice_bwd", &dice_bwd);
}
#endif

}  // namespace fused_losses

// focal_bce ops for the CPU and CUDA dispatch keys: tensors in, FocalBceArgs
// out to the kernels in cpu/ and cuda/. Schemas are in ops.cpp; fake kernels
// and autograd are registered from Python (fused_losses/ops/focal_bce.py).
#include <torch/library.h>

#include "binding.h"
#include "focal_bce_args.h"

namespace fused_losses {
namespace {

struct Prepared {
  at::Tensor input, target;
  PreparedOperand alpha, pos_weight, weight;
  FocalBceArgs args;
};

Prepared prepare(const at::Tensor& input, const at::Tensor& target,
                 const std::optional<at::Tensor>& alpha,
                 const std::optional<at::Tensor>& pos_weight,
                 const std::optional<at::Tensor>& weight, double gamma,
                 std::optional<double> alpha_value, double label_smoothing,
                 std::optional<int64_t> ignore_index) {
  check_pair(input, target);
  TORCH_CHECK(gamma >= 0, "fused_losses: gamma must be >= 0, got ", gamma);
  Prepared p;
  p.input = input.contiguous();
  p.target = target.contiguous();
  p.alpha = prepare_operand(alpha, "alpha", input);
  p.pos_weight = prepare_operand(pos_weight, "pos_weight", input);
  p.weight = prepare_operand(weight, "weight", input);
  FocalBceArgs& a = p.args;
  a.input = p.input.data_ptr();
  a.input_dtype = dtype_code(p.input);
  a.target = p.target.data_ptr();
  a.target_dtype = dtype_code(p.target);
  a.alpha = p.alpha.op;
  a.pos_weight = p.pos_weight.op;
  a.weight = p.weight.op;
  a.numel = p.input.numel();
  a.cols = std::max<int64_t>(rows_cols(input.sizes()).second, 1);
  a.gamma = static_cast<float>(gamma);
  a.has_alpha_value = alpha_value.has_value();
  a.alpha_value = static_cast<float>(alpha_value.value_or(0.0));
  a.smoothing = static_cast<float>(label_smoothing);
  a.has_ignore = ignore_index.has_value();
  a.ignore_value = static_cast<float>(ignore_index.value_or(0));
  a.hard = !target.is_floating_point() && label_smoothing == 0.0;
  return p;
}

void launch(const FocalBceArgs& a, const at::Tensor& input, bool forward) {
  run_on_device(
      input.device(), [&] { forward ? focal_bce_cpu_forward(a) : focal_bce_cpu_backward(a); },
      [&](void* stream) {
#ifdef FUSED_LOSSES_WITH_CUDA
        forward ? focal_bce_cuda_forward(a, stream) : focal_bce_cuda_backward(a, stream);
#else
        (void)stream;
#endif
      });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> focal_bce_fwd(
    const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& alpha,
    const std::optional<at::Tensor>& pos_weight, const std::optional<at::Tensor>& weight,
    double gamma, std::optional<double> alpha_value, double label_smoothing,
    std::optional<int64_t> ignore_index, c10::string_view reduction, bool compute_grad) {
  TORCH_CHECK(reduction == "none" || reduction == "mean" || reduction == "sum",
              "fused_losses: reduction must be none, mean or sum, got ", reduction);
  Prepared p = prepare(input, target, alpha, pos_weight, weight, gamma, alpha_value,
                       label_smoothing, ignore_index);
  FocalBceArgs& a = p.args;
  a.reduce = reduction != "none";
  a.mean = reduction == "mean";
  a.write_grad = a.reduce && compute_grad;
  // A mean without ignore_index has a host-known divisor: fold it in here.
  a.grad_scale = (a.mean && !a.has_ignore && a.numel) ? 1.f / static_cast<float>(a.numel) : 1.f;
  at::Tensor loss = a.reduce ? at::empty({}, input.options()) : at::empty(input.sizes(), input.options());
  at::Tensor grad = a.write_grad ? at::empty(input.sizes(), input.options())
                                 : at::empty({0}, input.options());
  at::Tensor scale = at::empty({}, input.options().dtype(at::kFloat));
  at::Tensor psum, pcnt;
#ifdef FUSED_LOSSES_WITH_CUDA
  if (input.is_cuda() && a.reduce) {
    const int64_t n = focal_bce_cuda_num_partials(a.numel);
    psum = at::empty({n}, input.options().dtype(at::kFloat));
    pcnt = at::empty({n}, input.options().dtype(at::kInt));
    a.partial_sum = psum.data_ptr<float>();
    a.partial_count = pcnt.data_ptr<int32_t>();
  }
#endif
  a.out = loss.data_ptr();
  a.grad = grad.data_ptr();
  a.scale = scale.data_ptr<float>();
  if (!a.reduce) scale.fill_(1.0);
  launch(a, input, true);
  return {loss, grad, scale};
}

at::Tensor focal_bce_bwd(const at::Tensor& grad_output, const at::Tensor& input,
                         const at::Tensor& target, const std::optional<at::Tensor>& alpha,
                         const std::optional<at::Tensor>& pos_weight,
                         const std::optional<at::Tensor>& weight, double gamma,
                         std::optional<double> alpha_value, double label_smoothing,
                         std::optional<int64_t> ignore_index) {
  TORCH_CHECK(grad_output.sizes() == input.sizes(), "fused_losses: grad_output shape ",
              grad_output.sizes(), " must equal input shape ", input.sizes());
  Prepared p = prepare(input, target, alpha, pos_weight, weight, gamma, alpha_value,
                       label_smoothing, ignore_index);
  at::Tensor g_out = grad_output.to(input.scalar_type()).contiguous();
  at::Tensor grad_input = at::empty(input.sizes(), input.options());
  p.args.grad_output = g_out.data_ptr();
  p.args.grad = grad_input.data_ptr();
  launch(p.args, input, false);
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_losses, CPU, m) {
  m.impl("focal_bce_fwd", &focal_bce_fwd);
  m.impl("focal_bce_bwd", &focal_bce_bwd);
}

#ifdef FUSED_LOSSES_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_losses, CUDA, m) {
  m.impl("focal_bce_fwd", &focal_bce_fwd);
  m.impl("focal_bce_bwd", &focal_bce_bwd);
}
#endif

}  // namespace fused_losses

// asl ops for the CPU and CUDA dispatch keys: tensors in, AslArgs out to the
// kernels in cpu/ and cuda/. Schemas are in ops.cpp; fake kernels and autograd
// are registered from Python (fused_losses/ops/asl.py).
#include <torch/library.h>

#include <cmath>

#include "asl_args.h"
#include "binding.h"

namespace fused_losses {
namespace {

struct Prepared {
  at::Tensor input, target;
  PreparedOperand weight;
  AslArgs args;
};

Prepared prepare(const at::Tensor& input, const at::Tensor& target,
                 const std::optional<at::Tensor>& weight, double gamma_pos, double gamma_neg,
                 double clip, double eps, bool detach_focal_weight) {
  check_pair(input, target);
  TORCH_CHECK(gamma_pos >= 0 && gamma_neg >= 0, "fused_losses: gamma_pos and gamma_neg must be "
              ">= 0, got ", gamma_pos, " and ", gamma_neg);
  TORCH_CHECK(clip >= 0 && clip <= 1, "fused_losses: clip must be in [0, 1], got ", clip);
  TORCH_CHECK(eps >= 0 && eps < 1, "fused_losses: eps must be in [0, 1), got ", eps);
  Prepared p;
  p.input = input.contiguous();
  p.target = target.contiguous();
  p.weight = prepare_operand(weight, "weight", input);
  AslArgs& a = p.args;
  a.input = p.input.data_ptr();
  a.input_dtype = dtype_code(p.input);
  a.target = p.target.data_ptr();
  a.target_dtype = dtype_code(p.target);
  a.weight = p.weight.op;
  a.numel = p.input.numel();
  a.cols = std::max<int64_t>(rows_cols(input.sizes()).second, 1);
  a.gamma_pos = static_cast<float>(gamma_pos);
  a.gamma_neg = static_cast<float>(gamma_neg);
  a.clip = static_cast<float>(clip);
  a.has_eps = eps > 0;
  a.log_eps = eps > 0 ? static_cast<float>(std::log(eps)) : 0.f;
  a.hard = !target.is_floating_point();
  a.focal = gamma_pos != 0 || gamma_neg != 0;
  a.detach = detach_focal_weight;
  return p;
}

void launch(const AslArgs& a, const at::Tensor& input, bool forward) {
  run_on_device(
      input.device(), [&] { forward ? asl_cpu_forward(a) : asl_cpu_backward(a); },
      [&](void* stream) {
#ifdef FUSED_LOSSES_WITH_CUDA
        forward ? asl_cuda_forward(a, stream) : asl_cuda_backward(a, stream);
#else
        (void)stream;
#endif
      });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> asl_fwd(
    const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& weight,
    double gamma_pos, double gamma_neg, double clip, double eps, bool detach_focal_weight,
    c10::string_view reduction, bool compute_grad) {
  TORCH_CHECK(reduction == "none" || reduction == "mean" || reduction == "sum",
              "fused_losses: reduction must be none, mean or sum, got ", reduction);
  Prepared p = prepare(input, target, weight, gamma_pos, gamma_neg, clip, eps,
                       detach_focal_weight);
  AslArgs& a = p.args;
  a.reduce = reduction != "none";
  a.mean = reduction == "mean";
  a.write_grad = a.reduce && compute_grad;
  a.grad_scale = (a.mean && a.numel) ? 1.f / static_cast<float>(a.numel) : 1.f;
  at::Tensor loss = a.reduce ? at::empty({}, input.options()) : at::empty(input.sizes(), input.options());
  at::Tensor grad = a.write_grad ? at::empty(input.sizes(), input.options())
                                 : at::empty({0}, input.options());
  at::Tensor scale = at::empty({}, input.options().dtype(at::kFloat));
  at::Tensor psum, pcnt;
#ifdef FUSED_LOSSES_WITH_CUDA
  if (input.is_cuda() && a.reduce) {
    const int64_t n = asl_cuda_num_partials(a.numel);
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

at::Tensor asl_bwd(const at::Tensor& grad_output, const at::Tensor& input,
                   const at::Tensor& target, const std::optional<at::Tensor>& weight,
                   double gamma_pos, double gamma_neg, double clip, double eps,
                   bool detach_focal_weight) {
  TORCH_CHECK(grad_output.sizes() == input.sizes(), "fused_losses: grad_output shape ",
              grad_output.sizes(), " must equal input shape ", input.sizes());
  Prepared p = prepare(input, target, weight, gamma_pos, gamma_neg, clip, eps,
                       detach_focal_weight);
  at::Tensor g_out = grad_output.to(input.scalar_type()).contiguous();
  at::Tensor grad_input = at::empty(input.sizes(), input.options());
  p.args.grad_output = g_out.data_ptr();
  p.args.grad = grad_input.data_ptr();
  launch(p.args, input, false);
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_losses, CPU, m) {
  m.impl("asl_fwd", &asl_fwd);
  m.impl("asl_bwd", &asl_bwd);
}

#ifdef FUSED_LOSSES_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_losses, CUDA, m) {
  m.impl("asl_fwd", &asl_fwd);
  m.impl("asl_bwd", &asl_bwd);
}
#endif

}  // namespace fused_losses

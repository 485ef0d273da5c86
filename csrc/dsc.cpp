// dsc (self-adjusting dice) ops for the CPU and CUDA dispatch keys: tensors
// in, DscArgs out to the kernels in cpu/ and cuda/. Schemas are in ops.cpp;
// fake kernels and autograd in fused_losses/ops/dsc.py.
#include <torch/library.h>

#include "binding.h"
#include "dsc_args.h"

namespace fused_losses {
namespace {

struct Prepared {
  at::Tensor input, target;
  DscArgs args;
};

Prepared prepare(const at::Tensor& input, const at::Tensor& target, double alpha, double smooth) {
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kHalf ||
                  input.scalar_type() == at::kBFloat16,
              "fused_losses: input must be float32, float16 or bfloat16, got ",
              input.scalar_type());
  TORCH_CHECK(input.dim() == 2 && input.size(1) >= 1,
              "fused_losses: input must be [N, C] with C >= 1, got ", input.sizes());
  TORCH_CHECK(target.dim() == 1 && target.size(0) == input.size(0),
              "fused_losses: target shape ", target.sizes(), " must be [", input.size(0), "]");
  TORCH_CHECK(!target.is_floating_point() && !target.is_complex() &&
                  target.scalar_type() != at::kBool,
              "fused_losses: target must hold integer class indices, got ", target.scalar_type());
  TORCH_CHECK(target.device() == input.device(), "fused_losses: target is on ",
              target.device(), " but input is on ", input.device());
  TORCH_CHECK(alpha >= 0 && smooth >= 0, "fused_losses: alpha and smooth must be >= 0");
  Prepared p;
  p.input = input.contiguous();
  p.target = target.contiguous();
  DscArgs& a = p.args;
  a.input = p.input.data_ptr();
  a.input_dtype = dtype_code(p.input);
  a.target = p.target.data_ptr();
  a.target_dtype = dtype_code(p.target);
  a.rows = input.size(0);
  a.cols = input.size(1);
  a.alpha = static_cast<float>(alpha);
  a.smooth = static_cast<float>(smooth);
  return p;
}

void launch(const DscArgs& a, const at::Tensor& input, bool forward) {
  run_on_device(
      input.device(), [&] { forward ? dsc_cpu_forward(a) : dsc_cpu_backward(a); },
      [&](void* stream) {
#ifdef FUSED_LOSSES_WITH_CUDA
        forward ? dsc_cuda_forward(a, stream) : dsc_cuda_backward(a, stream);
#else
        (void)stream;
#endif
      });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dsc_fwd(const at::Tensor& input,
                                                       const at::Tensor& target, double alpha,
                                                       double smooth, c10::string_view reduction,
                                                       bool compute_grad) {
  TORCH_CHECK(reduction == "none" || reduction == "mean" || reduction == "sum",
              "fused_losses: reduction must be none, mean or sum, got ", reduction);
  Prepared p = prepare(input, target, alpha, smooth);
  DscArgs& a = p.args;
  a.reduce = reduction != "none";
  a.mean = reduction == "mean";
  a.write_grad = a.reduce && compute_grad;
  a.grad_scale = (a.mean && a.rows) ? 1.f / static_cast<float>(a.rows) : 1.f;
  at::Tensor loss = a.reduce ? at::empty({}, input.options())
                             : at::empty(target.sizes(), input.options());
  at::Tensor grad = a.write_grad ? at::empty(input.sizes(), input.options())
                                 : at::empty({0}, input.options());
  at::Tensor scale = at::ones({}, input.options().dtype(at::kFloat));
  at::Tensor scratch;
  if (input.is_cuda()) {
    scratch = at::empty({a.rows}, input.options().dtype(at::kFloat));
    a.row_loss = scratch.data_ptr<float>();
  }
  a.out = loss.data_ptr();
  a.grad = grad.data_ptr();
  a.scale = scale.data_ptr<float>();
  launch(a, input, true);
  return {loss, grad, scale};
}

at::Tensor dsc_bwd(const at::Tensor& grad_output, const at::Tensor& input,
                   const at::Tensor& target, double alpha, double smooth) {
  TORCH_CHECK(grad_output.sizes() == target.sizes(), "fused_losses: grad_output shape ",
              grad_output.sizes(), " must equal target shape ", target.sizes());
  Prepared p = prepare(input, target, alpha, smooth);
  at::Tensor g_out = grad_output.to(input.scalar_type()).contiguous();
  at::Tensor grad_input = at::empty(input.sizes(), input.options());
  p.args.grad_output = g_out.data_ptr();
  p.args.grad = grad_input.data_ptr();
  launch(p.args, input, false);
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_losses, CPU, m) {
  m.impl("dsc_fwd", &dsc_fwd);
  m.impl("dsc_bwd", &dsc_bwd);
}

#ifdef FUSED_LOSSES_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_losses, CUDA, m) {
  m.impl("dsc_fwd", &dsc_fwd);
  m.impl("dsc_bwd", &dsc_bwd);
}
#endif

}  // namespace fused_losses

// softmax_focal ops for the CPU and CUDA dispatch keys: tensors in,
// SoftmaxFocalArgs out to the kernels in cpu/ and cuda/. Schemas are in
// ops.cpp; fake kernels and autograd are registered from Python
// (fused_losses/ops/softmax_focal.py).
#include <torch/library.h>

#include "binding.h"
#include "softmax_focal_args.h"

namespace fused_losses {
namespace {

// Checks a class-index pair (input [N, C, d...] or [C], target [N, d...] or []).
void check_class_pair(const at::Tensor& input, const at::Tensor& target) {
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kHalf ||
                  input.scalar_type() == at::kBFloat16,
              "fused_losses: input must be float32, float16 or bfloat16, got ",
              input.scalar_type());
  TORCH_CHECK(input.dim() >= 1 && input.size(input.dim() > 1 ? 1 : 0) >= 1,
              "fused_losses: input must be [N, C, ...] or [C] with C >= 1, got ", input.sizes());
  std::vector<int64_t> expected;
  if (input.dim() > 1) {
    expected.push_back(input.size(0));
    for (int64_t d = 2; d < input.dim(); ++d) expected.push_back(input.size(d));
  }
  TORCH_CHECK(target.sizes() == at::IntArrayRef(expected), "fused_losses: target shape ",
              target.sizes(), " must be input shape ", input.sizes(), " without dim 1");
  TORCH_CHECK(!target.is_floating_point() && !target.is_complex() &&
                  target.scalar_type() != at::kBool,
              "fused_losses: target must hold integer class indices, got ", target.scalar_type());
  TORCH_CHECK(target.device() == input.device(), "fused_losses: target is on ",
              target.device(), " but input is on ", input.device());
}

struct Prepared {
  at::Tensor input, target, alpha;
  SoftmaxFocalArgs args;
};

Prepared prepare(const at::Tensor& input, const at::Tensor& target,
                 const std::optional<at::Tensor>& alpha, double gamma,
                 std::optional<int64_t> ignore_index, double label_smoothing) {
  check_class_pair(input, target);
  TORCH_CHECK(gamma >= 0, "fused_losses: gamma must be >= 0, got ", gamma);
  Prepared p;
  p.input = input.contiguous();
  p.target = target.contiguous();
  SoftmaxFocalArgs& a = p.args;
  a.cols = input.dim() > 1 ? input.size(1) : input.size(0);
  a.spatial = 1;
  for (int64_t d = 2; d < input.dim(); ++d) a.spatial *= input.size(d);
  a.rows = input.dim() > 1 ? input.size(0) * a.spatial : 1;
  if (alpha.has_value()) {
    TORCH_CHECK(alpha->device() == input.device() && alpha->is_floating_point() &&
                    alpha->dim() == 1 && alpha->size(0) == a.cols,
                "fused_losses: alpha must be a floating [", a.cols, "] tensor on ",
                input.device(), ", got ", alpha->sizes(), " on ", alpha->device());
    p.alpha = alpha->to(at::kFloat).contiguous();
    a.alpha = p.alpha.data_ptr<float>();
  }
  a.input = p.input.data_ptr();
  a.input_dtype = dtype_code(p.input);
  a.target = p.target.data_ptr();
  a.target_dtype = dtype_code(p.target);
  a.gamma = static_cast<float>(gamma);
  a.smoothing = static_cast<float>(label_smoothing);
  a.has_ignore = ignore_index.has_value();
  a.ignore_index = ignore_index.value_or(0);
  return p;
}

void launch(const SoftmaxFocalArgs& a, const at::Tensor& input, bool forward) {
  run_on_device(
      input.device(),
      [&] { forward ? softmax_focal_cpu_forward(a) : softmax_focal_cpu_backward(a); },
      [&](void* stream) {
#ifdef FUSED_LOSSES_WITH_CUDA
        forward ? softmax_focal_cuda_forward(a, stream) : softmax_focal_cuda_backward(a, stream);
#else
        (void)stream;
#endif
      });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> softmax_focal_fwd(
    const at::Tensor& input, const at::Tensor& target, const std::optional<at::Tensor>& alpha,
    double gamma, std::optional<int64_t> ignore_index, double label_smoothing,
    c10::string_view reduction, bool compute_grad) {
  TORCH_CHECK(reduction == "none" || reduction == "mean" || reduction == "sum",
              "fused_losses: reduction must be none, mean or sum, got ", reduction);
  Prepared p = prepare(input, target, alpha, gamma, ignore_index, label_smoothing);
  SoftmaxFocalArgs& a = p.args;
  a.reduce = reduction != "none";
  a.mean = reduction == "mean";
  a.write_grad = a.reduce && compute_grad;
  at::Tensor loss = a.reduce ? at::empty({}, input.options())
                             : at::empty(target.sizes(), input.options());
  at::Tensor grad = a.write_grad ? at::empty(input.sizes(), input.options())
                                 : at::empty({0}, input.options());
  at::Tensor scale = at::empty({}, input.options().dtype(at::kFloat));
  at::Tensor scratch;
  if (input.is_cuda()) {
    scratch = at::empty({2, a.rows}, input.options().dtype(at::kFloat));
    a.row_loss = scratch.data_ptr<float>();
    a.row_weight = a.row_loss + a.rows;
  }
  a.out = loss.data_ptr();
  a.grad = grad.data_ptr();
  a.scale = scale.data_ptr<float>();
  if (!a.reduce) scale.fill_(1.0);
  launch(a, input, true);
  return {loss, grad, scale};
}

at::Tensor softmax_focal_bwd(const at::Tensor& grad_output, const at::Tensor& input,
                             const at::Tensor& target, const std::optional<at::Tensor>& alpha,
                             double gamma, std::optional<int64_t> ignore_index,
                             double label_smoothing) {
  TORCH_CHECK(grad_output.sizes() == target.sizes(), "fused_losses: grad_output shape ",
              grad_output.sizes(), " must equal target shape ", target.sizes());
  Prepared p = prepare(input, target, alpha, gamma, ignore_index, label_smoothing);
  at::Tensor g_out = grad_output.to(input.scalar_type()).contiguous();
  at::Tensor grad_input = at::empty(input.sizes(), input.options());
  p.args.grad_output = g_out.data_ptr();
  p.args.grad = grad_input.data_ptr();
  launch(p.args, input, false);
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_losses, CPU, m) {
  m.impl("softmax_focal_fwd", &softmax_focal_fwd);
  m.impl("softmax_focal_bwd", &softmax_focal_bwd);
}

#ifdef FUSED_LOSSES_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_losses, CUDA, m) {
  m.impl("softmax_focal_fwd", &softmax_focal_fwd);
  m.impl("softmax_focal_bwd", &softmax_focal_bwd);
}
#endif

}  // namespace fused_losses

// GHM-C ops for the CPU and CUDA dispatch keys: tensors in, GhmcArgs out to
// the kernels in cpu/ and cuda/. Schemas are in ops.cpp; fake kernels and
// autograd are registered from Python (fused_losses/ops/ghmc.py).
#include <torch/library.h>

#include "binding.h"
#include "ghmc_args.h"

namespace fused_losses {
namespace {

enum class Pass { Histogram, Weights, Forward, Backward };

void launch(Pass pass, const GhmcArgs& a, const at::Device& device) {
  run_on_device(
      device,
      [&] {
        switch (pass) {
          case Pass::Histogram: return ghmc_cpu_histogram(a);
          case Pass::Weights: return ghmc_cpu_weights(a);
          case Pass::Forward: return ghmc_cpu_forward(a);
          case Pass::Backward: return ghmc_cpu_backward(a);
        }
      },
      [&](void* stream) {
#ifdef FUSED_LOSSES_WITH_CUDA
        switch (pass) {
          case Pass::Histogram: return ghmc_cuda_histogram(a, stream);
          case Pass::Weights: return ghmc_cuda_weights(a, stream);
          case Pass::Forward: return ghmc_cuda_forward(a, stream);
          case Pass::Backward: return ghmc_cuda_backward(a, stream);
        }
#else
        (void)stream;
#endif
      });
}

void check_bins(int64_t bins) {
  TORCH_CHECK(bins >= 1 && bins <= kGhmcMaxBins, "fused_losses: ghmc bins must be in [1, ",
              kGhmcMaxBins, "], got ", bins);
}

struct Prepared {
  at::Tensor input, target, weights;
  PreparedOperand label_weight;
  GhmcArgs args;
};

Prepared prepare(const at::Tensor& input, const at::Tensor& target,
                 const std::optional<at::Tensor>& label_weight, int64_t bins) {
  check_pair(input, target);
  check_bins(bins);
  Prepared p;
  p.input = input.contiguous();
  p.target = target.contiguous();
  if (p.target.scalar_type() == at::kBool) p.target = p.target.view(at::kByte);
  // Only label_weight > 0 matters. Other dtypes (bool masks, float64) become
  // that mask in float32, taken in their own dtype as the reference takes it.
  std::optional<at::Tensor> lw = label_weight;
  if (lw.has_value() && lw->scalar_type() != at::kFloat) lw = lw->gt(0).to(at::kFloat);
  p.label_weight = prepare_operand(lw, "label_weight", input);
  GhmcArgs& a = p.args;
  a.input = p.input.data_ptr();
  a.input_dtype = dtype_code(p.input);
  a.target = p.target.data_ptr();
  a.target_dtype = dtype_code(p.target);
  a.label_weight = p.label_weight.op;
  a.numel = p.input.numel();
  a.cols = std::max<int64_t>(rows_cols(input.sizes()).second, 1);
  a.bins = static_cast<int32_t>(bins);
  return p;
}

// The per-bin weights of ghmc_weights, read by the loss passes.
void set_weights(Prepared& p, const at::Tensor& weights) {
  const int64_t bins = p.args.bins;
  TORCH_CHECK(weights.scalar_type() == at::kFloat && weights.is_contiguous() &&
                  weights.numel() == bins,
              "fused_losses: ghmc weights must be a contiguous float32 tensor of bins = ", bins,
              " elements, got ", weights.scalar_type(), " of shape ", weights.sizes());
  TORCH_CHECK(weights.device() == p.input.device(), "fused_losses: weights is on ",
              weights.device(), " but input is on ", p.input.device());
  p.weights = weights;
  p.args.weights = weights.data_ptr<float>();
}

at::Tensor ghmc_hist(const at::Tensor& input, const at::Tensor& target,
                     const std::optional<at::Tensor>& label_weight, int64_t bins) {
  Prepared p = prepare(input, target, label_weight, bins);
  GhmcArgs& a = p.args;
  at::Tensor hist = at::empty({bins + 1}, input.options().dtype(at::kLong));
  at::Tensor phist;
#ifdef FUSED_LOSSES_WITH_CUDA
  if (input.is_cuda()) {
    phist = at::empty({ghmc_cuda_num_partials(a.numel) * (bins + 1)},
                      input.options().dtype(at::kLong));
    a.partial_hist = phist.data_ptr<int64_t>();
  }
#endif
  a.hist = hist.data_ptr<int64_t>();
  launch(Pass::Histogram, a, input.device());
  return hist;
}

at::Tensor ghmc_weights(const at::Tensor& hist, const std::optional<at::Tensor>& acc_sum,
                        double momentum, bool mean) {
  TORCH_CHECK(hist.scalar_type() == at::kLong && hist.dim() == 1 && hist.numel() >= 2 &&
                  hist.numel() <= kGhmcMaxBins + 1,
              "fused_losses: ghmc hist must be a 1-D int64 tensor of bins + 1 elements with "
              "bins in [1, ", kGhmcMaxBins, "], got ", hist.scalar_type(), " of shape ",
              hist.sizes());
  TORCH_CHECK(momentum >= 0 && momentum < 1, "fused_losses: momentum must be in [0, 1), got ",
              momentum);
  const int64_t bins = hist.numel() - 1;
  const bool ema = momentum > 0;
  if (ema) {
    TORCH_CHECK(acc_sum.has_value(), "fused_losses: ghmc momentum = ", momentum,
                " > 0 needs an acc_sum tensor");
    TORCH_CHECK(acc_sum->scalar_type() == at::kFloat && acc_sum->is_contiguous() &&
                    acc_sum->numel() == bins,
                "fused_losses: acc_sum must be a contiguous float32 tensor of bins = ", bins,
                " elements, got ", acc_sum->scalar_type(), " of shape ", acc_sum->sizes());
    TORCH_CHECK(acc_sum->device() == hist.device(), "fused_losses: acc_sum is on ",
                acc_sum->device(), " but hist is on ", hist.device());
  }
  at::Tensor hist_c = hist.contiguous();
  at::Tensor weights = at::empty({bins}, hist.options().dtype(at::kFloat));
  GhmcArgs a;
  a.bins = static_cast<int32_t>(bins);
  a.hist = hist_c.data_ptr<int64_t>();
  a.acc_sum = ema ? acc_sum->data_ptr<float>() : nullptr;
  a.momentum = static_cast<float>(momentum);
  a.one_minus_momentum = static_cast<float>(1.0 - momentum);
  a.mean = mean;
  a.weights = weights.data_ptr<float>();
  launch(Pass::Weights, a, hist.device());
  return weights;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ghmc_fwd(
    const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& label_weight, const at::Tensor& weights, int64_t bins,
    c10::string_view reduction, bool compute_grad) {
  TORCH_CHECK(reduction == "none" || reduction == "mean" || reduction == "sum",
              "fused_losses: reduction must be none, mean or sum, got ", reduction);
  Prepared p = prepare(input, target, label_weight, bins);
  set_weights(p, weights);
  GhmcArgs& a = p.args;
  a.reduce = reduction != "none";
  a.mean = reduction == "mean";
  a.write_grad = a.reduce && compute_grad;
  at::Tensor loss = a.reduce ? at::empty({}, input.options()) : at::empty(input.sizes(), input.options());
  at::Tensor grad = a.write_grad ? at::empty(input.sizes(), input.options())
                                 : at::empty({0}, input.options());
  // The weights already carry the mean's 1/tot, so the saved gradient needs no scale.
  at::Tensor scale = at::ones({}, input.options().dtype(at::kFloat));
  at::Tensor psum;
#ifdef FUSED_LOSSES_WITH_CUDA
  if (input.is_cuda() && a.reduce) {
    psum = at::empty({ghmc_cuda_num_partials(a.numel)}, input.options().dtype(at::kFloat));
    a.partial_sum = psum.data_ptr<float>();
  }
#endif
  a.out = loss.data_ptr();
  a.grad = grad.data_ptr();
  launch(Pass::Forward, a, input.device());
  return {loss, grad, scale};
}

at::Tensor ghmc_bwd(const at::Tensor& grad_output, const at::Tensor& input,
                    const at::Tensor& target, const std::optional<at::Tensor>& label_weight,
                    const at::Tensor& weights, int64_t bins) {
  TORCH_CHECK(grad_output.sizes() == input.sizes(), "fused_losses: grad_output shape ",
              grad_output.sizes(), " must equal input shape ", input.sizes());
  TORCH_CHECK(grad_output.device() == input.device(), "fused_losses: grad_output is on ",
              grad_output.device(), " but input is on ", input.device());
  Prepared p = prepare(input, target, label_weight, bins);
  set_weights(p, weights);
  at::Tensor g_out = grad_output.to(input.scalar_type()).contiguous();
  at::Tensor grad_input = at::empty(input.sizes(), input.options());
  p.args.reduce = false;
  p.args.grad_output = g_out.data_ptr();
  p.args.grad = grad_input.data_ptr();
  launch(Pass::Backward, p.args, input.device());
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_losses, CPU, m) {
  m.impl("ghmc_hist", &ghmc_hist);
  m.impl("ghmc_weights", &ghmc_weights);
  m.impl("ghmc_fwd", &ghmc_fwd);
  m.impl("ghmc_bwd", &ghmc_bwd);
}

#ifdef FUSED_LOSSES_WITH_CUDA
TORCH_LIBRARY_IMPL(fused_losses, CUDA, m) {
  m.impl("ghmc_hist", &ghmc_hist);
  m.impl("ghmc_weights", &ghmc_weights);
  m.impl("ghmc_fwd", &ghmc_fwd);
  m.impl("ghmc_bwd", &ghmc_bwd);
}
#endif

}  // namespace fused_losses

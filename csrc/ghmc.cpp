// GHM-C ops: schemas, the histogram and weights passes, and what the shared
// binding (binding.h) needs to know for the loss pass. The three passes are
// described in csrc/cpu/ghmc_kernel.h; kernels there and in csrc/cuda/ghmc.cu.
#include "binding.h"

namespace fused_losses {
namespace {

struct Ghmc : LossTraits<GhmcOptions, Targets::Binary, Dims::Any> {
  // bins sizes the kernels' tables: checked here, whoever calls.
  // Only label_weight > 0 matters. Other dtypes (bool masks, float64) become
  // that mask in float32, taken in their own dtype as the reference takes it.
  static void label_weight(Launch<Options>& l, const OptionalTensor& label_weight) {
    OptionalTensor lw = label_weight;
    if (lw.has_value() && lw->scalar_type() != at::kFloat) lw = lw->gt(0).to(at::kFloat);
    l.broadcast(GhmcOperands::label_weight, lw, "label_weight");
  }

  // label_weight, then the per-bin weights of ghmc_weights.
  static void operands(Launch<Options>& l, const OptionalTensor& label_weight,
                       const at::Tensor& weights) {
    Ghmc::label_weight(l, label_weight);
    const int64_t bins = l.args.opt.bins;
    TORCH_CHECK(weights.scalar_type() == at::kFloat && weights.is_contiguous() &&
                    weights.numel() == bins,
                "fused_losses: ghmc weights must be a contiguous float32 tensor of bins = ",
                bins, " elements, got ", weights.scalar_type(), " of shape ", weights.sizes());
    TORCH_CHECK(weights.device() == l.input.device(), "fused_losses: weights is on ",
                weights.device(), " but input is on ", l.input.device());
    l.keep[GhmcOperands::weights] = weights;
    l.args.operands[GhmcOperands::weights] = vector_operand(weights);
  }
};

using Ops = ElementwiseOps<Ghmc, OptionalTensor, at::Tensor>;

// Pass 1: int64 [bins + 1], valid elements per bin and then those in no bin.
at::Tensor ghmc_hist(const at::Tensor& input, const at::Tensor& target,
                     const OptionalTensor& label_weight, c10::ArrayRef<double> options) {
  Launch<GhmcOptions> l = prepare<Ghmc>(input, target, options);
  Ghmc::label_weight(l, label_weight);
  at::Tensor hist = at::empty({l.args.opt.bins + 1}, input.options().dtype(at::kLong));
  l.args.out = hist.data_ptr();
  launch(l.args, Pass::Histogram, input.device());
  return hist;
}

// Pass 2: float32 [bins] weights from the (possibly all-reduced) histogram;
// updates acc_sum in place when momentum > 0.
at::Tensor ghmc_weights(const at::Tensor& hist, const OptionalTensor& acc_sum,
                        c10::ArrayRef<double> options, bool mean) {
  LaunchArgs<GhmcOptions> a;
  a.opt = unpack_options<GhmcOptions>(options, Ghmc::kStem);
  const int64_t bins = a.opt.bins;
  TORCH_CHECK(hist.scalar_type() == at::kLong && hist.dim() == 1 && hist.numel() == bins + 1,
              "fused_losses: ghmc hist must be a 1-D int64 tensor of bins + 1 = ", bins + 1,
              " elements, got ", hist.scalar_type(), " of shape ", hist.sizes());
  if (a.opt.momentum > 0) {
    TORCH_CHECK(acc_sum.has_value(), "fused_losses: ghmc momentum = ", a.opt.momentum,
                " > 0 needs an acc_sum tensor");
    TORCH_CHECK(acc_sum->scalar_type() == at::kFloat && acc_sum->is_contiguous() &&
                    acc_sum->numel() == bins,
                "fused_losses: acc_sum must be a contiguous float32 tensor of bins = ", bins,
                " elements, got ", acc_sum->scalar_type(), " of shape ", acc_sum->sizes());
    TORCH_CHECK(acc_sum->device() == hist.device(), "fused_losses: acc_sum is on ",
                acc_sum->device(), " but hist is on ", hist.device());
    a.aux = acc_sum->data_ptr<float>();
  }
  at::Tensor hist_c = hist.contiguous();
  at::Tensor weights = at::empty({bins}, hist.options().dtype(at::kFloat));
  a.input = hist_c.data_ptr();
  a.input_dtype = DType::Int64;
  a.numel = bins + 1;
  a.mean = mean;
  a.out = weights.data_ptr();
  launch(a, Pass::Weights, hist.device());
  return weights;
}

void define_impls(torch::Library& m) {
  m.impl("ghmc_hist", &ghmc_hist);
  m.impl("ghmc_weights", &ghmc_weights);
  Ops::define_impls(m);
}

}  // namespace
}  // namespace fused_losses

TORCH_LIBRARY_FRAGMENT(fused_losses, m) {
  m.def("ghmc_hist(Tensor input, Tensor target, Tensor? label_weight, float[] options) -> Tensor");
  m.def("ghmc_weights(Tensor hist, Tensor(a!)? acc_sum, float[] options, bool mean) -> Tensor");
  m.def(
      "ghmc_fwd(Tensor input, Tensor target, Tensor? label_weight, Tensor weights, "
      "float[] options, str reduction, bool compute_grad) -> (Tensor, Tensor, Tensor)");
  m.def(
      "ghmc_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor? label_weight, "
      "Tensor weights, float[] options) -> Tensor");
}

FUSED_LOSSES_IMPL(fused_losses::define_impls)

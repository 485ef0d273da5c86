// Plain-C++ description of the GHM-C passes, shared by the torch binding
// (csrc/ghmc.cpp), the CPU kernels (csrc/cpu/ghmc_kernel.h) and the CUDA
// kernels (csrc/cuda/ghmc.cu). No torch header.
//
// GHM-C (Li et al. 2019, as mmdet's GHMC computes it), per element:
//   g = |σ(x) - t|, valid = label_weight > 0 (all valid without label_weight)
//   bin b: edges[b] <= g < edges[b+1], edges[i] = float(i)/float(bins) in fp32,
//          edges[bins] = 1.0f + 1e-6f; a valid g outside [0, edges[bins]) (or NaN)
//          is in no bin.
//   tot = max(#valid, 1); per non-empty bin: w_b = tot / count_b, or with
//   momentum m > 0: acc_sum[b] = m·acc_sum[b] + (1-m)·count_b, w_b = tot / acc_sum[b];
//   empty bins: w_b = 0 and acc_sum[b] untouched; n = #non-empty bins; w_b /= n if n > 0.
//   loss_e = w_{b(e)} · bce(x, t) (0·bce for elements in no bin or invalid, so a
//   NaN logit still makes the loss NaN); mean = Σ loss_e / tot, sum = Σ loss_e.
//   d loss_e/dx = w_{b(e)} · (σ(x) - t)   (weights are constants).
//
// Three passes: histogram -> weights (tiny) -> loss (+ gradient). The caller
// may all-reduce `hist` across ranks between the first two.
#pragma once
#include "kernel_types.h"

namespace fused_losses {

constexpr int kGhmcMaxBins = 64;

struct GhmcArgs {
  const void* input = nullptr;        // logits: Float32, Float16 or BFloat16
  DType input_dtype = DType::Float32;
  const void* target = nullptr;       // any DType, read as float
  DType target_dtype = DType::Float32;
  const void* grad_output = nullptr;  // backward only: numel elements, input_dtype
  Operand label_weight;               // broadcast to [R, C]; valid = value > 0
  int64_t numel = 0;
  int64_t cols = 1;
  int32_t bins = 10;                  // 1..kGhmcMaxBins

  // Pass 1 output: int64[bins + 1]. hist[b] = valid elements in bin b,
  // hist[bins] = valid elements in no bin. Written whole (zeroed by the pass).
  int64_t* hist = nullptr;

  // Pass 2: reads hist, updates acc_sum in place (float32[bins], nullptr when
  // momentum == 0), writes weights float32[bins] = w_b, divided by tot when mean.
  float* acc_sum = nullptr;
  float momentum = 0.f;
  float one_minus_momentum = 1.f;     // (1 - momentum) rounded once from double, as torch does
  bool mean = true;
  float* weights = nullptr;

  // Pass 3: loss = Σ weights[b(e)]·bce (reduce) or elementwise (none, written to
  // out in input_dtype); write_grad: grad[e] = weights[b(e)]·(σ(x)-t) in input_dtype.
  // Backward (none): grad[e] = weights[b(e)]·(σ(x)-t)·grad_output[e].
  bool reduce = true;
  bool write_grad = false;
  void* out = nullptr;     // [] when reduce, else numel elements; input_dtype
  void* grad = nullptr;
  // CUDA only: scratch for the deterministic two-stage reductions.
  float* partial_sum = nullptr;       // ghmc_cuda_num_partials(numel) floats
  int64_t* partial_hist = nullptr;    // ghmc_cuda_num_partials(numel) * (bins + 1)
};

void ghmc_cpu_histogram(const GhmcArgs& args);
void ghmc_cpu_weights(const GhmcArgs& args);
void ghmc_cpu_forward(const GhmcArgs& args);
void ghmc_cpu_backward(const GhmcArgs& args);

#ifdef FUSED_LOSSES_WITH_CUDA
int64_t ghmc_cuda_num_partials(int64_t numel);
// `stream` is a cudaStream_t passed as void*.
void ghmc_cuda_histogram(const GhmcArgs& args, void* stream);
void ghmc_cuda_weights(const GhmcArgs& args, void* stream);
void ghmc_cuda_forward(const GhmcArgs& args, void* stream);
void ghmc_cuda_backward(const GhmcArgs& args, void* stream);
#endif

}  // namespace fused_losses

// Plain-C++ description of one asymmetric-loss (ASL) launch, shared by the
// torch binding (csrc/asl.cpp), the CPU kernels (csrc/cpu/) and the CUDA
// kernels (csrc/cuda/asl.cu). No torch header: .cu files stay
// compile-checkable against the CUDA toolkit alone.
#pragma once
#include "kernel_types.h"

namespace fused_losses {

// loss = -w·(t·log max(p, eps) + (1-t)·log max(p_m, eps))·(1-p_t)^γ with
// p = σ(x), p_m = min(1-p+clip, 1), p_t = p·t + p_m·(1-t), γ = γ₊·t + γ₋·(1-t);
// see fused_losses/reference/asl.py (formula and subgradients). Input, target
// and grad are contiguous with `numel` elements and last dimension `cols`.
struct AslArgs {
  const void* input = nullptr;        // logits, input_dtype in {Float32, Float16, BFloat16}
  DType input_dtype = DType::Float32;
  const void* target = nullptr;
  DType target_dtype = DType::Float32;
  const void* grad_output = nullptr;  // backward only: d/d loss, input_dtype, numel elements
  Operand weight;
  int64_t numel = 0;
  int64_t cols = 1;
  float gamma_pos = 1.f;
  float gamma_neg = 4.f;
  float clip = 0.05f;
  float log_eps = 0.f;         // log(eps), used when has_eps
  float grad_scale = 1.f;      // forward gradient multiplier (1/numel for a mean)
  bool has_eps = true;         // eps > 0
  bool hard = false;           // bool/integer targets: 0/1 select path
  bool focal = true;           // γ₊ or γ₋ non-zero
  bool detach = true;          // (1-p_t)^γ is a constant of the backward
  bool reduce = true;          // mean/sum (true) or none (false)
  bool mean = false;
  bool write_grad = false;     // forward also writes d loss/d input into `grad`
  void* out = nullptr;         // loss: [] when reduce, else numel elements; input_dtype
  void* grad = nullptr;        // forward gradient or backward grad_input; input_dtype
  float* scale = nullptr;      // [] float32, always 1 (no ignored elements)
  // CUDA only: per-block partials, asl_cuda_num_partials(numel) entries each.
  float* partial_sum = nullptr;
  int32_t* partial_count = nullptr;
};

void asl_cpu_forward(const AslArgs& args);
void asl_cpu_backward(const AslArgs& args);

#ifdef FUSED_LOSSES_WITH_CUDA
int64_t asl_cuda_num_partials(int64_t numel);
// `stream` is a cudaStream_t passed as void* to keep this header CUDA-free.
void asl_cuda_forward(const AslArgs& args, void* stream);
void asl_cuda_backward(const AslArgs& args, void* stream);
#endif

}  // namespace fused_losses

// Plain-C++ description of one focal_bce launch, shared by the torch binding
// (csrc/focal_bce.cpp), the CPU kernels (csrc/cpu/) and the CUDA kernels
// (csrc/cuda/). It includes no torch header, so .cu files stay compile-checkable
// against the CUDA toolkit alone.
#pragma once
#include "kernel_types.h"

namespace fused_losses {

// loss = w · α_t · (1-p_t)^γ · -(pw·t·log σ(x) + (1-t)·log σ(-x)), see
// fused_losses/reference/focal_bce.py. Input, target and grad tensors are
// contiguous with `numel` elements and last dimension `cols`.
struct FocalBceArgs {
  const void* input = nullptr;        // logits, input_dtype in {Float32, Float16, BFloat16}
  DType input_dtype = DType::Float32;
  const void* target = nullptr;
  DType target_dtype = DType::Float32;
  const void* grad_output = nullptr;  // backward only: d/d loss, input_dtype, numel elements
  Operand alpha, pos_weight, weight;
  int64_t numel = 0;
  int64_t cols = 1;
  float gamma = 2.f;
  float alpha_value = 0.f;     // used when has_alpha_value and alpha.ptr == nullptr
  float smoothing = 0.f;       // t <- t·(1-ε) + ε/2
  float ignore_value = 0.f;    // targets equal to it are ignored when has_ignore
  float grad_scale = 1.f;      // forward gradient multiplier (1/numel for a plain mean)
  bool has_alpha_value = false;
  bool has_ignore = false;
  bool hard = false;           // integer/bool targets, no smoothing: 0/1 select path
  bool reduce = true;          // mean/sum (true) or none (false)
  bool mean = true;
  bool write_grad = false;     // forward also writes d loss/d input into `grad`
  void* out = nullptr;         // loss: [] when reduce, else numel elements; input_dtype
  void* grad = nullptr;        // forward gradient or backward grad_input; input_dtype
  float* scale = nullptr;      // [] float32: 1/count when a mean still needs it, else 1
  // CUDA only: per-block partials, focal_bce_cuda_num_partials(numel) entries each.
  float* partial_sum = nullptr;
  int32_t* partial_count = nullptr;
};

void focal_bce_cpu_forward(const FocalBceArgs& args);
void focal_bce_cpu_backward(const FocalBceArgs& args);

#ifdef FUSED_LOSSES_WITH_CUDA
int64_t focal_bce_cuda_num_partials(int64_t numel);
// `stream` is a cudaStream_t passed as void* to keep this header CUDA-free.
void focal_bce_cuda_forward(const FocalBceArgs& args, void* stream);
void focal_bce_cuda_backward(const FocalBceArgs& args, void* stream);
#endif

}  // namespace fused_losses

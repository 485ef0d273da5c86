// Plain-C++ description of one softmax focal launch, shared by the torch
// binding (csrc/softmax_focal.cpp), the CPU kernels (csrc/cpu/) and the CUDA
// kernels (csrc/cuda/softmax_focal.cu). No torch header.
#pragma once
#include "kernel_types.h"

namespace fused_losses {

// Per row (see fused_losses/reference/softmax_focal.py), p = softmax(x), α_c = 1
// without alpha:
//   CE_ε = (1-ε)·(-α_y·log p_y) + (ε/C)·Σ_c(-α_c·log p_c),  loss = (1-p_y)^γ · CE_ε
// Logits are a contiguous [N, C, D] tensor (D = d1·d2·…, 1 for [N, C]): row
// r = (n, s) starts at n·C·D + s and its classes are D apart. Target: rows
// class indices. Ignored rows give 0; an out-of-range target a NaN row.
struct SoftmaxFocalArgs {
  const void* input = nullptr;        // Float32, Float16 or BFloat16
  DType input_dtype = DType::Float32;
  const void* target = nullptr;       // integer DType, `rows` elements
  DType target_dtype = DType::Int64;
  const float* alpha = nullptr;       // [cols] float32 or nullptr
  const void* grad_output = nullptr;  // backward only: `rows` elements, input_dtype
  int64_t rows = 0;
  int64_t cols = 1;
  int64_t spatial = 1;                // D: the class stride
  float gamma = 2.f;
  float smoothing = 0.f;
  int64_t ignore_index = -100;
  bool has_ignore = true;
  bool reduce = true;
  bool mean = true;
  bool write_grad = false;  // forward also writes d loss/d input (unscaled) into `grad`
  void* out = nullptr;      // loss: [] when reduce, else `rows` elements; input_dtype
  void* grad = nullptr;     // forward gradient or backward grad_input; input_dtype
  float* scale = nullptr;   // [] float32: 1/Σ α_y for a mean (0 if that sum is 0), else 1
  // CUDA only: per-row loss and α_y scratch, `rows` floats each.
  float* row_loss = nullptr;
  float* row_weight = nullptr;
};

void softmax_focal_cpu_forward(const SoftmaxFocalArgs& args);
void softmax_focal_cpu_backward(const SoftmaxFocalArgs& args);

#ifdef FUSED_LOSSES_WITH_CUDA
// `stream` is a cudaStream_t passed as void*.
void softmax_focal_cuda_forward(const SoftmaxFocalArgs& args, void* stream);
void softmax_focal_cuda_backward(const SoftmaxFocalArgs& args, void* stream);
#endif

}  // namespace fused_losses

// Plain-C++ description of one self-adjusting DSC launch (Li et al., ACL
// 2020), shared by csrc/dsc.cpp, csrc/cpu/dsc_kernel.h and csrc/cuda/dsc.cu.
// No torch header.
#pragma once
#include "kernel_types.h"

namespace fused_losses {

// Per row of contiguous [rows, cols] logits with class index y, p = softmax(x)[y]:
//   p~ = (1-p)^α·p,  loss = 1 - (2p~ + smooth) / (p~ + 1 + smooth)
// An out-of-range y gives a NaN row (never an out-of-row read).
struct DscArgs {
  const void* input = nullptr;        // Float32, Float16 or BFloat16
  DType input_dtype = DType::Float32;
  const void* target = nullptr;       // integer DType, `rows` elements
  DType target_dtype = DType::Int64;
  const void* grad_output = nullptr;  // backward only: `rows` elements, input_dtype
  int64_t rows = 0;
  int64_t cols = 1;
  float alpha = 1.f;
  float smooth = 1.f;
  float grad_scale = 1.f;   // forward gradient multiplier (1/rows for a mean)
  bool reduce = true;
  bool mean = true;
  bool write_grad = false;
  void* out = nullptr;      // [] when reduce, else `rows` elements; input_dtype
  void* grad = nullptr;     // forward gradient or backward grad_input; input_dtype
  float* scale = nullptr;   // [] float32: always 1 (the mean's 1/rows is in grad_scale)
  float* row_loss = nullptr;  // CUDA only: `rows` floats of scratch
};

void dsc_cpu_forward(const DscArgs& args);
void dsc_cpu_backward(const DscArgs& args);

#ifdef FUSED_LOSSES_WITH_CUDA
void dsc_cuda_forward(const DscArgs& args, void* stream);
void dsc_cuda_backward(const DscArgs& args, void* stream);
#endif

}  // namespace fused_losses

// Plain-C++ description of one dice launch, shared by the torch binding
// (csrc/dice.cpp), the CPU kernels (csrc/cpu/dice_kernel.h) and the CUDA
// kernels (csrc/cuda/dice.cu). No torch header.
//
// Logits [N, C, S] (S = product of the spatial dims, 1 for [N, C]), per class c
// summing over n and s (see fused_losses/reference/dice.py):
//   p̃ = (1-σ(x))^α·σ(x),  k = square ? 2 : 1
//   sums[0·C + c] = Σ p̃·t,  sums[1·C + c] = Σ p̃ᵏ,  sums[2·C + c] = Σ tᵏ   (fp32)
//   dice_c = 1 - (2·S_pt + smooth) / (S_p + S_t + smooth)
//   loss = mean_c / Σ_c dice_c (reduce) or dice_c written to out[C] (none).
// Backward, with g_c = grad_output[c·stride]·scale, num = 2S_pt + s, den = S_p + S_t + s:
//   d loss/dx = g_c·(-2t/den + k·num·p̃^(k-1)/den²)·p̃·(σ(-x) - α·σ(x)).
// Both passes are deterministic: fixed partitions reduced in a fixed order.
#pragma once
#include "kernel_types.h"

namespace fused_losses {

struct DiceArgs {
  const void* input = nullptr;     // logits: Float32, Float16 or BFloat16, contiguous
  DType input_dtype = DType::Float32;
  const void* target = nullptr;    // any DType, read as float, contiguous
  DType target_dtype = DType::Float32;
  int64_t rows = 0;                // N
  int64_t cols = 0;                // C
  int64_t inner = 1;               // S
  float smooth = 1.f;
  float alpha = 0.f;
  bool square = false;

  // Forward: writes sums (float32[3·C]) and out ([] when reduce, else [C]; input_dtype).
  float* sums = nullptr;
  bool reduce = true;
  bool mean = true;
  void* out = nullptr;

  // Backward: reads sums; grad (numel elements, input_dtype) = d loss/dx.
  const float* grad_output = nullptr;  // float32, [] (stride 0) or [C] (stride 1)
  int64_t grad_output_stride = 0;
  float grad_output_scale = 1.f;       // 1/C for a mean
  void* grad = nullptr;

  // CUDA forward scratch: dice_cuda_num_partials(rows·inner)·3·C partials, C dice values.
  float* partials = nullptr;
  float* dice = nullptr;
};

void dice_cpu_forward(const DiceArgs& args);
void dice_cpu_backward(const DiceArgs& args);

#ifdef FUSED_LOSSES_WITH_CUDA
int64_t dice_cuda_num_partials(int64_t rows);  // rows = N·S
// `stream` is a cudaStream_t passed as void*.
void dice_cuda_forward(const DiceArgs& args, void* stream);
void dice_cuda_backward(const DiceArgs& args, void* stream);
#endif

}  // namespace fused_losses

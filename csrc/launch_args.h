// The plain-C++ description of one kernel launch, shared by the torch
// bindings (csrc/<stem>.cpp), the CPU kernels (csrc/cpu/) and the CUDA kernels
// (csrc/cuda/). No torch header: .cu files include this and must stay
// compile-checkable against the CUDA toolkit alone.
//
// One template serves every loss: LaunchArgs<Options> carries the tensors,
// the shape, the reduction and `opt`, the loss's scalar options as generated
// from its spec (fused_losses/spec/<stem>.py -> fused_losses_options.h). A
// new scalar option therefore changes no field here; the kernels read it as
// a.opt.<name> and derive whatever they need from it themselves.
#pragma once
#include <cstdint>

#include "fused_losses_options.h"

namespace fused_losses {

// Every loss with C++ kernels: X(stem, Options). Adding a loss adds a line.
#define FUSED_LOSSES_FOR_EACH_LOSS(X)     \
  X(focal_bce, FocalBceOptions)           \
  X(ghmc, GhmcOptions)                    \
  X(asl, AslOptions)                      \
  X(dice, DiceOptions)                    \
  X(softmax_focal, SoftmaxFocalOptions)   \
  X(dsc, DscOptions)

// Each loss's stem: its name in op names and error messages.
template <typename Options>
struct Stem;
#define FUSED_LOSSES_STEM(stem, Options)        \
  template <>                                   \
  struct Stem<Options> {                        \
    static constexpr const char* value = #stem; \
  };
FUSED_LOSSES_FOR_EACH_LOSS(FUSED_LOSSES_STEM)
#undef FUSED_LOSSES_STEM

// Element types the kernels read. Bool targets are passed as UInt8.
enum class DType : int32_t { Float32, Float16, BFloat16, Float64, UInt8, Int8, Int16, Int32, Int64 };

constexpr bool is_floating(DType d) {
  return d == DType::Float32 || d == DType::Float16 || d == DType::BFloat16 ||
         d == DType::Float64;
}

// A float32 operand broadcast to the logical [rows, cols] view through (row,
// column) strides, so a per-class [C] vector is never expanded in memory.
// ptr == nullptr means the operand is absent.
struct Operand {
  const float* ptr = nullptr;
  int64_t stride_r = 0;
  int64_t stride_c = 0;
};

// Each loss's tensor operands: their slots in LaunchArgs::operands, which is
// the order of the loss's op schema.
constexpr int kMaxOperands = 3;
struct FocalBceOperands { enum : int { alpha, pos_weight, weight }; };
struct AslOperands { enum : int { weight, pos_weight }; };
struct GhmcOperands { enum : int { label_weight, weights }; };  // weights: [bins]
constexpr int kGhmcMaxBins = 64;  // fused_losses/spec/ghmc.py MAX_BINS
struct SoftmaxFocalOperands { enum : int { alpha }; };          // alpha: [C]

// The pass a launch runs. Histogram and Weights are GHM-C's first two passes.
enum class Pass : int32_t { Forward, Backward, Histogram, Weights };

// Layout: `numel` elements, contiguous. A class vector has `cols` entries
// `inner` apart and there are `rows` of them: [..., C] has rows = numel / C
// and inner = 1; [N, C, d1, ...] has rows = N·D and inner = D = d1·d2·….
// GHM-C's Histogram pass writes its histogram to `out`; its Weights pass
// reads the histogram as `input` and writes the weights to `out`.
template <typename Options>
struct LaunchArgs {
  const void* input = nullptr;        // logits: Float32, Float16 or BFloat16
  DType input_dtype = DType::Float32;
  const void* target = nullptr;       // same shape (binary) or one class index per row
  DType target_dtype = DType::Float32;
  const void* grad_output = nullptr;  // backward: d/d loss in input_dtype (dice: float32)
  Operand operands[kMaxOperands];     // the <Stem>Operands slots; absent ones are null
  int64_t numel = 0;
  int64_t rows = 0;
  int64_t cols = 1;
  int64_t inner = 1;
  bool reduce = false;                // mean/sum (true) or none (false)
  bool mean = false;
  bool write_grad = false;            // the forward also writes d loss/d input into `grad`
  void* out = nullptr;                // loss ([] or the `none` shape), input_dtype
  void* grad = nullptr;               // forward gradient or backward grad_input, input_dtype
  float* scale = nullptr;             // [] float32: the factor the saved gradient still needs
  float* aux = nullptr;               // dice: sums [3, C]; GHM-C weights pass: acc_sum [bins]
  void* workspace = nullptr;          // CUDA: cuda_workspace_bytes(args, pass) bytes of scratch
  Options opt;
};

// Focal BCE's α, one meaning in every backend (ALPHA_MODE in
// fused_losses/triton/focal_bce.py): a tensor operand wins over opt.alpha.
enum class AlphaMode : int { None = 0, Scalar = 1, Tensor = 2 };

inline AlphaMode alpha_mode(const LaunchArgs<FocalBceOptions>& a) {
  if (a.operands[FocalBceOperands::alpha].ptr != nullptr) return AlphaMode::Tensor;
  return a.opt.has_alpha ? AlphaMode::Scalar : AlphaMode::None;
}

// The kernels of one loss, overloaded on its LaunchArgs type:
//   cpu_run (csrc/cpu/dispatch.cpp) runs the CPU build this machine supports;
//   cuda_workspace_bytes and cuda_run (csrc/cuda/<stem>.cu) size the scratch
//   a CUDA pass needs and launch it on `stream` (a cudaStream_t as void*).
#define FUSED_LOSSES_DECLARE_KERNELS(stem, Options)                          \
  void cpu_run(const LaunchArgs<Options>& args, Pass pass);                  \
  int64_t cuda_workspace_bytes(const LaunchArgs<Options>& args, Pass pass);  \
  void cuda_run(const LaunchArgs<Options>& args, Pass pass, void* stream);
FUSED_LOSSES_FOR_EACH_LOSS(FUSED_LOSSES_DECLARE_KERNELS)
#undef FUSED_LOSSES_DECLARE_KERNELS

// The backward of every (loss, grad, scale) op on CUDA (csrc/cuda/scale.cu):
// grad[0..numel) *= f in place with f = *grad_output * *scale (grad_output one
// element of dtype gout_dtype, scale one float), or nothing when f == 1,
// decided on the device (no host sync, so it is safe inside CUDA-graph capture).
void cuda_scale_grad(void* grad, DType dtype, int64_t numel, const void* grad_output,
                     DType gout_dtype, const float* scale, void* stream);

}  // namespace fused_losses

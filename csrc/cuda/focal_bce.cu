// Fused sigmoid focal BCE on CUDA: the per-element maths on the elementwise
// skeleton of elementwise.cuh.
//
// The same maths as fused_losses/triton/focal_bce.py (see
// fused_losses/reference/focal_bce.py for the formula).
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "../launch_args.h"
#include "elementwise.cuh"
#include "math.cuh"

namespace fused_losses {
namespace {

using device::load_float;
using device::load_operand;
using elementwise::Element;
using Args = LaunchArgs<FocalBceOptions>;

struct FocalBce {
  using Options = FocalBceOptions;
  static constexpr bool kCountKept = true;  // ignore_index drops elements

  // Derived from the options once per launch.
  struct Consts {
    float ignore_value;  // ignore_index as the float a target is compared with
    float grad_scale;    // forward gradient multiplier (1/numel for a plain mean)
    int gamma_int;       // γ when the hard path may use q^γ by multiplication, else 0
    AlphaMode alpha_mode;
    bool hard;           // integer/bool targets, no smoothing: 0/1 select path
    bool clamp_count;    // ignore_index in use: an all-ignored mean is 0, not NaN
  };

  static Consts consts(const Args& a) {
    const FocalBceOptions& o = a.opt;
    Consts c;
    c.ignore_value = static_cast<float>(o.ignore_index);
    // A mean without ignore_index has a host-known divisor: fold it in here.
    c.grad_scale = (a.mean && !o.has_ignore_index && a.numel)
                       ? 1.f / static_cast<float>(a.numel) : 1.f;
    c.hard = !is_floating(a.target_dtype) && o.label_smoothing == 0.f;
    const bool small_int_gamma = o.gamma == 1.f || o.gamma == 2.f || o.gamma == 3.f ||
                                 o.gamma == 4.f;
    c.gamma_int = c.hard && small_int_gamma ? static_cast<int>(o.gamma) : 0;
    c.alpha_mode = alpha_mode(a);
    c.clamp_count = o.has_ignore_index;
    return c;
  }

  // Loss and gradient of one element: the CUDA twin of _focal_bce_tile.
  template <typename TIn, typename TT>
  __device__ __forceinline__ static Element element(const Args& a, const Consts& c, int64_t i,
                                                    int64_t row, int64_t col) {
    const FocalBceOptions& o = a.opt;
    const Operand& pos_weight = a.operands[FocalBceOperands::pos_weight];
    const Operand& weight = a.operands[FocalBceOperands::weight];
    const float x = load_float(static_cast<const TIn*>(a.input) + i);
    float t = load_float(static_cast<const TT*>(a.target) + i);
    const bool keep = !(o.has_ignore_index && t == c.ignore_value);
    // Zeroed before smoothing so a value like -100 never enters the maths.
    t = keep ? t : 0.f;
    t = t * (1.f - o.label_smoothing) + 0.5f * o.label_smoothing;

    float log_p, log_n, s_p, s_n;
    device::sigmoid_terms(x, &log_p, &log_n, &s_p, &s_n);
    const float pos_t = pos_weight.ptr != nullptr ? t * load_operand(pos_weight, row, col) : t;
    float loss = -(pos_t * log_p + (1.f - t) * log_n);
    float grad = (1.f - t) * s_p - pos_t * s_n;
    if (o.gamma != 0.f) {
      float f, r;
      device::focal_factor(log_p, log_n, s_p, s_n, t, o.gamma, c.gamma_int, c.hard, &f, &r);
      grad = f * (o.gamma * (1.f - 2.f * t) * r * loss + grad);
      loss *= f;
    }
    if (c.alpha_mode != AlphaMode::None) {
      const float al = c.alpha_mode == AlphaMode::Tensor
                           ? load_operand(a.operands[FocalBceOperands::alpha], row, col)
                           : o.alpha;
      const float a_t = al * t + (1.f - al) * (1.f - t);
      loss *= a_t;
      grad *= a_t;
    }
    if (weight.ptr != nullptr) {
      const float w = load_operand(weight, row, col);
      loss *= w;
      grad *= w;
    }
    // Selects, not products: an ignored element's NaN or inf must not leak.
    return Element{keep ? loss : 0.f, keep ? grad : 0.f, keep};
  }
};

}  // namespace

int64_t cuda_workspace_bytes(const Args& a, Pass p) {
  return elementwise::workspace_bytes<FocalBce>(a, p);
}
void cuda_run(const Args& a, Pass p, void* stream) { elementwise::run<FocalBce>(a, p, stream); }

}  // namespace fused_losses

// Fused softmax focal loss on CUDA, on the row-softmax skeletons.
//
// Contiguous rows of C <= 2048 classes: FocalRows on the warp-per-row kernels
// of rows_warp.cuh (row in registers, one read, one exp per element; maths in
// rows_math.cuh focal_row). Longer or spatial ([N, C, d...]) rows: one block
// per row (grid-stride over rows): block_row_stats gives the max, sum-exp and
// sum-exp without the target class in one read of the row; the row loss
// follows, and a second read writes the gradient. Either way the forward
// writes the final gradient: a weighted mean (α or ignore_index) divides by
// Σ α_y over the kept rows, which a pre-pass over the targets computes on the
// device (rows::launch_divisor), so `scale` is 1. Same maths as
// fused_losses/triton/softmax_focal.py.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "../launch_args.h"
#include "launch.cuh"
#include "math.cuh"
#include "rows.cuh"
#include "rows_warp.cuh"

namespace fused_losses {
namespace {

using device::load_float;
using device::store_float;
using Args = LaunchArgs<SoftmaxFocalOptions>;

// The warp kernels' loss (rows_warp.cuh).
struct FocalRows {
  using Options = SoftmaxFocalOptions;
  __device__ static bool keep(const Args& a, int64_t y_raw) {
    return !(a.opt.has_ignore_index && y_raw == a.opt.ignore_index);
  }
  __device__ static const float* alpha(const Args& a) {
    return a.operands[SoftmaxFocalOperands::alpha].ptr;
  }
  __device__ static rowmath::RowOut row(const Args& a, const rowmath::RowIn& in, float w_y) {
    return rowmath::focal_row(in, w_y, a.opt.gamma, a.opt.label_smoothing);
  }
};

// The block kernel. backward: grad_output given, gradient always written, no
// per-row outputs. Forward gradient × grad_scale (× den[1] when den is set).
template <typename TIn, typename TT>
__global__ void __launch_bounds__(rows::kMaxThreads) _softmax_focal_fwd_kernel(
    const Args a, const rows::Scratch scratch, float grad_scale, bool backward) {
  const TIn* x = static_cast<const TIn*>(a.input);
  const TT* t = static_cast<const TT*>(a.target);
  TIn* grad = static_cast<TIn*>(a.grad);
  const float* alpha = a.operands[SoftmaxFocalOperands::alpha].ptr;
  const float gamma = a.opt.gamma, smoothing = a.opt.label_smoothing;
  const int64_t C = a.cols, D = a.inner;
  const bool want_grad = backward || a.write_grad;
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const int64_t n = r / D;
    const int64_t base = n * C * D + (r - n * D);
    const int64_t y_raw = static_cast<int64_t>(t[r]);
    const bool keep = !(a.opt.has_ignore_index && y_raw == a.opt.ignore_index);
    const bool in_range = y_raw >= 0 && y_raw < C;
    const int64_t y = in_range ? y_raw : 0;  // never index outside the row
    if (!keep) {  // block-uniform: the whole block skips the row's maths
      if (want_grad) {
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store_float(grad + base + c * D, 0.f);
      }
      if (!backward && threadIdx.x == 0) scratch.row_loss[r] = 0.f;
      continue;
    }
    const bool smooth = smoothing != 0.f;
    const device::RowStats st = device::block_row_stats(x + base, D, C, y, alpha, smooth);
    const float log_s = logf(st.s);
    const float lse = st.m + log_s;
    const float log_py = fminf(load_float(x + base + y * D) - lse, 0.f);
    const float w_y = alpha != nullptr ? __ldg(alpha + y) : 1.f;
    const float n_cls = static_cast<float>(C);
    float ce = -w_y * log_py;
    if (smooth) ce = (1.f - smoothing) * ce + smoothing / n_cls * (st.a_sum * lse - st.ax);
    const float f = gamma == 0.f ? 1.f : expf(gamma * (logf(st.s_other) - log_s));
    if (!backward && threadIdx.x == 0) {
      scratch.row_loss[r] = in_range ? f * ce : __int_as_float(0x7fc00000);
    }
    if (!want_grad) continue;
    float scale = backward ? load_float(static_cast<const TIn*>(a.grad_output) + r)
                           : (scratch.den != nullptr ? grad_scale * scratch.den[1] : grad_scale);
    if (!in_range) scale = __int_as_float(0x7fc00000);
    const float big_g = gamma == 0.f ? 0.f : gamma * f * expf(log_py) * ce;
    device::RowCoefs k;
    k.c_p = f * (1.f - smoothing) * w_y;
    k.c_a = 0.f;
    if (smooth) {
      k.c_p += f * smoothing * st.a_sum / n_cls;
      k.c_a = f * smoothing / n_cls;
    }
    k.c_y = -(f * (1.f - smoothing) * w_y + big_g) * scale;
    k.c_p *= scale;
    k.c_a *= scale;
    k.c_r = big_g * scale;
    device::block_row_grad(x + base, grad + base, D, C, y, st, k, alpha, true);
  }
}

// A mean whose divisor the targets decide (α or ignore_index): the pre-pass.
bool weighted(const Args& a) {
  return a.operands[SoftmaxFocalOperands::alpha].ptr != nullptr || a.opt.has_ignore_index;
}

}  // namespace

int64_t cuda_workspace_bytes(const Args& a, Pass pass) {
  return rows::workspace_bytes(a, pass, weighted(a));
}

void cuda_run(const Args& a, Pass pass, void* stream) {
  const float* alpha = a.operands[SoftmaxFocalOperands::alpha].ptr;
  const bool w = weighted(a);
  // A mean over rows that nothing can drop: 1/rows now; else den[1] on the device.
  const float grad_scale = a.mean && !w && a.rows ? 1.f / static_cast<float>(a.rows) : 1.f;
  rows::run(
      a, pass, "_softmax_focal_fwd_kernel", w, stream,
      [&](const rows::Scratch& sc, cudaStream_t s) {
        rows::launch_divisor(a, alpha, a.opt.has_ignore_index, a.opt.ignore_index, sc, s);
      },
      [&](auto in, auto tt, const rows::Grid& g) {
        using TIn = typename decltype(in)::type;
        using TT = typename decltype(tt)::type;
        if constexpr (std::is_void<TT>::value) {
          const warp_rows::Plan p = warp_rows::plan(a, g, grad_scale);
          if (a.opt.label_smoothing != 0.f) {
            warp_rows::launch_rows<FocalRows, TIn, true>(a, p, g.stream);
          } else {
            warp_rows::launch_rows<FocalRows, TIn, false>(a, p, g.stream);
          }
        } else {
          _softmax_focal_fwd_kernel<TIn, TT>
              <<<g.blocks, g.threads, 0, g.stream>>>(a, g.scratch, grad_scale, g.backward);
        }
      });
}

}  // namespace fused_losses

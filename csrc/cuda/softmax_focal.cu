// Fused softmax focal loss on CUDA: the row kernel on the row-softmax
// skeleton of rows.cuh.
//
// One block per row (grid-stride over rows): block_row_stats gives the max,
// sum-exp and sum-exp without the target class in one read of the row; the
// row loss follows, and a second read writes the gradient when one is needed
// (mean/sum forward) or the gradient times grad_output[row] (none backward).
// Per-row losses and α_y go to scratch, summed by one block in a fixed order.
// Same maths as fused_losses/triton/softmax_focal.py.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "../launch_args.h"
#include "launch.cuh"
#include "math.cuh"
#include "rows.cuh"

namespace fused_losses {
namespace {

using device::load_float;
using device::store_float;
using Args = LaunchArgs<SoftmaxFocalOptions>;

// backward: grad_output given, gradient always written, no per-row outputs.
template <typename TIn, typename TT>
__global__ void __launch_bounds__(rows::kMaxThreads) _softmax_focal_fwd_kernel(
    const Args a, const rows::Scratch scratch, bool backward) {
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
      if (!backward && threadIdx.x == 0) {
        scratch.row_loss[r] = 0.f;
        scratch.row_weight[r] = 0.f;
      }
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
      scratch.row_weight[r] = w_y;
    }
    if (!want_grad) continue;
    float scale = backward ? load_float(static_cast<const TIn*>(a.grad_output) + r) : 1.f;
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

}  // namespace

int64_t cuda_workspace_bytes(const Args& a, Pass pass) {
  return rows::workspace_bytes(a, pass, true);
}

void cuda_run(const Args& a, Pass pass, void* stream) {
  rows::run(a, pass, "_softmax_focal_fwd_kernel", true, stream, [&](auto in, auto tt,
                                                                   const rows::Grid& g) {
    using TIn = typename decltype(in)::type;
    _softmax_focal_fwd_kernel<TIn, typename decltype(tt)::type>
        <<<g.blocks, g.threads, 0, g.stream>>>(a, g.scratch, g.backward);
  });
}

}  // namespace fused_losses

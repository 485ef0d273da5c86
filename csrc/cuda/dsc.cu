// Fused self-adjusting DSC on CUDA, on the row-softmax skeletons shared with
// softmax_focal.cu, gradient in the forward: DscRows on the warp-per-row
// kernels of rows_warp.cuh for C <= 2048 (maths in rows_math.cuh dsc_row), the
// block-per-row kernel of rows.cuh above. Rows weigh 1, so a mean's 1/N is
// known on the host and folded into the gradient (scale = 1). See
// csrc/cpu/dsc_kernel.h for the gradient's form.
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
using Args = LaunchArgs<DscOptions>;

// The warp kernels' loss (rows_warp.cuh).
struct DscRows {
  using Options = DscOptions;
  __device__ static bool keep(const Args&, int64_t) { return true; }
  __device__ static const float* alpha(const Args&) { return nullptr; }
  __device__ static rowmath::RowOut row(const Args& a, const rowmath::RowIn& in, float) {
    return rowmath::dsc_row(in, a.opt.alpha, a.opt.smooth);
  }
};

// The block kernel. grad_scale: the forward gradient's factor (1/rows for a mean).
template <typename TIn, typename TT>
__global__ void __launch_bounds__(rows::kMaxThreads) _dsc_fwd_kernel(
    const Args a, float* row_loss, float grad_scale, bool backward) {
  const TIn* x = static_cast<const TIn*>(a.input);
  const TT* t = static_cast<const TT*>(a.target);
  TIn* grad = static_cast<TIn*>(a.grad);
  const float alpha = a.opt.alpha, smooth = a.opt.smooth;
  const int64_t C = a.cols;
  const float nan = __int_as_float(0x7fc00000);
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const TIn* xr = x + r * C;
    const int64_t y_raw = static_cast<int64_t>(t[r]);
    const bool in_range = y_raw >= 0 && y_raw < C;
    const int64_t y = in_range ? y_raw : 0;
    const device::RowStats st = device::block_row_stats(xr, 1, C, y, nullptr, false);
    const float log_s = logf(st.s);
    const float p = expf(fminf(load_float(xr + y) - st.m - log_s, 0.f));
    const float log_q = logf(st.s_other) - log_s;
    const float q_a = alpha == 0.f ? 1.f : expf(alpha * log_q);
    const float p_t = q_a * p;
    const float den = p_t + 1.f + smooth;
    if (!backward && threadIdx.x == 0) {
      row_loss[r] = in_range ? 1.f - (2.f * p_t + smooth) / den : nan;
    }
    if (!(backward || a.write_grad)) continue;
    float scale = backward ? load_float(static_cast<const TIn*>(a.grad_output) + r) : grad_scale;
    if (!in_range) scale = nan;
    const float k = -(2.f + smooth) / (den * den) * p * q_a * (expf(log_q) - alpha * p) * scale;
    const device::RowCoefs c{0.f, -k, 0.f, k};
    device::block_row_grad(xr, grad + r * C, 1, C, y, st, c, nullptr, true);
  }
}

}  // namespace

int64_t cuda_workspace_bytes(const Args& a, Pass pass) {
  return rows::workspace_bytes(a, pass, false);
}

void cuda_run(const Args& a, Pass pass, void* stream) {
  // A mean over rows has a known divisor: the forward gradient takes it now.
  const float grad_scale = a.mean && a.rows ? 1.f / static_cast<float>(a.rows) : 1.f;
  rows::run(
      a, pass, "_dsc_fwd_kernel", false, stream, [](const rows::Scratch&, cudaStream_t) {},
      [&](auto in, auto tt, const rows::Grid& g) {
        using TIn = typename decltype(in)::type;
        using TT = typename decltype(tt)::type;
        if constexpr (std::is_void<TT>::value) {
          warp_rows::launch_rows<DscRows, TIn, false>(a, warp_rows::plan(a, g, grad_scale),
                                                      g.stream);
        } else {
          _dsc_fwd_kernel<TIn, TT><<<g.blocks, g.threads, 0, g.stream>>>(
              a, g.scratch.row_loss, grad_scale, g.backward);
        }
      });
}

}  // namespace fused_losses

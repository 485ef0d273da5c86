// Fused self-adjusting DSC on CUDA: one block per row on the row-softmax
// helpers of math.cuh (the same machinery as softmax_focal.cu), gradient in
// the forward. See csrc/cpu/dsc_kernel.h for the gradient's form.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../dsc_args.h"
#include "dispatch.cuh"
#include "math.cuh"

namespace fused_losses {
namespace {

using device::load_float;
using launch::check_launch;
using launch::dispatch_input;

constexpr const char* kLoss = "dsc";
constexpr int kMaxThreads = 256;
constexpr int64_t kMaxGrid = 1 << 20;

template <typename TIn, typename TT>
__global__ void __launch_bounds__(kMaxThreads) _dsc_fwd_kernel(const DscArgs a, bool backward) {
  const TIn* x = static_cast<const TIn*>(a.input);
  const TT* t = static_cast<const TT*>(a.target);
  TIn* grad = static_cast<TIn*>(a.grad);
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
    const float q_a = a.alpha == 0.f ? 1.f : expf(a.alpha * log_q);
    const float p_t = q_a * p;
    const float den = p_t + 1.f + a.smooth;
    if (!backward && threadIdx.x == 0) {
      a.row_loss[r] = in_range ? 1.f - (2.f * p_t + a.smooth) / den : nan;
    }
    if (!(backward || a.write_grad)) continue;
    float scale = backward ? load_float(static_cast<const TIn*>(a.grad_output) + r) : a.grad_scale;
    if (!in_range) scale = nan;
    const float k = -(2.f + a.smooth) / (den * den) * p * q_a * (expf(log_q) - a.alpha * p) * scale;
    const device::RowCoefs c{0.f, -k, 0.f, k};
    device::block_row_grad(xr, grad + r * C, 1, C, y, st, c, nullptr, true);
  }
}

void require(bool ok, const char* message) {
  if (!ok) throw std::invalid_argument(std::string("fused_losses: dsc CUDA: ") + message);
}

void launch_rows(const DscArgs& a, bool backward, cudaStream_t s) {
  if (a.rows == 0) return;
  require(a.cols >= 1, "cols must be >= 1");
  require(a.input != nullptr && a.target != nullptr, "input and target must be set");
  require(!(backward || a.write_grad) || a.grad != nullptr, "grad must be set");
  require(backward || a.row_loss != nullptr, "row scratch must be set");
  const int threads = a.cols <= 512 ? 128 : kMaxThreads;
  const auto grid = static_cast<unsigned>(std::min<int64_t>(a.rows, kMaxGrid));
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    launch::dispatch<uint8_t, int8_t, int16_t, int32_t, int64_t>(
        a.target_dtype, kLoss, "target", [&](auto t_tag) {
          using TT = typename decltype(t_tag)::type;
          _dsc_fwd_kernel<TIn, TT><<<grid, threads, 0, s>>>(a, backward);
        });
  });
  check_launch("_dsc_fwd_kernel");
}

}  // namespace

void dsc_cuda_forward(const DscArgs& a, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  launch_rows(a, false, s);
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    if (!a.reduce) {
      if (a.rows > 0) {
        device::copy_rows_kernel<TIn><<<static_cast<unsigned>(std::min<int64_t>(
            (a.rows + 255) / 256, kMaxGrid)), 256, 0, s>>>(a.row_loss, static_cast<TIn*>(a.out), a.rows);
        check_launch("copy_rows_kernel");
      }
      return;
    }
    require(a.out != nullptr && a.scale != nullptr, "out and scale must be set");
    device::sum_rows_kernel<TIn><<<1, kMaxThreads, 0, s>>>(
        a.row_loss, nullptr, a.rows, static_cast<TIn*>(a.out), a.scale, a.mean);
    check_launch("sum_rows_kernel");
  });
}

void dsc_cuda_backward(const DscArgs& a, void* stream) {
  require(a.rows == 0 || a.grad_output != nullptr, "grad_output must be set");
  launch_rows(a, true, static_cast<cudaStream_t>(stream));
}

}  // namespace fused_losses

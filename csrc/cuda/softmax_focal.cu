// Fused softmax focal loss on CUDA: kernels and their launchers.
//
// One block per row (grid-stride over rows): block_row_stats (math.cuh) gives
// the max, sum-exp and sum-exp without the target class in one read of the
// row; the row loss follows, and a second read writes the gradient when one is
// needed (mean/sum forward) or the gradient times grad_output[row] (none
// backward). Per-row losses and α_y go to scratch, summed by one block in a
// fixed order. Same maths as fused_losses/triton/softmax_focal.py.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../softmax_focal_args.h"
#include "dispatch.cuh"
#include "math.cuh"

namespace fused_losses {
namespace {

using device::load_float;
using device::store_float;
using launch::check_launch;
using launch::dispatch_input;

constexpr const char* kLoss = "softmax_focal";
constexpr int kMaxThreads = 256;
constexpr int64_t kMaxGrid = 1 << 20;

template <typename F>
void dispatch_index(DType dtype, F&& f) {
  launch::dispatch<uint8_t, int8_t, int16_t, int32_t, int64_t>(dtype, kLoss, "target", f);
}

// backward: grad_output given, gradient always written, no per-row outputs.
template <typename TIn, typename TT>
__global__ void __launch_bounds__(kMaxThreads) _softmax_focal_fwd_kernel(
    const SoftmaxFocalArgs a, bool backward) {
  const TIn* x = static_cast<const TIn*>(a.input);
  const TT* t = static_cast<const TT*>(a.target);
  TIn* grad = static_cast<TIn*>(a.grad);
  const int64_t C = a.cols, D = a.spatial;
  const bool want_grad = backward || a.write_grad;
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const int64_t n = r / D;
    const int64_t base = n * C * D + (r - n * D);
    const int64_t y_raw = static_cast<int64_t>(t[r]);
    const bool keep = !(a.has_ignore && y_raw == a.ignore_index);
    const bool in_range = y_raw >= 0 && y_raw < C;
    const int64_t y = in_range ? y_raw : 0;  // never index outside the row
    if (!keep) {  // block-uniform: the whole block skips the row's maths
      if (want_grad) {
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) store_float(grad + base + c * D, 0.f);
      }
      if (!backward && threadIdx.x == 0) {
        a.row_loss[r] = 0.f;
        a.row_weight[r] = 0.f;
      }
      continue;
    }
    const bool smooth = a.smoothing != 0.f;
    const device::RowStats st = device::block_row_stats(x + base, D, C, y, a.alpha, smooth);
    const float log_s = logf(st.s);
    const float lse = st.m + log_s;
    const float log_py = fminf(load_float(x + base + y * D) - lse, 0.f);
    const float w_y = a.alpha != nullptr ? __ldg(a.alpha + y) : 1.f;
    const float n_cls = static_cast<float>(C);
    float ce = -w_y * log_py;
    if (smooth) ce = (1.f - a.smoothing) * ce + a.smoothing / n_cls * (st.a_sum * lse - st.ax);
    const float f = a.gamma == 0.f ? 1.f : expf(a.gamma * (logf(st.s_other) - log_s));
    if (!backward && threadIdx.x == 0) {
      a.row_loss[r] = in_range ? f * ce : __int_as_float(0x7fc00000);
      a.row_weight[r] = w_y;
    }
    if (!want_grad) continue;
    float scale = backward ? load_float(static_cast<const TIn*>(a.grad_output) + r) : 1.f;
    if (!in_range) scale = __int_as_float(0x7fc00000);
    const float big_g = a.gamma == 0.f ? 0.f : a.gamma * f * expf(log_py) * ce;
    device::RowCoefs k;
    k.c_p = f * (1.f - a.smoothing) * w_y;
    k.c_a = 0.f;
    if (smooth) {
      k.c_p += f * a.smoothing * st.a_sum / n_cls;
      k.c_a = f * a.smoothing / n_cls;
    }
    k.c_y = -(f * (1.f - a.smoothing) * w_y + big_g) * scale;
    k.c_p *= scale;
    k.c_a *= scale;
    k.c_r = big_g * scale;
    device::block_row_grad(x + base, grad + base, D, C, y, st, k, a.alpha, true);
  }
}

void require(bool ok, const char* message) {
  if (!ok) throw std::invalid_argument(std::string("fused_losses: softmax_focal CUDA: ") + message);
}

void launch_rows(const SoftmaxFocalArgs& a, bool backward, cudaStream_t s) {
  if (a.rows == 0) return;
  require(a.cols >= 1 && a.spatial >= 1, "cols and spatial must be >= 1");
  require(a.input != nullptr && a.target != nullptr, "input and target must be set");
  require(!(backward || a.write_grad) || a.grad != nullptr, "grad must be set");
  require(backward || (a.row_loss != nullptr && a.row_weight != nullptr), "row scratch must be set");
  const int threads = a.cols <= 512 ? 128 : kMaxThreads;
  const auto grid = static_cast<unsigned>(std::min<int64_t>(a.rows, kMaxGrid));
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    dispatch_index(a.target_dtype, [&](auto t_tag) {
      using TT = typename decltype(t_tag)::type;
      _softmax_focal_fwd_kernel<TIn, TT><<<grid, threads, 0, s>>>(a, backward);
    });
  });
  check_launch("_softmax_focal_fwd_kernel");
}

}  // namespace

void softmax_focal_cuda_forward(const SoftmaxFocalArgs& a, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  launch_rows(a, false, s);
  if (!a.reduce) {  // per-row losses to the output dtype
    dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
      using TIn = typename decltype(in_tag)::type;
      if (a.rows > 0) {
        device::copy_rows_kernel<TIn><<<static_cast<unsigned>(std::min<int64_t>(
            (a.rows + 255) / 256, kMaxGrid)), 256, 0, s>>>(a.row_loss, static_cast<TIn*>(a.out), a.rows);
        check_launch("copy_rows_kernel");
      }
    });
    return;
  }
  require(a.out != nullptr && a.scale != nullptr, "out and scale must be set");
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    device::sum_rows_kernel<TIn><<<1, kMaxThreads, 0, s>>>(
        a.row_loss, a.row_weight, a.rows, static_cast<TIn*>(a.out), a.scale, a.mean);
    check_launch("sum_rows_kernel");
  });
}

void softmax_focal_cuda_backward(const SoftmaxFocalArgs& a, void* stream) {
  require(a.rows == 0 || a.grad_output != nullptr, "grad_output must be set");
  launch_rows(a, true, static_cast<cudaStream_t>(stream));
}

}  // namespace fused_losses

// Fused multilabel soft dice on CUDA: kernels and their launchers.
//
// The same maths as fused_losses/triton/dice.py (formula in csrc/dice_args.h).
// Logits are [R, C] columns with R = N·S rows ((n, s) pairs for [N, C, S]).
// Forward, a deterministic column reduction:
//   1. _dice_fwd_kernel, grid (row ranges, column groups): each thread sums
//      p̃·t, p̃ᵏ, tᵏ of its column over a strided subset of the block's rows;
//      the block folds its row lanes in a fixed order into one partial per column;
//   2. _dice_finish_kernel: per column, the partials in row-range order give the
//      sums [3, C] and dice_c;
//   3. _dice_total_kernel (mean/sum): one block sums dice_c in a fixed order.
// Backward, _dice_bwd_kernel on the same grid: each thread forms its column's
// coefficients once and writes d loss/dx for its rows. No atomics anywhere.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../dice_args.h"
#include "dispatch.cuh"
#include "math.cuh"

namespace fused_losses {
namespace {

using device::block_sum;
using device::load_float;
using device::store_float;
using launch::check_launch;
using launch::dispatch_input;
using launch::dispatch_target;

constexpr const char* kLoss = "dice";  // names the kernel in errors

constexpr int kBlock = 256;
// [N, C]: a warp reads 32 consecutive columns of one row (coalesced); spatial
// [N, C, S]: a block owns one class and its threads walk along s.
constexpr int kColTile = 32;
// A constant, not a multiple of the SM count, so the partition (and with it
// the summation order and the result's bits) depends on the shape alone.
constexpr int64_t kMaxRowBlocks = 512;
static_assert(kBlock % kColTile == 0 && kBlock % device::kWarpSize == 0, "whole warps");

struct Params {
  const void* input;
  const void* target;
  int64_t rows, cols, inner;  // R = N·S, C, S
  int64_t rows_per_block;
  int64_t n_row_blocks;
  float smooth, alpha;
  bool alpha_zero, square;
  float* partials;            // [3][n_row_blocks][C]
  const float* sums;          // backward: [3][C]
  const float* grad_output;
  int64_t grad_output_stride;
  float grad_output_scale;
  void* grad;
};

template <bool kSpatial>
struct Tiling {
  static constexpr int kCols = kSpatial ? 1 : kColTile;
  static constexpr int kRowLanes = kBlock / kCols;
};

// Flat index of row r (an (n, s) pair when spatial) in column c.
template <bool kSpatial>
__device__ __forceinline__ int64_t element_index(const Params& p, int64_t r, int64_t c) {
  if (!kSpatial) return r * p.cols + c;
  const int64_t n = r / p.inner;
  return (n * p.cols + c) * p.inner + (r - n * p.inner);
}

// body(i, pt, pk, tk, dpt, t) for each of this thread's rows in column c.
template <typename TIn, typename TT, bool kSpatial, typename Body>
__device__ __forceinline__ void for_each_row(const Params& p, int64_t c, Body&& body) {
  const int lane_r = threadIdx.x / Tiling<kSpatial>::kCols;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * p.rows_per_block;
  const int64_t end = begin + p.rows_per_block < p.rows ? begin + p.rows_per_block : p.rows;
  for (int64_t r = begin + lane_r; r < end; r += Tiling<kSpatial>::kRowLanes) {
    const int64_t i = element_index<kSpatial>(p, r, c);
    const float x = load_float(static_cast<const TIn*>(p.input) + i);
    const float t = load_float(static_cast<const TT*>(p.target) + i);
    float pt, dpt;
    device::adjusted_sigmoid(x, p.alpha, p.alpha_zero, &pt, &dpt);
    body(i, pt, p.square ? pt * pt : pt, p.square ? t * t : t, dpt, t);
  }
}

template <bool kSpatial>
__device__ __forceinline__ int64_t thread_column() {
  return static_cast<int64_t>(blockIdx.y) * Tiling<kSpatial>::kCols +
         threadIdx.x % Tiling<kSpatial>::kCols;
}

template <typename TIn, typename TT, bool kSpatial>
__global__ void __launch_bounds__(kBlock) _dice_fwd_kernel(const Params p) {
  const int64_t c = thread_column<kSpatial>();
  float s_pt = 0.f, s_p = 0.f, s_t = 0.f;
  if (c < p.cols) {
    for_each_row<TIn, TT, kSpatial>(p, c, [&](int64_t, float pt, float pk, float tk, float,
                                              float t) {
      s_pt += pt * t;
      s_p += pk;
      s_t += tk;
    });
  }
  float* const out = p.partials + blockIdx.x * p.cols;
  const int64_t stride = p.n_row_blocks * p.cols;
  if constexpr (kSpatial) {  // one column per block: a block-wide tree
    s_pt = block_sum(s_pt);
    s_p = block_sum(s_p);
    s_t = block_sum(s_t);
    if (threadIdx.x == 0 && c < p.cols) {
      out[c] = s_pt;
      out[stride + c] = s_p;
      out[2 * stride + c] = s_t;
    }
    return;
  }
  // kColTile columns per block: fold the row lanes of each column in lane order.
  __shared__ float folded[3][kBlock];
  folded[0][threadIdx.x] = s_pt;
  folded[1][threadIdx.x] = s_p;
  folded[2][threadIdx.x] = s_t;
  __syncthreads();
  if (threadIdx.x >= kColTile || c >= p.cols) return;
  float acc[3] = {0.f, 0.f, 0.f};
  for (int k = 0; k < Tiling<kSpatial>::kRowLanes; ++k)
    for (int q = 0; q < 3; ++q) acc[q] += folded[q][k * kColTile + threadIdx.x];
  for (int q = 0; q < 3; ++q) out[q * stride + c] = acc[q];
}

// One thread per column: sums in row-range order, dice_c to `dice` (fp32
// scratch) or straight to the [C] output of reduction="none".
template <typename TIn>
__global__ void __launch_bounds__(kBlock) _dice_finish_kernel(
    const float* partials, int64_t n_row_blocks, int64_t cols, float smooth, float* sums,
    float* dice, TIn* out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int64_t stride = n_row_blocks * cols;
  float s[3] = {0.f, 0.f, 0.f};
  for (int64_t r = 0; r < n_row_blocks; ++r)
    for (int q = 0; q < 3; ++q) s[q] += partials[q * stride + r * cols + c];
  for (int q = 0; q < 3; ++q) sums[q * cols + c] = s[q];
  const float value = 1.f - (2.f * s[0] + smooth) / (s[1] + s[2] + smooth);
  if (out != nullptr) {
    store_float(out + c, value);
  } else {
    dice[c] = value;
  }
}

// out = Σ_c dice_c (÷ C for a mean; C = 0 gives 0/0 = NaN, as torch's mean).
template <typename TOut>
__global__ void __launch_bounds__(kBlock) _dice_total_kernel(const float* dice, int64_t cols,
                                                             bool mean, TOut* out) {
  float total = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) total += dice[c];
  total = block_sum(total);
  if (threadIdx.x == 0) store_float(out, mean ? total / static_cast<float>(cols) : total);
}

// d loss/dx = g_c·(-2t/den + k·num·p̃^(k-1)/den²)·d p̃/dx, with the column's
// coefficients formed once per thread.
template <typename TIn, typename TT, bool kSpatial>
__global__ void __launch_bounds__(kBlock) _dice_bwd_kernel(const Params p) {
  const int64_t c = thread_column<kSpatial>();
  if (c >= p.cols) return;
  const float g = p.grad_output[c * p.grad_output_stride] * p.grad_output_scale;
  const float num = 2.f * p.sums[c] + p.smooth;
  const float den = p.sums[p.cols + c] + p.sums[2 * p.cols + c] + p.smooth;
  const float coef_t = -2.f * g / den;
  const float coef_p = (p.square ? 2.f : 1.f) * g * num / (den * den);
  TIn* const grad = static_cast<TIn*>(p.grad);
  for_each_row<TIn, TT, kSpatial>(p, c, [&](int64_t i, float pt, float, float, float dpt,
                                            float t) {
    store_float(grad + i, (coef_t * t + (p.square ? coef_p * pt : coef_p)) * dpt);
  });
}

// ---------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------

void require(bool ok, const char* message) {
  if (!ok) throw std::invalid_argument(std::string("fused_losses: dice CUDA: ") + message);
}

Params make_params(const DiceArgs& a) {
  require(a.rows >= 0 && a.cols >= 0 && a.inner >= 0, "sizes must be >= 0");
  Params p{};
  p.input = a.input;
  p.target = a.target;
  p.rows = a.rows * a.inner;
  p.cols = a.cols;
  p.inner = std::max<int64_t>(a.inner, 1);
  p.n_row_blocks = dice_cuda_num_partials(p.rows);
  p.rows_per_block = p.n_row_blocks ? (p.rows + p.n_row_blocks - 1) / p.n_row_blocks : 0;
  p.smooth = a.smooth;
  p.alpha = a.alpha;
  p.alpha_zero = a.alpha == 0.f;
  p.square = a.square;
  p.partials = a.partials;
  p.sums = a.sums;
  p.grad_output = a.grad_output;
  p.grad_output_stride = a.grad_output_stride;
  p.grad_output_scale = a.grad_output_scale;
  p.grad = a.grad;
  return p;
}

// The (row ranges, column groups) grid of the forward and backward kernels.
dim3 grid_of(const Params& p, bool spatial) {
  const int64_t groups = spatial ? p.cols : (p.cols + kColTile - 1) / kColTile;
  require(groups <= 65535, "too many classes for one launch (C must be <= 65535 when spatial)");
  return dim3(static_cast<unsigned>(p.n_row_blocks), static_cast<unsigned>(groups));
}

}  // namespace

int64_t dice_cuda_num_partials(int64_t rows) {
  if (rows <= 0) return 0;
  return std::min<int64_t>((rows + kBlock - 1) / kBlock, kMaxRowBlocks);
}

void dice_cuda_forward(const DiceArgs& a, void* stream) {
  const Params p = make_params(a);
  // With no classes, sums [3, 0] and an unreduced out [0] own no memory.
  require(a.cols == 0 || (a.sums != nullptr && a.out != nullptr), "sums and out must be set");
  require(!a.reduce || a.out != nullptr, "out must be set for a reduction");
  require(p.n_row_blocks == 0 || a.cols == 0 || a.partials != nullptr, "partials must be set");
  require(!a.reduce || a.cols == 0 || a.dice != nullptr, "dice scratch must be set");
  const auto s = static_cast<cudaStream_t>(stream);
  if (p.n_row_blocks > 0 && p.cols > 0) {
    const dim3 grid = grid_of(p, a.inner != 1);
    dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
      using TIn = typename decltype(in_tag)::type;
      dispatch_target(a.target_dtype, kLoss, [&](auto target_tag) {
        using TT = typename decltype(target_tag)::type;
        if (a.inner != 1) {
          _dice_fwd_kernel<TIn, TT, true><<<grid, kBlock, 0, s>>>(p);
        } else {
          _dice_fwd_kernel<TIn, TT, false><<<grid, kBlock, 0, s>>>(p);
        }
      });
    });
    check_launch("_dice_fwd_kernel");
  }
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    if (a.cols > 0) {
      const auto blocks = static_cast<unsigned>((a.cols + kBlock - 1) / kBlock);
      _dice_finish_kernel<TIn><<<blocks, kBlock, 0, s>>>(
          a.partials, p.n_row_blocks, a.cols, a.smooth, a.sums, a.dice,
          a.reduce ? nullptr : static_cast<TIn*>(a.out));
      check_launch("_dice_finish_kernel");
    }
    if (a.reduce) {
      _dice_total_kernel<TIn><<<1, kBlock, 0, s>>>(a.dice, a.cols, a.mean,
                                                   static_cast<TIn*>(a.out));
      check_launch("_dice_total_kernel");
    }
  });
}

void dice_cuda_backward(const DiceArgs& a, void* stream) {
  const Params p = make_params(a);
  if (p.n_row_blocks == 0 || p.cols == 0) return;
  require(a.sums != nullptr && a.grad_output != nullptr && a.grad != nullptr,
          "sums, grad_output and grad must be set");
  const auto s = static_cast<cudaStream_t>(stream);
  const dim3 grid = grid_of(p, a.inner != 1);
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    dispatch_target(a.target_dtype, kLoss, [&](auto target_tag) {
      using TT = typename decltype(target_tag)::type;
      if (a.inner != 1) {
        _dice_bwd_kernel<TIn, TT, true><<<grid, kBlock, 0, s>>>(p);
      } else {
        _dice_bwd_kernel<TIn, TT, false><<<grid, kBlock, 0, s>>>(p);
      }
    });
  });
  check_launch("_dice_bwd_kernel");
}

}  // namespace fused_losses

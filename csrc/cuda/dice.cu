// Fused multilabel soft dice on CUDA: kernels and their launchers.
//
// The same maths as fused_losses/triton/dice.py (formula in
// csrc/cpu/dice_kernel.h). Logits are [R, C] columns with R = N·S rows ((n, s)
// pairs for [N, C, S]; LaunchArgs rows = R, inner = S).
// Forward, a deterministic column reduction:
//   1. _dice_fwd_kernel, grid (row ranges, column groups): each thread sums
//      p̃·t, p̃ᵏ, tᵏ of its column over a strided subset of the block's rows;
//      the block folds its row lanes in a fixed order into one partial per column;
//   2. _dice_finish_kernel: per column, the partials in row-range order give the
//      sums [3, C] and dice_c;
//   3. sum_partials_kernel (mean/sum): one block sums dice_c in a fixed order.
// Backward: [N, C] is elementwise: _dice_coef_kernel writes each column's
// coefficients to a [C + 8] table once, then _dice_bwd_flat_kernel walks fixed
// chunks (walk.cuh: 128-bit vectors, int32 columns) and writes d loss/dx.
// Spatial [N, C, S]: _dice_bwd_kernel on the forward's grid. No atomics anywhere.
// Per-element maths (fast ex2/rcp, host-tested): dice.cuh.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "../launch_args.h"
#include "dice.cuh"
#include "elementwise.cuh"
#include "launch.cuh"
#include "math.cuh"
#include "walk.cuh"

namespace fused_losses {
namespace {

using DiceArgs = LaunchArgs<DiceOptions>;

constexpr const char* kLoss = Stem<DiceOptions>::value;

constexpr int kBlock = 256;
// [N, C]: a warp reads 32 consecutive columns of one row (coalesced); spatial
// [N, C, S]: a block owns one class and its threads walk along s.
constexpr int kColTile = 32;
// A constant, not a multiple of the SM count, so the partition (and with it
// the summation order and the result's bits) depends on the shape alone.
constexpr int64_t kMaxRowBlocks = 512;
static_assert(kBlock % kColTile == 0 && kBlock % device::kWarpSize == 0, "whole warps");

// What a launch derives from its arguments once, on the host: the row
// partition, the options' special cases and the forward's scratch.
struct Plan {
  int64_t n_row_blocks;
  int64_t rows_per_block;
  bool alpha_zero;
  int64_t grad_output_stride;  // backward: grad_output is [] (0) or [C] (1)
  float grad_output_scale;     // backward: 1/C for a mean
  float* partials;             // forward: [3][n_row_blocks][C]
  float* dice;                 // forward with a reduction: dice_c, [C]
  float2* table;               // backward of [N, C]: per-column coefficients, [C + 8]
};

Plan plan_of(launch::Workspace& w, const DiceArgs& a, Pass pass) {
  Plan p{};
  p.n_row_blocks = launch::grid_blocks(a.rows, kBlock, kMaxRowBlocks);
  p.rows_per_block = p.n_row_blocks ? (a.rows + p.n_row_blocks - 1) / p.n_row_blocks : 0;
  p.alpha_zero = a.opt.alpha == 0.f;
  p.grad_output_stride = a.reduce ? 0 : 1;
  p.grad_output_scale = (a.mean && a.cols) ? 1.f / static_cast<float>(a.cols) : 1.f;
  if (pass == Pass::Forward) {
    p.partials = w.take<float>(p.n_row_blocks * 3 * a.cols);
    if (a.reduce) p.dice = w.take<float>(a.cols);
  } else if (a.inner == 1 && a.cols > 0) {
    p.table = w.take<float2>(a.cols + 8);
  }
  return p;
}

template <bool kSpatial>
struct Tiling {
  static constexpr int kCols = kSpatial ? 1 : kColTile;
  static constexpr int kRowLanes = kBlock / kCols;
};

// Flat index of row r (an (n, s) pair when spatial) in column c.
template <bool kSpatial>
__device__ __forceinline__ int64_t element_index(const DiceArgs& a, int64_t r, int64_t c) {
  if (!kSpatial) return r * a.cols + c;
  const int64_t n = r / a.inner;
  return (n * a.cols + c) * a.inner + (r - n * a.inner);
}

// body(i, pt, pk, tk, dpt, t) for each of this thread's rows in column c.
template <typename TIn, typename TT, bool kSpatial, typename Body>
__device__ __forceinline__ void for_each_row(const DiceArgs& a, const Plan& p, int64_t c,
                                             Body&& body) {
  const bool square = a.opt.square_denominator;
  const int lane_r = threadIdx.x / Tiling<kSpatial>::kCols;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * p.rows_per_block;
  const int64_t end = begin + p.rows_per_block < a.rows ? begin + p.rows_per_block : a.rows;
  for (int64_t r = begin + lane_r; r < end; r += Tiling<kSpatial>::kRowLanes) {
    const int64_t i = element_index<kSpatial>(a, r, c);
    const float x = device::load_float(static_cast<const TIn*>(a.input) + i);
    const float t = device::load_float(static_cast<const TT*>(a.target) + i);
    const dice::Adjusted d = p.alpha_zero ? dice::adjusted<true>(x, 0.f)
                                          : dice::adjusted<false>(x, a.opt.alpha);
    body(i, d.pt, square ? d.pt * d.pt : d.pt, square ? t * t : t, d.dpt, t);
  }
}

template <bool kSpatial>
__device__ __forceinline__ int64_t thread_column() {
  return static_cast<int64_t>(blockIdx.y) * Tiling<kSpatial>::kCols +
         threadIdx.x % Tiling<kSpatial>::kCols;
}

template <typename TIn, typename TT, bool kSpatial>
__global__ void __launch_bounds__(kBlock) _dice_fwd_kernel(const DiceArgs a, const Plan p) {
  const int64_t c = thread_column<kSpatial>();
  float s_pt = 0.f, s_p = 0.f, s_t = 0.f;
  if (c < a.cols) {
    for_each_row<TIn, TT, kSpatial>(a, p, c, [&](int64_t, float pt, float pk, float tk, float,
                                                 float t) {
      s_pt += pt * t;
      s_p += pk;
      s_t += tk;
    });
  }
  float* const out = p.partials + blockIdx.x * a.cols;
  const int64_t stride = p.n_row_blocks * a.cols;
  if constexpr (kSpatial) {  // one column per block: a block-wide tree
    s_pt = device::block_sum(s_pt);
    s_p = device::block_sum(s_p);
    s_t = device::block_sum(s_t);
    if (threadIdx.x == 0 && c < a.cols) {
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
  if (threadIdx.x >= kColTile || c >= a.cols) return;
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
    device::store_float(out + c, value);
  } else {
    dice[c] = value;
  }
}

// Spatial backward: d loss/dx = (coef_t·t + coef_p·p̃^(k-1))·d p̃/dx with the
// column's coefficients (dice.cuh) formed once per thread.
template <typename TIn, typename TT, bool kSpatial>
__global__ void __launch_bounds__(kBlock) _dice_bwd_kernel(const DiceArgs a, const Plan p) {
  const int64_t c = thread_column<kSpatial>();
  if (c >= a.cols) return;
  const float* const sums = a.aux;
  const bool square = a.opt.square_denominator;
  const float g = static_cast<const float*>(a.grad_output)[c * p.grad_output_stride] *
                  p.grad_output_scale;
  const float2 k = dice::coef(sums[c], sums[a.cols + c], sums[2 * a.cols + c], a.opt.smooth, g,
                              square);
  TIn* const grad = static_cast<TIn*>(a.grad);
  for_each_row<TIn, TT, kSpatial>(a, p, c, [&](int64_t i, float pt, float, float, float dpt,
                                               float t) {
    device::store_float(grad + i, dice::grad(k, t, dice::Adjusted{pt, dpt}, square));
  });
}

// table[j] = the coefficients of column j mod C, j < C + 8: a vector starting
// at any column < C reads on without wrapping (as elementwise.cuh's table).
__global__ void __launch_bounds__(kBlock) _dice_coef_kernel(const DiceArgs a, const Plan p) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  if (j >= a.cols + 8) return;
  const int64_t c = j % a.cols;
  const float* const sums = a.aux;
  const float g = static_cast<const float*>(a.grad_output)[c * p.grad_output_stride] *
                  p.grad_output_scale;
  p.table[j] = dice::coef(sums[c], sums[a.cols + c], sums[2 * a.cols + c], a.opt.smooth, g,
                          a.opt.square_denominator);
}

// [N, C] backward: the chunk walk of the elementwise skeleton, V-element
// vectors, one table read per element by int32 column.
template <typename TIn, typename TT, bool kAlphaZero, int V>
__global__ void __launch_bounds__(elementwise::kBlock) _dice_bwd_flat_kernel(
    const DiceArgs a, const Plan p, const elementwise::Walk w) {
  using elementwise::Pack;
  using elementwise::load_pack;
  using elementwise::Pos;
  constexpr int kSub = elementwise::kBlock * V;
  const TIn* __restrict__ xp = static_cast<const TIn*>(a.input);
  const TT* __restrict__ tp = static_cast<const TT*>(a.target);
  TIn* __restrict__ gp = static_cast<TIn*>(a.grad);
  const float2* __restrict__ table = p.table;
  const bool square = a.opt.square_denominator;
  const float alpha = a.opt.alpha;
  const int32_t cols = w.cols;
  const int32_t sub_c = kSub % cols;
  Pos start = elementwise::pos_of(static_cast<int64_t>(blockIdx.x) * elementwise::kChunk, cols);
  const Pos step =
      elementwise::pos_of(static_cast<int64_t>(gridDim.x) * elementwise::kChunk, cols);
  auto one = [&](float x, float t, int32_t col) {
    return dice::grad(table[col], t, dice::adjusted<kAlphaZero>(x, alpha), square);
  };
  for (int64_t chunk = blockIdx.x; chunk < w.n_chunks; chunk += gridDim.x) {
    elementwise::walk_chunk<V, 1, true>(
        w, chunk, threadIdx.x, start, sub_c, sub_c,
        [&](int64_t i0, int32_t, const int32_t(&cs)[1]) {
          const Pack<TIn, V> xv = load_pack<TIn, V>(xp + i0);
          const Pack<TT, V> tv = load_pack<TT, V>(tp + i0);
          Pack<TIn, V> gv;
#pragma unroll
          for (int k = 0; k < V; ++k) {
            gv.v[k] = device::from_float<TIn>(
                one(device::to_float(xv.v[k]), device::to_float(tv.v[k]), cs[0] + k));
          }
          *reinterpret_cast<Pack<TIn, V>*>(gp + i0) = gv;
        },
        [&](int64_t i, int32_t, int32_t col) {
          device::store_float(gp + i, one(device::load_float(xp + i), device::load_float(tp + i),
                                          col));
        });
    start = elementwise::pos_add(start, step, cols);
  }
}

// ---------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------

// The (row ranges, column groups) grid of the forward and backward kernels.
dim3 grid_of(const DiceArgs& a, const Plan& p) {
  const int64_t groups = a.inner != 1 ? a.cols : (a.cols + kColTile - 1) / kColTile;
  launch::require(groups <= 65535, kLoss,
          "too many classes for one launch (C must be <= 65535 when spatial)");
  return dim3(static_cast<unsigned>(p.n_row_blocks), static_cast<unsigned>(groups));
}

// Launches kernel<TIn, TT, kSpatial> (the forward's or the backward's) on the
// (row ranges, column groups) grid: launch(Tag<TIn>, Tag<TT>, spatial tag, grid).
template <typename Launch>
void launch_columns(const DiceArgs& a, const Plan& p, const char* kernel, Launch&& launch) {
  const dim3 grid = grid_of(a, p);
  launch::dispatch_pair(a, kLoss, [&](auto in_tag, auto target_tag) {
    if (a.inner != 1) {
      launch(in_tag, target_tag, std::true_type{}, grid);
    } else {
      launch(in_tag, target_tag, std::false_type{}, grid);
    }
  });
  launch::check_launch(kernel);
}

void forward(const DiceArgs& a, const Plan& p, cudaStream_t s) {
  // With no classes, sums [3, 0] and an unreduced out [0] own no memory.
  launch::require(a.cols == 0 || (a.aux != nullptr && a.out != nullptr), kLoss,
          "sums (aux) and out must be set");
  launch::require(!a.reduce || a.out != nullptr, kLoss, "out must be set for a reduction");
  launch::require(p.n_row_blocks == 0 || a.cols == 0 || p.partials != nullptr, kLoss,
          "the workspace must be set");
  if (p.n_row_blocks > 0 && a.cols > 0) {
    launch_columns(a, p, "_dice_fwd_kernel", [&](auto in_tag, auto t_tag, auto spatial,
                                                 dim3 grid) {
      using TIn = typename decltype(in_tag)::type;
      using TT = typename decltype(t_tag)::type;
      _dice_fwd_kernel<TIn, TT, decltype(spatial)::value><<<grid, kBlock, 0, s>>>(a, p);
    });
  }
  launch::dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    if (a.cols > 0) {
      const auto blocks = static_cast<unsigned>((a.cols + kBlock - 1) / kBlock);
      _dice_finish_kernel<TIn><<<blocks, kBlock, 0, s>>>(
          p.partials, p.n_row_blocks, a.cols, a.opt.smooth, a.aux, p.dice,
          a.reduce ? nullptr : static_cast<TIn*>(a.out));
      launch::check_launch("_dice_finish_kernel");
    }
    if (a.reduce) {  // C = 0 gives 0/0 = NaN for a mean, as torch's mean
      device::sum_partials_kernel<TIn><<<1, kBlock, 0, s>>>(
          p.dice, nullptr, a.cols, a.cols, static_cast<TIn*>(a.out), nullptr, a.mean, false);
      launch::check_launch("sum_partials_kernel");
    }
  });
}

// [N, C]: the coefficient table, then the flat walk.
void backward_flat(const DiceArgs& a, const Plan& p, cudaStream_t s) {
  launch::require(p.table != nullptr, kLoss, "the workspace must be set");
  launch::require(a.cols < (int64_t{1} << 30), kLoss, "C must be < 2^30");
  const auto blocks = static_cast<unsigned>((a.cols + 8 + kBlock - 1) / kBlock);
  _dice_coef_kernel<<<blocks, kBlock, 0, s>>>(a, p);
  launch::check_launch("_dice_coef_kernel");
  elementwise::Walk w;
  w.numel = a.numel;
  w.n_chunks = elementwise::n_chunks(a.numel);
  w.cols = static_cast<int32_t>(a.cols);
  launch::dispatch_pair(a, kLoss, [&](auto in_tag, auto t_tag) {
    using TIn = typename decltype(in_tag)::type;
    using TT = typename decltype(t_tag)::type;
    // 16-byte logits vectors for the common target types, scalars otherwise.
    constexpr bool kCommon = std::is_same<TT, uint8_t>::value || std::is_same<TT, float>::value;
    constexpr int V = kCommon ? 16 / static_cast<int>(sizeof(TIn)) : 1;
    auto ok = [](const void* ptr, int size) {
      const int align = V * size < 16 ? V * size : 16;
      return reinterpret_cast<uintptr_t>(ptr) % align == 0;
    };
    elementwise::Walk wv = w;
    wv.vector = V > 1 && ok(a.input, sizeof(TIn)) && ok(a.target, sizeof(TT)) &&
                ok(a.grad, sizeof(TIn));
    auto go = [&](auto kernel_tag) {
      constexpr auto kernel = decltype(kernel_tag)::value;
      const auto grid =
          static_cast<unsigned>(launch::wave_grid<kernel>(w.n_chunks, elementwise::kBlock));
      kernel<<<grid, elementwise::kBlock, 0, s>>>(a, p, wv);
    };
    if (p.alpha_zero) {
      go(std::integral_constant<decltype(&_dice_bwd_flat_kernel<TIn, TT, true, V>),
                                &_dice_bwd_flat_kernel<TIn, TT, true, V>>{});
    } else {
      go(std::integral_constant<decltype(&_dice_bwd_flat_kernel<TIn, TT, false, V>),
                                &_dice_bwd_flat_kernel<TIn, TT, false, V>>{});
    }
  });
  launch::check_launch("_dice_bwd_flat_kernel");
}

void backward(const DiceArgs& a, const Plan& p, cudaStream_t s) {
  if (p.n_row_blocks == 0 || a.cols == 0) return;
  launch::require(a.aux != nullptr && a.grad_output != nullptr && a.grad != nullptr, kLoss,
          "sums (aux), grad_output and grad must be set");
  if (a.inner == 1) return backward_flat(a, p, s);
  launch_columns(a, p, "_dice_bwd_kernel", [&](auto in_tag, auto t_tag, auto spatial,
                                               dim3 grid) {
    using TIn = typename decltype(in_tag)::type;
    using TT = typename decltype(t_tag)::type;
    // Only the spatial kernel is reachable ([N, C] took backward_flat).
    if constexpr (decltype(spatial)::value) {
      _dice_bwd_kernel<TIn, TT, true><<<grid, kBlock, 0, s>>>(a, p);
    }
  });
}

}  // namespace

int64_t cuda_workspace_bytes(const DiceArgs& a, Pass pass) {
  return launch::workspace_bytes(plan_of, a, pass);
}

void cuda_run(const DiceArgs& a, Pass pass, void* stream) {
  launch::require(a.rows >= 0 && a.cols >= 0 && a.inner >= 0, kLoss, "sizes must be >= 0");
  launch::Workspace w(a.workspace);
  const Plan p = plan_of(w, a, pass);
  const auto s = static_cast<cudaStream_t>(stream);
  pass == Pass::Forward ? forward(a, p, s) : backward(a, p, s);
}

}  // namespace fused_losses

// The row-softmax family on CUDA (softmax_focal.cu, dsc.cu): the block-per-row
// kernels' device helpers (rows longer than kWarpMaxCols, or spatial), the
// divisor pre-pass, the fixed-order second stage and the host launch, so a
// loss supplies only its per-row maths. rows_warp.cuh holds the warp-per-row
// kernels of short contiguous rows. The twin of fused_losses/triton/_softmax.py.
//
// Only CUDA headers here, no torch: CI compile-checks the .cu files with nvcc alone.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "launch.cuh"
#include "math.cuh"

namespace fused_losses {
namespace device {

// A row's C logits are `stride` apart. Each loss's gradient is
//   g_j = c_p·p_j + c_r·(p_j / (1 - p_y))·[j ≠ y] - c_a·a_j + c_y·[j = y]
// with p_j / (1 - p_y) = e_j / s_other, which stays in [0, 1].

struct RowStats {
  float m, s, s_other;  // max, Σ exp(x_c - m), the same without class y
  float ax, a_sum;      // Σ a_c·x_c, Σ a_c (dot only; a_c = 1 without a)
};

struct RowCoefs {
  float c_p, c_r, c_a, c_y;
};

// Every thread of the block must call it; every thread gets the row's stats.
// One pass: each thread keeps an online max/sum-exp over its columns, rescaled
// only when its max moves, then the block merges them.
template <typename T>
__device__ __forceinline__ RowStats block_row_stats(const T* x, int64_t stride, int64_t cols,
                                                    int64_t y, const float* a, bool dot) {
  float m = -INFINITY, s = 0.f, s_other = 0.f, ax = 0.f, a_sum = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = load_float(x + c * stride);
    if (v > m) {
      const float r = expf(m - v);
      s = s * r + 1.f;
      s_other = s_other * r + (c == y ? 0.f : 1.f);
      m = v;
    } else {
      const float e = expf(v - m);
      s += e;
      s_other += c == y ? 0.f : e;
    }
    if (dot) {
      const float w = a != nullptr ? __ldg(a + c) : 1.f;
      ax += w * v;
      a_sum += w;
    }
  }
  RowStats st;
  st.m = block_max_all(m);
  const float r = m == -INFINITY ? 0.f : expf(m - st.m);  // threads without columns
  st.s = block_broadcast(block_sum(s * r));
  st.s_other = block_broadcast(block_sum(s_other * r));
  st.ax = dot ? block_broadcast(block_sum(ax)) : 0.f;
  st.a_sum = dot ? block_broadcast(block_sum(a_sum)) : 0.f;
  return st;
}

// Writes the row's gradient (zeros when !live: a select, so NaN cannot leak).
template <typename T>
__device__ __forceinline__ void block_row_grad(const T* x, T* g, int64_t stride, int64_t cols,
                                               int64_t y, const RowStats& st, const RowCoefs& k,
                                               const float* a, bool live) {
  const float inv_s = 1.f / st.s, inv_so = 1.f / st.s_other;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float out = 0.f;
    if (live) {
      const float e = expf(load_float(x + c * stride) - st.m);
      const bool is_y = c == y;
      const float ratio = (is_y || e == 0.f) ? 0.f : fminf(e * inv_so, 1.f);
      out = k.c_p * (e * inv_s) + k.c_r * ratio + (is_y ? k.c_y : 0.f) -
            k.c_a * (a != nullptr ? __ldg(a + c) : 1.f);
      if (e != e) out = e;  // fminf would drop a NaN
    }
    store_float(g + c * stride, out);
  }
}

// A class index of any integer DType (one load per row: no template per type).
__device__ __forceinline__ int64_t load_index(const void* t, DType d, int64_t i) {
  switch (d) {
    case DType::UInt8: return static_cast<const uint8_t*>(t)[i];
    case DType::Int8: return static_cast<const int8_t*>(t)[i];
    case DType::Int16: return static_cast<const int16_t*>(t)[i];
    case DType::Int32: return static_cast<const int32_t*>(t)[i];
    default: return static_cast<const int64_t*>(t)[i];
  }
}

// The mean's divisor from the targets alone (the twin of Triton's
// _row_weight_sum_kernel): Σ α_y over the kept rows (y ≠ ignore_index; α_y = 1
// without α; an out-of-range target weighs α_0, as the row kernels clamp it).
// Block b sums targets [b·kWeightChunk, (b+1)·kWeightChunk) in a fixed order;
// one block writes den = [Σ, 1/Σ (0 when Σ = 0)] itself, more write partials
// for row_weight_finish_kernel. The order depends on the row count only.
constexpr int kWeightChunk = 16384, kWeightBlock = 512;
__global__ void __launch_bounds__(kWeightBlock) row_weight_kernel(
    const void* t, DType td, const float* alpha, int64_t n, int64_t cols, bool has_ignore,
    int64_t ignore, float* partial, float* den) {
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kWeightChunk;
  const int64_t end = n < begin + kWeightChunk ? n : begin + kWeightChunk;
  float acc = 0.f;
  for (int64_t i = begin + threadIdx.x; i < end; i += kWeightBlock) {
    const int64_t y = load_index(t, td, i);
    if (has_ignore && y == ignore) continue;
    acc += alpha == nullptr ? 1.f : __ldg(alpha + (y >= 0 && y < cols ? y : 0));
  }
  acc = block_sum(acc);
  if (threadIdx.x != 0) return;
  if (gridDim.x > 1) {
    partial[blockIdx.x] = acc;
  } else {
    den[0] = acc;
    den[1] = acc != 0.f ? 1.f / acc : 0.f;  // a negative Σ divides too
  }
}

__global__ void __launch_bounds__(1024) row_weight_finish_kernel(const float* partial,
                                                                 int64_t n, float* den) {
  float acc = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) acc += partial[j];
  acc = block_sum(acc);
  if (threadIdx.x != 0) return;
  den[0] = acc;
  den[1] = acc != 0.f ? 1.f / acc : 0.f;
}

// One block: loss = Σ partials (fixed order), for a mean ÷ den[0] (the
// pre-pass's Σ α_y) or ÷ n_rows without den. scale = 1: the forward's
// gradient already holds the divisor. A mean of nothing is 0/0 = NaN, as in
// torch, and its gradient 0 (den[1] = 0).
template <typename TOut>
__global__ void __launch_bounds__(1024) finish_rows_kernel(const float* partial, int64_t n,
                                                           const float* den, int64_t n_rows,
                                                           TOut* out, float* scale, bool mean) {
  float total = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) total += partial[j];
  total = block_sum(total);
  if (threadIdx.x != 0) return;
  if (mean) total = total / (den != nullptr ? den[0] : static_cast<float>(n_rows));
  store_float(out, total);
  *scale = 1.f;
}

// Per-row fp32 losses to the output dtype (reduction="none").
template <typename TOut>
__global__ void copy_rows_kernel(const float* row_loss, TOut* out, int64_t n) {
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    store_float(out + j, row_loss[j]);
  }
}

}  // namespace device

namespace rows {

constexpr int kMaxThreads = 256;
constexpr int64_t kMaxGrid = 1 << 20;
// Rows of at most kWarpMaxCols contiguous logits (inner == 1) take the
// warp-per-row kernels of rows_warp.cuh; longer or spatial rows the block ones.
constexpr int64_t kWarpMaxCols = 2048;
// Warp path: a warp sums `chunk_rows` consecutive row losses into one partial;
// rows per chunk grow (powers of two, at most 32) only while at least
// kMinChunks chunks remain, so every resident warp has work. A function of the
// row count alone, like the partials' summation order.
constexpr int64_t kMinChunks = 8192;

template <typename Options>
bool warp_path(const LaunchArgs<Options>& a) {
  return a.cols <= kWarpMaxCols && a.inner == 1;
}
inline int chunk_rows(int64_t rows) {
  int r = 1;
  while (r < 32 && rows / (2 * r) >= kMinChunks) r *= 2;
  return r;
}
inline int64_t n_chunks(int64_t rows) {
  const int r = chunk_rows(rows);
  return (rows + r - 1) / r;
}
inline int64_t weight_chunks(int64_t rows) {
  return std::max<int64_t>(1, (rows + device::kWeightChunk - 1) / device::kWeightChunk);
}

// A forward's scratch: the partials the finish sums (block path: one loss per
// row, also for reduction="none"; warp path: one per chunk, none without a
// reduction, since its kernel writes the losses itself) and, for a weighted
// mean, the divisor pre-pass's den = [Σ α_y, 1/Σ α_y] and its partials.
struct Scratch {
  float* row_loss = nullptr;
  float* den = nullptr;
  float* weight_partial = nullptr;
};

template <typename Options>
int64_t n_partials(const LaunchArgs<Options>& a) {
  if (!warp_path(a)) return a.rows;
  return a.reduce ? n_chunks(a.rows) : 0;
}

template <typename Options>
Scratch carve(launch::Workspace& w, const LaunchArgs<Options>& a, Pass pass, bool weighted) {
  Scratch s;
  if (pass != Pass::Forward) return s;
  s.row_loss = w.take<float>(n_partials(a));
  if (weighted && a.reduce && a.mean) {
    s.den = w.take<float>(2);
    if (weight_chunks(a.rows) > 1) s.weight_partial = w.take<float>(weight_chunks(a.rows));
  }
  return s;
}

template <typename Options>
int64_t workspace_bytes(const LaunchArgs<Options>& a, Pass pass, bool weighted) {
  return launch::workspace_bytes(
      [&](launch::Workspace& w, const LaunchArgs<Options>& args, Pass p) {
        carve(w, args, p, weighted);
      },
      a, pass);
}

// What a row kernel's launch needs beside the arguments.
struct Grid {
  unsigned blocks;  // block path: one block per row, at most kMaxGrid
  int threads;
  cudaStream_t stream;
  Scratch scratch;
  bool backward;  // grad_output given, gradient always written, no per-row outputs
  bool warp;      // warp_path(a)
};

// The divisor pre-pass of a weighted mean (softmax focal with α or ignore_index).
template <typename Options>
void launch_divisor(const LaunchArgs<Options>& a, const float* alpha, bool has_ignore,
                    int64_t ignore, const Scratch& s, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>(weight_chunks(a.rows));
  device::row_weight_kernel<<<blocks, device::kWeightBlock, 0, stream>>>(
      a.target, a.target_dtype, alpha, a.rows, a.cols, has_ignore, ignore, s.weight_partial,
      s.den);
  launch::check_launch("row_weight_kernel");
  if (blocks == 1) return;
  device::row_weight_finish_kernel<<<1, 1024, 0, stream>>>(s.weight_partial, blocks, s.den);
  launch::check_launch("row_weight_finish_kernel");
}

// A row loss's Forward or Backward pass: launch(Tag<TIn>, Tag<TT>, const Grid&)
// issues its row kernel (g.warp, with TT = void: the warp kernel of rows_warp.cuh; else one
// block per row, rows after the first kMaxGrid strided over). A weighted mean
// (`weighted`: the caller ran launch_divisor into scratch.den before, through
// `pre`) divides the gradient by den in the kernel. The forward then finishes:
// losses copied to the output (block path, reduction="none") or partials
// summed in a fixed order by finish_rows_kernel, which reports scale = 1.
template <typename Options, typename Pre, typename Launch>
void run(const LaunchArgs<Options>& a, Pass pass, const char* kernel, bool weighted,
         void* stream, Pre&& pre, Launch&& launch) {
  using launch::require;
  const char* const loss = Stem<Options>::value;
  launch::Workspace w(a.workspace);
  const Grid g{static_cast<unsigned>(std::min<int64_t>(a.rows, kMaxGrid)),
               a.cols <= 512 ? 128 : kMaxThreads, static_cast<cudaStream_t>(stream),
               carve(w, a, pass, weighted), pass == Pass::Backward, warp_path(a)};
  if (!g.backward && a.reduce) {
    require(a.out != nullptr && a.scale != nullptr, loss, "out and scale must be set");
  }
  if (!g.backward && a.reduce && a.mean && weighted) {
    require(g.scratch.den != nullptr, loss, "the workspace must be set");
    pre(g.scratch, g.stream);
  }
  if (a.rows > 0) {
    require(a.cols >= 1 && a.inner >= 1, loss, "cols and inner must be >= 1");
    require(a.input != nullptr && a.target != nullptr, loss, "input and target must be set");
    require(!(g.backward || a.write_grad) || a.grad != nullptr, loss, "grad must be set");
    require(!g.backward || a.grad_output != nullptr, loss, "grad_output must be set");
    require(g.backward || n_partials(a) == 0 || g.scratch.row_loss != nullptr, loss,
            "the workspace must be set");
    require(g.backward || a.reduce || !g.warp || a.out != nullptr, loss, "out must be set");
    launch::dispatch_input(a.input_dtype, loss, [&](auto in_tag) {
      // The warp kernels read any index type (device::load_index): Tag<void>.
      launch::dispatch_index(a.target_dtype, loss, [&](auto t_tag) {
        if (!g.warp) launch(in_tag, t_tag, g);
      });
      if (g.warp) launch(in_tag, launch::Tag<void>{}, g);
    });
    launch::check_launch(kernel);
  }
  if (g.backward) return;
  launch::dispatch_input(a.input_dtype, loss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    TIn* const out = static_cast<TIn*>(a.out);
    if (a.reduce) {
      device::finish_rows_kernel<TIn><<<1, 1024, 0, g.stream>>>(
          g.scratch.row_loss, n_partials(a), g.scratch.den, a.rows, out,
          a.scale, a.mean);
      launch::check_launch("finish_rows_kernel");
    } else if (a.rows > 0 && !g.warp) {
      const auto blocks = static_cast<unsigned>(launch::grid_blocks(a.rows, 256, kMaxGrid));
      device::copy_rows_kernel<TIn><<<blocks, 256, 0, g.stream>>>(g.scratch.row_loss, out, a.rows);
      launch::check_launch("copy_rows_kernel");
    }
  });
}

}  // namespace rows
}  // namespace fused_losses

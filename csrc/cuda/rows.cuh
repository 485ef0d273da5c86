// The row-softmax family on CUDA (softmax_focal.cu, dsc.cu): one block per
// row of C logits, the device helpers each loss's row kernel is built from,
// the fixed-order second stage and the host launch, so a loss supplies only
// its per-row maths. The twin of fused_losses/triton/_softmax.py.
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

// One block: loss = Σ rows (÷ Σ w for a mean, or ÷ n without w); scale =
// 1/Σ w for a weighted mean (0 when Σ w = 0; the loss is then NaN, as in
// torch), else 1. Fixed order: deterministic.
template <typename TOut>
__global__ void sum_rows_kernel(const float* row_loss, const float* row_w, int64_t n,
                                TOut* out, float* scale, bool mean) {
  float total = 0.f, wsum = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    total += row_loss[j];
    if (row_w != nullptr) wsum += row_w[j];
  }
  total = block_sum(total);
  wsum = block_sum(wsum);
  if (threadIdx.x != 0) return;
  float sc = 1.f;
  if (mean) {
    const float denom = row_w != nullptr ? wsum : static_cast<float>(n);
    if (row_w != nullptr) sc = denom != 0.f ? 1.f / denom : 0.f;  // Σ w < 0 divides too
    total = total / denom;
  }
  store_float(out, total);
  *scale = sc;
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

// The forward's per-row fp32 losses and (for weighted means) weights.
struct Scratch {
  float* row_loss = nullptr;
  float* row_weight = nullptr;
};

template <typename Options>
Scratch carve(launch::Workspace& w, const LaunchArgs<Options>& a, Pass pass, bool weighted) {
  Scratch s;
  if (pass != Pass::Forward) return s;
  s.row_loss = w.take<float>(a.rows);
  if (weighted) s.row_weight = w.take<float>(a.rows);
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
  unsigned blocks;
  int threads;
  cudaStream_t stream;
  Scratch scratch;
  bool backward;  // grad_output given, gradient always written, no per-row outputs
};

// A row loss's Forward or Backward pass: launch(Tag<TIn>, Tag<TT>, const Grid&)
// issues its row kernel (one block per row, rows after the first kMaxGrid
// strided over); the forward then finishes the per-row losses: copied to the
// output (reduction="none") or summed in a fixed order by sum_rows_kernel, ÷ Σ
// row_weight (`weighted`) or the row count for a mean.
template <typename Options, typename Launch>
void run(const LaunchArgs<Options>& a, Pass pass, const char* kernel, bool weighted,
         void* stream, Launch&& launch) {
  using launch::require;
  const char* const loss = Stem<Options>::value;
  launch::Workspace w(a.workspace);
  const Grid g{static_cast<unsigned>(std::min<int64_t>(a.rows, kMaxGrid)),
               a.cols <= 512 ? 128 : kMaxThreads, static_cast<cudaStream_t>(stream),
               carve(w, a, pass, weighted), pass == Pass::Backward};
  if (a.rows > 0) {
    require(a.cols >= 1 && a.inner >= 1, loss, "cols and inner must be >= 1");
    require(a.input != nullptr && a.target != nullptr, loss, "input and target must be set");
    require(!(g.backward || a.write_grad) || a.grad != nullptr, loss, "grad must be set");
    require(!g.backward || a.grad_output != nullptr, loss, "grad_output must be set");
    require(g.backward || g.scratch.row_loss != nullptr, loss, "the workspace must be set");
    launch::dispatch_input(a.input_dtype, loss, [&](auto in_tag) {
      launch::dispatch_index(a.target_dtype, loss, [&](auto t_tag) { launch(in_tag, t_tag, g); });
    });
    launch::check_launch(kernel);
  }
  if (g.backward) return;
  if (a.reduce) require(a.out != nullptr && a.scale != nullptr, loss, "out and scale must be set");
  launch::dispatch_input(a.input_dtype, loss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    TIn* const out = static_cast<TIn*>(a.out);
    if (a.reduce) {
      device::sum_rows_kernel<TIn><<<1, kMaxThreads, 0, g.stream>>>(
          g.scratch.row_loss, g.scratch.row_weight, a.rows, out, a.scale, a.mean);
      launch::check_launch("sum_rows_kernel");
    } else if (a.rows > 0) {
      const auto blocks = static_cast<unsigned>(launch::grid_blocks(a.rows, 256, kMaxGrid));
      device::copy_rows_kernel<TIn><<<blocks, 256, 0, g.stream>>>(g.scratch.row_loss, out, a.rows);
      launch::check_launch("copy_rows_kernel");
    }
  });
}

}  // namespace rows
}  // namespace fused_losses

// Warp-per-row kernels of the softmax row losses (softmax_focal.cu, dsc.cu)
// for contiguous rows of C <= rows::kWarpMaxCols logits: one warp owns a row,
// whose logits stay in registers, so the row is read from memory once and
// exp is taken once per element (e_j feeds the sums and the gradient).
//
// Lane `lane` holds K = C_PAD/32 columns, C_PAD = 128, 512, 1024 or 2048 >= C
// (a compile-time bucket, see bucket()): col(i, v) = (i·32 + lane)·V + v for
// i < K/V, v < V, with V = 2 (one 8-byte fp32 or 4-byte fp16/bf16 pair per
// load and store) when C is even, the pointers aligned and there is no label
// smoothing, else V = 1. Column steps wholly past C are skipped
// (warp-uniform), the rest masked. Per row: max and Σ_{j≠y} e_j by
// __shfl_xor_sync trees (every lane gets them), the per-row maths of
// rows_math.cuh, then g_j = e'_j·k1 - c_a·a_j stored from the registers and
// g_y stored after by the lane holding column y (same thread, same address:
// the later store wins).
//
// Persistent grid: whole waves of blocks of kWarps warps (launch::wave_grid),
// each warp striding over fixed chunks of rows::chunk_rows(N) rows; a warp sums
// its chunk's row losses in row order into one partial, which finish_rows_kernel
// sums in chunk order: the bits depend on N only, never on the SM count.
//
// Only CUDA headers here, no torch: CI compile-checks the .cu files with nvcc alone.
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "fast_math.cuh"
#include "launch.cuh"
#include "math.cuh"
#include "rows.cuh"
#include "rows_math.cuh"

namespace fused_losses {
namespace warp_rows {

constexpr int kWarps = 8;                                 // warps per block
constexpr int kThreads = kWarps * device::kWarpSize;

// The launch's data beside LaunchArgs.
struct Plan {
  float* partial = nullptr;     // [n_chunks] per-chunk loss sums (forward with a reduction)
  const float* den = nullptr;   // [2] the weighted mean's divisor (rows.cuh), or null
  int64_t n_chunks = 0;
  int chunk_rows = 1;
  float grad_scale = 1.f;       // host-known gradient factor (1/N of a plain mean), × den[1]
  bool backward = false;        // gradient × grad_output[row] only
  bool want_grad = false;       // write the gradient
  bool reduce = false;          // partials (else, forward: each row's loss to `out`)
};

// A loss on this skeleton:
//   using Options;
//   __device__ static bool keep(const Args&, int64_t y_raw);   // false: ignored row
//   __device__ static const float* alpha(const Args&);         // per-class α or null
//   FL_HD static rowmath::RowOut row(const Args&, const rowmath::RowIn&, float w_y);

// Every lane gets the warp's max / sum (fixed xor tree: deterministic).
__device__ __forceinline__ float warp_max_all(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum_all(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Two adjacent elements of T as one load/store.
template <typename T> struct Pair;
template <> struct Pair<float> {
  using type = float2;
  __device__ static float lo(float2 p) { return p.x; }
  __device__ static float hi(float2 p) { return p.y; }
  __device__ static float2 make(float a, float b) { return make_float2(a, b); }
};
template <> struct Pair<__half> {
  using type = __half2;
  __device__ static float lo(__half2 p) { return __low2float(p); }
  __device__ static float hi(__half2 p) { return __high2float(p); }
  __device__ static __half2 make(float a, float b) { return __floats2half2_rn(a, b); }
};
template <> struct Pair<__nv_bfloat16> {
  using type = __nv_bfloat162;
  __device__ static float lo(__nv_bfloat162 p) { return __low2float(p); }
  __device__ static float hi(__nv_bfloat162 p) { return __high2float(p); }
  __device__ static __nv_bfloat162 make(float a, float b) { return __floats2bfloat162_rn(a, b); }
};

// v[k] = x[col] for the lane's columns (k = i·V + v), -inf past C.
template <typename T, int K, int V>
__device__ __forceinline__ void load_row(const T* x, int C, int lane, float (&v)[K]) {
#pragma unroll
  for (int i = 0; i < K / V; ++i) {
    const int c0 = (i * device::kWarpSize + lane) * V;
#pragma unroll
    for (int j = 0; j < V; ++j) v[i * V + j] = -INFINITY;
    if (i * device::kWarpSize * V >= C) continue;  // warp-uniform
    if constexpr (V == 2) {  // C even: a pair is wholly in or out
      if (c0 < C) {
        const auto p = *reinterpret_cast<const typename Pair<T>::type*>(x + c0);
        v[i * 2] = Pair<T>::lo(p);
        v[i * 2 + 1] = Pair<T>::hi(p);
      }
    } else {
      if (c0 < C) v[i] = device::load_float(x + c0);
    }
  }
}

// g[col] = e'·k1 - c_a·a_col for the lane's columns below C (a_col = 1
// without α; the α term only with DOT, i.e. label smoothing).
template <typename T, int K, int V, bool DOT>
__device__ __forceinline__ void store_row(T* g, int C, int lane, const float (&e)[K], float k1,
                                          float c_a, const float* alpha) {
#pragma unroll
  for (int i = 0; i < K / V; ++i) {
    const int c0 = (i * device::kWarpSize + lane) * V;
    if (i * device::kWarpSize * V >= C) continue;  // warp-uniform
    if (c0 >= C) continue;
    float out[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      out[j] = e[i * V + j] * k1;
      if (DOT) out[j] -= c_a * (alpha != nullptr ? __ldg(alpha + c0 + j) : 1.f);
    }
    if constexpr (V == 2) {
      *reinterpret_cast<typename Pair<T>::type*>(g + c0) = Pair<T>::make(out[0], out[1]);
    } else {
      device::store_float(g + c0, out[0]);
    }
  }
}

// One row: writes its gradient (p.want_grad) and, forward without a
// reduction, its loss; returns the loss (0 for an ignored row, NaN for an
// out-of-range target).
template <class Loss, typename TIn, int K, int V, bool DOT>
__device__ __forceinline__ float warp_row(const LaunchArgs<typename Loss::Options>& a,
                                          const Plan& p, int64_t r, int lane,
                                          const float* alpha, float a_sum, float scale0) {
  const int C = static_cast<int>(a.cols);
  const TIn* x = static_cast<const TIn*>(a.input) + r * C;
  TIn* g = static_cast<TIn*>(a.grad) + (p.want_grad ? r * C : 0);
  const int64_t y_raw = device::load_index(a.target, a.target_dtype, r);
  const bool in_range = y_raw >= 0 && y_raw < C;
  const int y = in_range ? static_cast<int>(y_raw) : 0;  // never index outside the row
  const bool out_rows = !p.backward && !p.reduce;
  if (!Loss::keep(a, y_raw)) {  // warp-uniform: the row's logits are never read
    if (p.want_grad) {
      const float zero[K] = {};
      store_row<TIn, K, V, false>(g, C, lane, zero, 0.f, 0.f, nullptr);
    }
    if (out_rows && lane == 0) device::store_float(static_cast<TIn*>(a.out) + r, 0.f);
    return 0.f;
  }
  float v[K];
  load_row<TIn, K, V>(x, C, lane, v);
  const float x_y = device::load_float(x + y);
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < K; ++k) m = fmaxf(m, v[k]);  // a NaN logit still reaches e and s
  m = warp_max_all(m);
  // e'_k = exp(x_k - m), 0 at column y; column (i·32 + lane)·V + j is y iff i·32·V + j = rel.
  const int rel = y - lane * V;
  float s_other = 0.f, ax = 0.f;
#pragma unroll
  for (int i = 0; i < K / V; ++i) {
    if (i * device::kWarpSize * V >= C) continue;  // warp-uniform
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const int k = i * V + j;
      if (DOT) {
        const int col = (i * device::kWarpSize + lane) * V + j;
        if (col < C) ax += (alpha != nullptr ? __ldg(alpha + col) : 1.f) * v[k];
      }
      const float e = fast::ex2((v[k] - m) * fast::kLog2e);
      v[k] = i * device::kWarpSize * V + j == rel ? 0.f : e;
      s_other += v[k];
    }
  }
  s_other = warp_sum_all(s_other);
  if (DOT) ax = warp_sum_all(ax);
  rowmath::RowIn in;
  in.m = m;
  in.s_other = s_other;
  in.s = s_other + fast::ex2((x_y - m) * fast::kLog2e);  // e_y, the bits of the lane's own
  in.x_y = x_y;
  in.ax = ax;
  in.a_sum = a_sum;
  in.n_cls = static_cast<float>(C);
  const float w_y = alpha != nullptr ? __ldg(alpha + y) : 1.f;
  const rowmath::RowOut o = Loss::row(a, in, w_y);
  const float loss = in_range ? o.loss : __int_as_float(0x7fc00000);
  if (out_rows && lane == 0) device::store_float(static_cast<TIn*>(a.out) + r, loss);
  if (p.want_grad) {
    float sc = p.backward ? device::load_float(static_cast<const TIn*>(a.grad_output) + r)
                          : scale0;
    if (!in_range) sc = __int_as_float(0x7fc00000);
    store_row<TIn, K, V, DOT>(g, C, lane, v, rowmath::row_k1(o, in) * sc, o.c_a * sc, alpha);
    if (lane == (y / V) % device::kWarpSize) {
      const float a_y = DOT ? (alpha != nullptr ? __ldg(alpha + y) : 1.f) : 0.f;
      device::store_float(g + y, (o.c_y - o.c_a * a_y) * sc);
    }
  }
  return loss;
}

// The kernel: DOT = label smoothing (Σ a_c·x_c per row).
template <class Loss, typename TIn, int K, int V, bool DOT>
__global__ void __launch_bounds__(kThreads) _warp_rows_kernel(
    const LaunchArgs<typename Loss::Options> a, const Plan p) {
  const int lane = threadIdx.x % device::kWarpSize;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / device::kWarpSize;
  const int64_t n_warps = static_cast<int64_t>(gridDim.x) * kWarps;
  const float* alpha = Loss::alpha(a);
  float a_sum = static_cast<float>(a.cols);
  if (DOT && alpha != nullptr) {
    float t = 0.f;
    for (int64_t c = lane; c < a.cols; c += device::kWarpSize) t += __ldg(alpha + c);
    a_sum = warp_sum_all(t);
  }
  const float scale0 = p.den != nullptr ? p.grad_scale * p.den[1] : p.grad_scale;
  for (int64_t chunk = warp; chunk < p.n_chunks; chunk += n_warps) {
    const int64_t r0 = chunk * p.chunk_rows;
    const int64_t r1 = r0 + p.chunk_rows < a.rows ? r0 + p.chunk_rows : a.rows;
    float acc = 0.f;
    for (int64_t r = r0; r < r1; ++r) {
      acc += warp_row<Loss, TIn, K, V, DOT>(a, p, r, lane, alpha, a_sum, scale0);
    }
    if (p.reduce && lane == 0) p.partial[chunk] = acc;
  }
}

// Columns per lane of the bucket holding C (<= rows::kWarpMaxCols): 4 (C <= 128),
// 16 (C <= 512), 32 (C <= 1024) or 64. Steps wholly past C are skipped at run
// time, so a coarse bucket costs registers rather than instructions; fewer
// buckets keep the compile short (CI compiles every .cu for two
// architectures): six buckets (2..64) with label smoothing in pairs too made
// softmax_focal.cu take 51 s on a 2-core machine, 35 s now, 11 s for the block
// kernels alone.
inline int bucket(int64_t cols) {
  if (cols <= 4 * device::kWarpSize) return 4;
  if (cols <= 16 * device::kWarpSize) return 16;
  return cols <= 32 * device::kWarpSize ? 32 : 64;
}

// Launches Loss's warp kernel for logits TIn on a persistent grid. Label
// smoothing (DOT) always takes scalar loads: half the kernels to compile for
// the rarer option, still one read of the row.
template <class Loss, typename TIn, bool DOT>
void launch_rows(const LaunchArgs<typename Loss::Options>& a, const Plan& p, cudaStream_t s) {
  auto aligned = [](const void* q, size_t n) {
    return q == nullptr || reinterpret_cast<uintptr_t>(q) % n == 0;
  };
  const bool pairs = !DOT && a.cols % 2 == 0 && aligned(a.input, 2 * sizeof(TIn)) &&
                     aligned(a.grad, 2 * sizeof(TIn));
  auto go = [&](auto k_tag, auto v_tag) {
    constexpr int K = decltype(k_tag)::value, V = decltype(v_tag)::value;
    constexpr auto kernel = &_warp_rows_kernel<Loss, TIn, K, V, DOT>;
    const int64_t want = (p.n_chunks + kWarps - 1) / kWarps;
    const auto grid = static_cast<unsigned>(launch::wave_grid<kernel>(want, kThreads));
    kernel<<<grid, kThreads, 0, s>>>(a, p);
  };
  auto by_v = [&](auto k_tag) {
    if constexpr (!DOT) {
      if (pairs) return go(k_tag, std::integral_constant<int, 2>{});
    }
    go(k_tag, std::integral_constant<int, 1>{});
  };
  switch (bucket(a.cols)) {
    case 4: return by_v(std::integral_constant<int, 4>{});
    case 16: return by_v(std::integral_constant<int, 16>{});
    case 32: return by_v(std::integral_constant<int, 32>{});
    default: return by_v(std::integral_constant<int, 64>{});
  }
}

// The Plan of a pass on the warp path; den: the pre-pass's output or null.
template <typename Options>
Plan plan(const LaunchArgs<Options>& a, const rows::Grid& g, float grad_scale) {
  Plan p;
  p.partial = g.scratch.row_loss;
  p.den = g.scratch.den;
  p.chunk_rows = rows::chunk_rows(a.rows);
  p.n_chunks = rows::n_chunks(a.rows);
  p.grad_scale = grad_scale;
  p.backward = g.backward;
  p.want_grad = g.backward || a.write_grad;
  p.reduce = !g.backward && a.reduce;
  return p;
}

}  // namespace warp_rows
}  // namespace fused_losses

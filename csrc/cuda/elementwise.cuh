// The elementwise family on CUDA (focal_bce.cu, asl.cu, ghmc.cu): one kernel
// skeleton, the per-element maths supplied by the loss. The host half (plans,
// workspace, launches) is elementwise_host.cuh.
//
// Forward with a reduction: one pass reads logits and targets once (128-bit
// vectors, all loads of a tile issued before its maths), writes one fp32 loss
// partial per fixed chunk (walk.cuh; plus a kept-count only when ignore_index
// is in use) and, when asked, d(loss)/d(input). sum_partials_kernel sums the
// partials in chunk order: the bits depend on numel only, not on the GPU.
// A plain mean (no ignore_index) folds 1/numel into the coefficients, so loss
// partials and gradient come out already scaled. Forward without reduction
// writes the loss; its backward recomputes the gradient in one pass.
//
// A loss is a struct with
//   using Options = <Stem>Options;
//   struct Consts { float4 coef; bool count_kept, clamp_count, prescaled; ... };
//   static Consts consts(const Args&);           // host
//   __device__ static float4 load_coef(const Args&, const Consts&, int64_t row, int64_t col);
//   template <int G> FL_HD static Element hard(const Consts&, float x, bool one, const float4& k);
//   FL_HD static Element general(const Consts&, float x, float t, const float4& k);
//   template <class F> static bool hot(const Args&, const Consts&, bool table, F&& f);
//   static constexpr bool kFloatHot;  // optional: hot plans also take floating
//       targets (fp32 with fp32 logits, or the logits' type), tile by tile
//       hard or general (mixed()); general() must then accept the hot plans'
//       coefficients and need no count (no ignore_index)
// `coef` (float4) is the loss's per-class coefficients (lanes the loss defines;
// .x/.y the positive and negative factors of a hard target). `hot` calls
// f(Hot<G, Ops>{}) for a specialised plan, or returns false for the general one.
// Optional (GHM-C):
//   static constexpr unsigned kCoefOperands;     // operand slots read per element (bits)
//   __device__ static void block_setup(const Args&, const Consts& in, Consts& out);
//       once per block: stage small tables of `in` (the kernel parameter) in
//       shared memory and point `out` (the copy the kernel then uses) at them
//
// Only CUDA headers here, no torch: CI compile-checks the .cu files with nvcc alone.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "fast_math.cuh"
#include "launch.cuh"
#include "math.cuh"
#include "walk.cuh"

namespace fused_losses {
namespace elementwise {

static_assert(kBlock % device::kWarpSize == 0 && kBlock <= 1024, "block_sum needs whole warps");
constexpr int kSumBlock = 1024;  // threads of the second stage (fixes its order)

// How an element finds its coefficients: none present (Consts::coef), a
// per-class table in the workspace (read by column, int32), or any strides.
struct Uniform {};
struct Table {};
struct Strided {};

// A specialised plan: hard 0/1 targets, focal exponent G (loss-defined: 0, a
// small integer, or -1 for any γ), two 16-byte vectors per thread for fp32.
// With floating targets (mixed()) each warp picks the hard or general maths
// per tile.
template <int G, class O>
struct Hot {
  static constexpr bool kHard = true, kWide = true;
  static constexpr int kGamma = G;
  using Ops = O;
};
// The general plan: every option read at run time, one vector per thread.
template <class O>
struct General {
  static constexpr bool kHard = false, kWide = false;
  static constexpr int kGamma = 0;
  using Ops = O;
};

enum class Mode { Reduce, None, Backward };

// Elements per 16-byte vector: 4 fp32 or 8 fp16/bf16 logits; 1 (scalar) for
// the general plan's rarer target types.
template <class Plan, typename TIn, typename TT>
__host__ __device__ constexpr int vec_width() {
  constexpr bool common = std::is_same<TT, uint8_t>::value || std::is_same<TT, float>::value ||
                          std::is_same<TT, int64_t>::value;
  return (!Plan::kWide && !common) ? 1 : 16 / static_cast<int>(sizeof(TIn));
}
template <class Plan, typename TIn>
__host__ __device__ constexpr int unroll() {
  return (Plan::kWide && sizeof(TIn) == 4) ? 2 : 1;
}

template <typename T, int N>
struct alignas(sizeof(T) * N < 16 ? sizeof(T) * N : 16) Pack {
  T v[N];
};
template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}

struct Scratch {
  float* sum = nullptr;       // [n_chunks] loss partials (forward with a reduction)
  int32_t* count = nullptr;   // [n_chunks] kept-counts, only with ignore_index
  float4* table = nullptr;    // [C + 8] per-class coefficients, Table plans
};

// A Hot plan on floating targets (float, or the logits' half type): each tile
// tests its targets (binary_targets, then __all_sync over the warp) and runs
// the hard maths (t = target != 0) when all are exactly 0 or 1, else the
// general maths on the same coefficients. Bool targets: always the hard maths.
template <class Plan, typename TT>
__host__ __device__ constexpr bool mixed() {
  return Plan::kHard && !std::is_integral<TT>::value;
}

// Whether every target of a thread's tile is exactly 0 or 1 (-0 counts as 0;
// NaN, ±inf and anything soft do not). Host-callable: tested on the CPU.
template <int N>
FL_HD bool binary_targets(const float (&t)[N]) {
  bool ok = true;
#pragma unroll
  for (int k = 0; k < N; ++k) ok = ok & ((t[k] == 0.f) | (t[k] == 1.f));
  return ok;
}

// One element by one of the two paths (kHardPath), the target already a float.
// Host-callable: tests/cuda_host_math.cu runs float-target tiles through it.
template <class Loss, int G, bool kHardPath>
FL_HD Element eval_path(const typename Loss::Consts& c, float x, float t, const float4& k) {
  if constexpr (kHardPath) {
    return Loss::template hard<G>(c, x, t != 0.f, k);
  } else {
    return Loss::general(c, x, t, k);
  }
}

// kPath: 1 the hard maths, 0 the general, -1 the plan's own (bool targets: hard).
template <class Loss, class Plan, int kPath, typename TT>
__device__ __forceinline__ Element eval(const typename Loss::Consts& c, float x, TT t,
                                        const float4& k) {
  if constexpr (Plan::kHard && kPath != 0 && !mixed<Plan, TT>()) {
    return Loss::template hard<Plan::kGamma>(c, x, t != TT(0), k);
  } else if constexpr (Plan::kHard && kPath == 1) {
    return eval_path<Loss, Plan::kGamma, true>(c, x, device::to_float(t), k);
  } else {
    return Loss::general(c, x, device::to_float(t), k);
  }
}

// The skeleton of all three kernels. Mode::Reduce writes the chunk partials
// and (write_grad) the gradient; None the loss; Backward grad · grad_output.
template <Mode M, class Loss, class Plan, typename TIn, typename TT>
__device__ __forceinline__ void run_chunks(const LaunchArgs<typename Loss::Options>& a,
                                           const typename Loss::Consts& c, const Walk& w,
                                           const Scratch& s) {
  constexpr int V = vec_width<Plan, TIn, TT>(), U = unroll<Plan, TIn>();
  constexpr int kSub = kBlock * V;
  using Ops = typename Plan::Ops;
  constexpr bool kCols = !std::is_same<Ops, Uniform>::value;
  const TIn* __restrict__ xp = static_cast<const TIn*>(a.input);
  const TT* __restrict__ tp = static_cast<const TT*>(a.target);
  const TIn* __restrict__ gop = static_cast<const TIn*>(a.grad_output);
  TIn* __restrict__ op = static_cast<TIn*>(M == Mode::None ? a.out : a.grad);
  const float4* __restrict__ table = s.table;
  const int32_t cols = w.cols;
  const int32_t tile_c = kCols ? (kSub * U) % cols : 0;
  const int32_t sub_c = kCols ? kSub % cols : 0;
  Pos start = kCols ? pos_of(static_cast<int64_t>(blockIdx.x) * kChunk, cols) : Pos{};
  const Pos step = kCols ? pos_of(static_cast<int64_t>(gridDim.x) * kChunk, cols) : Pos{};
  const bool write = M != Mode::Reduce || a.write_grad;

  for (int64_t chunk = blockIdx.x; chunk < w.n_chunks; chunk += gridDim.x) {
    float sum = 0.f;
    int32_t kept = 0;
    // One element: its coefficients, maths and contribution; returns the value stored.
    // path: std::integral_constant<int, kPath> (eval).
    auto one = [&](auto path, float x, TT t, float go, int32_t col, int32_t r) -> float {
      constexpr int kPath = decltype(path)::value;
      float4 k;
      if constexpr (std::is_same<Ops, Uniform>::value) k = c.coef;
      if constexpr (std::is_same<Ops, Table>::value) k = __ldg(table + col);
      if constexpr (std::is_same<Ops, Strided>::value) {
        const Pos p = pos_after(start, r, cols);
        k = Loss::load_coef(a, c, p.row, p.col);
      }
      const Element e = eval<Loss, Plan, kPath>(c, x, t, k);
      if constexpr (M == Mode::None) return e.loss;
      if constexpr (M == Mode::Backward) return e.grad * go;
      sum += e.loss;
      if constexpr (!Plan::kHard) kept += e.keep ? 1 : 0;
      return e.grad;
    };
    walk_chunk<V, U, kCols>(
        w, chunk, threadIdx.x, start, tile_c, sub_c,
        [&](int64_t i0, int32_t r0, const int32_t(&cs)[U]) {
          Pack<TIn, V> xv[U], gv[U], ov[U];
          Pack<TT, V> tv[U];
#pragma unroll
          for (int u = 0; u < U; ++u) {  // every load of the tile before any maths
            xv[u] = load_pack<TIn, V>(xp + i0 + u * kSub);
            tv[u] = load_pack<TT, V>(tp + i0 + u * kSub);
            if constexpr (M == Mode::Backward) gv[u] = load_pack<TIn, V>(gop + i0 + u * kSub);
          }
          auto maths = [&](auto path) {
#pragma unroll
            for (int u = 0; u < U; ++u) {
#pragma unroll
              for (int k = 0; k < V; ++k) {
                const float go = M == Mode::Backward ? device::to_float(gv[u].v[k]) : 0.f;
                const float v = one(path, device::to_float(xv[u].v[k]), tv[u].v[k], go,
                                    kCols ? cs[u] + k : 0, r0 + u * kSub + k);
                ov[u].v[k] = device::from_float<TIn>(v);
              }
            }
          };
          if constexpr (mixed<Plan, TT>()) {
            // Every lane of the block runs every whole tile: a full-warp vote.
            float tf[U * V];
#pragma unroll
            for (int u = 0; u < U; ++u)
#pragma unroll
              for (int k = 0; k < V; ++k) tf[u * V + k] = device::to_float(tv[u].v[k]);
            if (__all_sync(0xffffffffu, binary_targets(tf))) {
              maths(std::integral_constant<int, 1>{});
            } else {
              maths(std::integral_constant<int, 0>{});
            }
          } else {
            maths(std::integral_constant<int, -1>{});
          }
          if (write) {
#pragma unroll
            for (int u = 0; u < U; ++u) *reinterpret_cast<Pack<TIn, V>*>(op + i0 + u * kSub) = ov[u];
          }
        },
        [&](int64_t i, int32_t r, int32_t col) {
          const float go = M == Mode::Backward ? device::load_float(gop + i) : 0.f;
          // A mixed plan's tail: the general maths, right for any target.
          const float v = one(std::integral_constant<int, mixed<Plan, TT>() ? 0 : -1>{},
                              device::load_float(xp + i), tp[i], go, col, r);
          if (write) device::store_float(op + i, v);
        });
    if constexpr (M == Mode::Reduce) {
      // Block-uniform: every thread reaches the barriers of block_sum.
      sum = device::block_sum(sum);
      if (threadIdx.x == 0) s.sum[chunk] = sum;
      if constexpr (!Plan::kHard) {
        if (c.count_kept) {
          kept = device::block_sum(kept);
          if (threadIdx.x == 0) s.count[chunk] = kept;
        }
      }
    }
    if (kCols) start = pos_add(start, step, cols);
  }
}

template <class Loss, class = void>
struct HasBlockSetup : std::false_type {};
template <class Loss>
struct HasBlockSetup<Loss, std::void_t<decltype(&Loss::block_setup)>> : std::true_type {};

// run_chunks after the loss's block_setup, if it has one. Without one, c is
// used in place (no copy: its fields stay constant-bank operands).
template <Mode M, class Loss, class Plan, typename TIn, typename TT>
__device__ __forceinline__ void run_block(const LaunchArgs<typename Loss::Options>& a,
                                          const typename Loss::Consts& c, const Walk& w,
                                          const Scratch& s) {
  if constexpr (HasBlockSetup<Loss>::value) {
    typename Loss::Consts staged = c;
    Loss::block_setup(a, c, staged);
    run_chunks<M, Loss, Plan, TIn, TT>(a, staged, w, s);
  } else {
    run_chunks<M, Loss, Plan, TIn, TT>(a, c, w, s);
  }
}

// Blocks per SM the forward asks ptxas to fit: the mixed plans' two paths
// spilled at its default 64 registers; 0 (as if unspecified) for the others.
template <class Plan, typename TT>
constexpr int fwd_min_blocks() {
  return mixed<Plan, TT>() ? 3 : 0;
}

template <class Loss, class Plan, typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock, (fwd_min_blocks<Plan, TT>())) _elementwise_fwd_kernel(
    const LaunchArgs<typename Loss::Options> a, const typename Loss::Consts c, const Walk w,
    const Scratch s) {
  run_block<Mode::Reduce, Loss, Plan, TIn, TT>(a, c, w, s);
}
template <class Loss, class Plan, typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _elementwise_none_kernel(
    const LaunchArgs<typename Loss::Options> a, const typename Loss::Consts c, const Walk w,
    const Scratch s) {
  run_block<Mode::None, Loss, Plan, TIn, TT>(a, c, w, s);
}
template <class Loss, class Plan, typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _elementwise_bwd_kernel(
    const LaunchArgs<typename Loss::Options> a, const typename Loss::Consts c, const Walk w,
    const Scratch s) {
  run_block<Mode::Backward, Loss, Plan, TIn, TT>(a, c, w, s);
}

// table[j] = coefficients of column j mod C, j < C + 8: a vector starting at
// any column < C reads on without wrapping.
template <class Loss>
__global__ void __launch_bounds__(kBlock) _class_table_kernel(
    const LaunchArgs<typename Loss::Options> a, const typename Loss::Consts c, float4* table) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  if (j < a.cols + 8) table[j] = Loss::load_coef(a, c, 0, j % a.cols);
}

}  // namespace elementwise
}  // namespace fused_losses

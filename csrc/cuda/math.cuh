// fp32 device maths shared by every CUDA loss kernel: the counterpart of
// fused_losses/triton/_math.py, so both GPU backends take the same stable paths.
// Also the element loads/stores, operand addressing, block reductions and the
// fixed-order second stage of the one-pass reductions (sum_partials_kernel).
// Precise libm calls here (expf/logf/log1pf): the row losses use them. The
// focal BCE, ASL, GHM-C and dice kernels use the approximations of
// fast_math.cuh instead, which their host-run test bounds (2e-5 relative).
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "../launch_args.h"

namespace fused_losses {
namespace device {

constexpr int kWarpSize = 32;

// ---------------------------------------------------------------------------
// Elementwise maths
// ---------------------------------------------------------------------------

// log(e^a + e^b); exact when one side is -inf (a soft target of exactly 0 or 1).
__device__ __forceinline__ float log_add_exp(float a, float b) {
  return fmaxf(a, b) + log1pf(expf(-fabsf(a - b)));
}

// q^n for n in 1..4 by multiplication: more accurate than exp(n·log q), whose
// rounding error grows with |log q|, and cheaper.
__device__ __forceinline__ float small_int_pow(float q, int n) {
  const float q2 = q * q;
  switch (n) {
    case 1: return q;
    case 2: return q2;
    case 3: return q2 * q;
    default: return q2 * q2;
  }
}

// ---------------------------------------------------------------------------
// Element loads and stores: maths is fp32 whatever the storage type.
// ---------------------------------------------------------------------------

template <typename T>  // float, double and the integer target types
__device__ __forceinline__ float load_float(const T* p) {
  return static_cast<float>(*p);
}
__device__ __forceinline__ float load_float(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_float(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

// The same conversions on values (elements of a loaded vector).
template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_float(float v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ void store_float(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_float(double* p, float v) { *p = v; }
__device__ __forceinline__ void store_float(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_float(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

// A broadcast operand's value at (row, col) of the [R, C] view. Operands are
// small ([C] vectors, usually) and read by every block: the read-only cache path.
__device__ __forceinline__ float load_operand(const Operand& o, int64_t row, int64_t col) {
  return __ldg(o.ptr + row * o.stride_r + col * o.stride_c);
}

// ---------------------------------------------------------------------------
// Deterministic reductions: a fixed shuffle tree inside each warp, then warp 0
// folds the per-warp sums in warp order. Same inputs, same bits, every run;
// no atomics.
// ---------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// Sum over the block; the result is valid in thread 0 only. Every thread of
// the block must call it, and blockDim.x must be a multiple of 32.
template <typename T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T warp_sums[kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  v = warp_sum(v);
  __syncthreads();  // an earlier block_sum<T> in this kernel may still be reading
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = blockDim.x / kWarpSize;
    v = warp_sum(lane < n_warps ? warp_sums[lane] : T(0));
  }
  return v;
}


template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    const T o = __shfl_down_sync(0xffffffffu, v, offset);
    v = (o > v || o != o) ? o : v;  // NaN wins, so a NaN logit reaches the loss
  }
  return v;
}

// v of thread 0, handed to every thread of the block.
template <typename T>
__device__ __forceinline__ T block_broadcast(T v) {
  __shared__ T slot;
  __syncthreads();
  if (threadIdx.x == 0) slot = v;
  __syncthreads();
  return slot;
}

// Max over the block, returned to every thread (NaN if any thread holds NaN).
__device__ __forceinline__ float block_max_all(float v) {
  __shared__ float warp_maxes[kWarpSize];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) warp_maxes[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = blockDim.x / kWarpSize;
    v = warp_max(lane < n_warps ? warp_maxes[lane] : -INFINITY);
  }
  return block_broadcast(v);
}

// One block: out = Σ partial_sum in a fixed order; for a mean ÷ the count,
// Σ partial_count when given, else `count`. clamp_count (an ignore_index in
// use, so an all-ignored mean is 0, not NaN) clamps it at 1 and reports
// 1/count in *scale for the saved gradient; otherwise *scale = 1 (scale may
// be null). A mean of nothing without clamp_count is 0/0 = NaN, as torch's.
template <typename TOut>
__global__ void __launch_bounds__(1024) sum_partials_kernel(
    const float* partial_sum, const int32_t* partial_count, int64_t n_partials, int64_t count,
    TOut* out, float* scale, bool mean, bool clamp_count) {
  float total = 0.f;
  int64_t kept = 0;
  for (int64_t j = threadIdx.x; j < n_partials; j += blockDim.x) {
    total += partial_sum[j];
    if (partial_count != nullptr) kept += partial_count[j];
  }
  total = block_sum(total);
  // partial_count is grid-uniform: every thread reaches the barriers or none does.
  if (partial_count != nullptr) count = block_sum(kept);
  if (threadIdx.x != 0) return;
  float divisor_scale = 1.f;
  if (mean) {
    if (clamp_count && count < 1) count = 1;
    const float n_kept = static_cast<float>(count);
    if (clamp_count) divisor_scale = 1.f / n_kept;
    total = total / n_kept;
  }
  store_float(out, total);
  if (scale != nullptr) *scale = divisor_scale;
}

}  // namespace device
}  // namespace fused_losses

// The shared backward of the (loss, grad, scale) ops: the forward already
// wrote d loss/d input up to one factor, grad_output * scale, which is exactly
// 1 for a plain loss.backward() of a mean or a sum. Every block forms the
// factor from the two one-element tensors (no separate multiply launch) and
// returns at once when it is 1 (x * 1 changes no bit, so skipping
// is exact, and the decision needs no host sync). Otherwise it scales in place
// with 16-byte loads and stores, then a scalar tail.
#include <cuda_runtime.h>

#include <cstdint>

#include "launch.cuh"
#include "math.cuh"

namespace fused_losses {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 132 * 8;  // a few waves on an H200; any size is correct

// The one-element grad_output, of the loss's dtype, as a float.
__device__ __forceinline__ float load_scalar(const void* p, DType dtype) {
  switch (dtype) {
    case DType::Float16: return device::load_float(static_cast<const __half*>(p));
    case DType::BFloat16: return device::load_float(static_cast<const __nv_bfloat16*>(p));
    default: return device::load_float(static_cast<const float*>(p));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    scale_grad_kernel(T* __restrict__ grad, const void* __restrict__ grad_output,
                      DType gout_dtype, const float* __restrict__ scale, int64_t numel,
                      bool vectorized) {
  const float f = load_scalar(grad_output, gout_dtype) * __ldg(scale);
  if (f == 1.f) return;
  constexpr int kPer = 16 / sizeof(T);  // elements per 16-byte access
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  int64_t done = 0;
  if (vectorized) {
    uint4* v = reinterpret_cast<uint4*>(grad);
    const int64_t n_vec = numel / kPer;
    for (int64_t i = first; i < n_vec; i += stride) {
      uint4 raw = v[i];
      T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
      for (int k = 0; k < kPer; ++k) device::store_float(e + k, device::load_float(e + k) * f);
      v[i] = raw;
    }
    done = n_vec * kPer;
  }
  for (int64_t i = done + first; i < numel; i += stride) {
    device::store_float(grad + i, device::load_float(grad + i) * f);
  }
}

}  // namespace

void cuda_scale_grad(void* grad, DType dtype, int64_t numel, const void* grad_output,
                     DType gout_dtype, const float* scale, void* stream) {
  launch::require(grad_output != nullptr && scale != nullptr && (grad != nullptr || numel == 0),
                  "scale_grad", "grad, grad_output and scale must be set");
  if (numel == 0) return;
  const bool aligned = reinterpret_cast<uintptr_t>(grad) % 16 == 0;
  launch::dispatch_input(dtype, "scale_grad", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t per_block = static_cast<int64_t>(kThreads) * (aligned ? 16 / sizeof(T) : 1);
    const int64_t blocks = launch::grid_blocks(numel, static_cast<int>(per_block), kMaxBlocks);
    scale_grad_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0,
                           static_cast<cudaStream_t>(stream)>>>(static_cast<T*>(grad), grad_output,
                                                                gout_dtype, scale, numel, aligned);
    launch::check_launch("scale_grad");
  });
}

}  // namespace fused_losses

// The shared backward of the (loss, grad, scale) ops: the forward already
// wrote d loss/d input up to one factor, grad_output * scale, which is exactly
// 1 for a plain loss.backward() of a mean or a sum. Every block reads the
// factor and returns at once when it is 1 (x * 1 changes no bit, so skipping
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

template <typename T>
__global__ void __launch_bounds__(kThreads)
    scale_grad_kernel(T* __restrict__ grad, const float* __restrict__ factor, int64_t numel,
                      bool vectorized) {
  const float f = __ldg(factor);
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

void cuda_scale_grad(void* grad, DType dtype, int64_t numel, const float* factor,
                     void* stream) {
  launch::require(factor != nullptr && (grad != nullptr || numel == 0), "scale_grad",
                  "grad and factor must be set");
  if (numel == 0) return;
  const bool aligned = reinterpret_cast<uintptr_t>(grad) % 16 == 0;
  launch::dispatch_input(dtype, "scale_grad", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t per_block = static_cast<int64_t>(kThreads) * (aligned ? 16 / sizeof(T) : 1);
    const int64_t blocks = launch::grid_blocks(numel, static_cast<int>(per_block), kMaxBlocks);
    scale_grad_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0,
                           static_cast<cudaStream_t>(stream)>>>(static_cast<T*>(grad), factor,
                                                                numel, aligned);
    launch::check_launch("scale_grad");
  });
}

}  // namespace fused_losses

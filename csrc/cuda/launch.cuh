// Host-side launch helpers shared by every CUDA loss: DType -> C++ type
// dispatch, argument and launch-error checks, and the workspace carve.
// Only CUDA headers, like the .cu files.
// A named namespace with inline functions (not an anonymous one) so that each
// translation unit shares one definition and -Wall sees no unused statics.
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../launch_args.h"

namespace fused_losses {
namespace launch {

template <typename T>
struct Tag {
  using type = T;
};

// The DType enum value of each element type; left undefined for any other type.
template <typename T>
struct DTypeOf;
#define FUSED_LOSSES_DTYPE_OF(T, D)          \
  template <>                                \
  struct DTypeOf<T> {                        \
    static constexpr DType value = DType::D; \
  };
FUSED_LOSSES_DTYPE_OF(float, Float32)
FUSED_LOSSES_DTYPE_OF(__half, Float16)
FUSED_LOSSES_DTYPE_OF(__nv_bfloat16, BFloat16)
FUSED_LOSSES_DTYPE_OF(double, Float64)
FUSED_LOSSES_DTYPE_OF(uint8_t, UInt8)
FUSED_LOSSES_DTYPE_OF(int8_t, Int8)
FUSED_LOSSES_DTYPE_OF(int16_t, Int16)
FUSED_LOSSES_DTYPE_OF(int32_t, Int32)
FUSED_LOSSES_DTYPE_OF(int64_t, Int64)
#undef FUSED_LOSSES_DTYPE_OF

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Float64: return "float64";
    case DType::UInt8: return "uint8";
    case DType::Int8: return "int8";
    case DType::Int16: return "int16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
  }
  return "unknown";
}

// Calls f(Tag<T>{}) for the T among Ts whose DType is `dtype`. Only the listed
// types are instantiated, which keeps the kernel count (and build time) down.
// `loss` and `what` name the kernel and the argument in the error.
template <typename... Ts, typename F>
void dispatch(DType dtype, const char* loss, const char* what, F&& f) {
  const bool found = ((dtype == DTypeOf<Ts>::value ? (f(Tag<Ts>{}), true) : false) || ...);
  if (!found) {
    throw std::invalid_argument(std::string("fused_losses: ") + loss +
                                " CUDA kernel does not support " + what + " dtype " +
                                dtype_name(dtype));
  }
}

// Logits: the floating types the losses accept.
template <typename F>
void dispatch_input(DType dtype, const char* loss, F&& f) {
  dispatch<float, __half, __nv_bfloat16>(dtype, loss, "logits", f);
}

// Targets of the binary losses: every DType, read as float.
template <typename F>
void dispatch_target(DType dtype, const char* loss, F&& f) {
  dispatch<float, __half, __nv_bfloat16, double, uint8_t, int8_t, int16_t, int32_t, int64_t>(
      dtype, loss, "target", f);
}

// Targets of the class-index losses: the integer types.
template <typename F>
void dispatch_index(DType dtype, const char* loss, F&& f) {
  dispatch<uint8_t, int8_t, int16_t, int32_t, int64_t>(dtype, loss, "target", f);
}

// f(Tag<TIn>, Tag<TT>) for a launch's logits and binary-target types.
template <typename Options, typename F>
void dispatch_pair(const LaunchArgs<Options>& a, const char* loss, F&& f) {
  dispatch_input(a.input_dtype, loss, [&](auto in_tag) {
    dispatch_target(a.target_dtype, loss, [&](auto target_tag) { f(in_tag, target_tag); });
  });
}

// A launcher's precondition: a direct call with missing buffers throws
// instead of reading out of bounds.
inline void require(bool ok, const char* loss, const char* message) {
  if (!ok) {
    throw std::invalid_argument(std::string("fused_losses: ") + loss + " CUDA: " + message);
  }
}

// Launches are asynchronous: this catches configuration errors only, without a sync.
inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("fused_losses: launching ") + kernel +
                             " failed: " + cudaGetErrorString(err));
  }
}

// Grid-stride launches: one block per `block` items, at most `max_blocks`. The
// cap is a constant rather than a multiple of the SM count so that the
// partition, and with it the summation order and the result's bits, depend on
// the size alone.
inline int64_t grid_blocks(int64_t items, int block, int64_t max_blocks) {
  if (items <= 0) return 0;
  return std::min<int64_t>((items + block - 1) / block, max_blocks);
}

// Blocks for a loop over `items` work units (chunks): whole waves of `Kernel`
// on this device (SMs x resident blocks per SM), at most one per unit. The
// partition of the work is fixed by the units, so the grid changes the speed
// only, never the bits. Cached per kernel and device.
template <auto Kernel>
int64_t wave_grid(int64_t items, int block) {
  static std::atomic<int> resident[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) dev = 0;
  std::atomic<int>& slot = resident[dev & 63];
  int blocks = slot.load(std::memory_order_relaxed);
  if (blocks == 0) {
    int sms = 0, per_sm = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, block, 0);
    blocks = std::max(1, sms * per_sm);
    slot.store(blocks, std::memory_order_relaxed);
  }
  return std::min<int64_t>(items, blocks);
}

// Typed arrays carved out of a launch's workspace (LaunchArgs::workspace),
// each 256-byte aligned. A loss sizes its workspace by running the same carve
// over nullptr (cuda_workspace_bytes), so the two can never disagree.
class Workspace {
 public:
  explicit Workspace(void* base) : base_(static_cast<char*>(base)) {}

  template <typename T>
  T* take(int64_t n) {
    offset_ = (offset_ + 255) / 256 * 256;
    T* p = base_ != nullptr ? reinterpret_cast<T*>(base_ + offset_) : nullptr;
    offset_ += n * static_cast<int64_t>(sizeof(T));
    return p;
  }
  int64_t bytes() const { return offset_; }

 private:
  char* base_;
  int64_t offset_ = 0;
};

// The bytes of scratch that carve(Workspace&, args, pass) takes.
template <typename Carve, typename Options>
int64_t workspace_bytes(Carve&& carve, const LaunchArgs<Options>& a, Pass pass) {
  Workspace w(nullptr);
  carve(w, a, pass);
  return w.bytes();
}

}  // namespace launch
}  // namespace fused_losses

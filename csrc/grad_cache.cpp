// The CPU gradient-block cache of grad_cache.h.
#include "grad_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace fused_losses {
namespace {

constexpr size_t kMinBytes = size_t{1} << 20;   // smaller ones: plain at::empty
constexpr size_t kMaxBlocks = 4;
constexpr size_t kMaxBytes = size_t{1} << 30;   // never hold more than 1 GiB

bool cache_enabled() {
  const char* env = std::getenv("FUSED_LOSSES_CPU_GRAD_CACHE");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

struct Block {
  void* ptr;
  size_t bytes;
};

// Freed blocks, oldest first. A block is handed out again only for the same
// byte size, which is what a training loop asks for.
class BlockCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    void* ptr = take(bytes);
    if (ptr == nullptr) ptr = c10::alloc_cpu(bytes);
    report(ptr, static_cast<int64_t>(bytes));
    return {ptr, new Block{ptr, bytes}, &BlockCache::release, c10::Device(c10::kCPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
  int64_t clear() {
    std::vector<Block> gone;
    {
      std::lock_guard<std::mutex> lock(mu_);
      gone.swap(free_);
      held_ = 0;
    }
    int64_t bytes = 0;
    for (const Block& b : gone) {
      bytes += static_cast<int64_t>(b.bytes);
      c10::free_cpu(b.ptr);
    }
    return bytes;
  }
  int64_t held() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(held_);
  }
  static BlockCache& get() {
    static BlockCache* cache = new BlockCache();  // never destroyed: frees may come at exit
    return *cache;
  }

 private:
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t k = free_.size(); k-- > 0;) {
      if (free_[k].bytes == bytes) {
        void* ptr = free_[k].ptr;
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(k));
        held_ -= bytes;
        return ptr;
      }
    }
    return nullptr;
  }
  // Keeps the block unless that would break a bound; then frees the oldest
  // blocks first, or this one if it alone is too big.
  void put(const Block& b) {
    std::vector<Block> gone;
    if (b.bytes > kMaxBytes || !cache_enabled()) {
      gone.push_back(b);
    } else {
      std::lock_guard<std::mutex> lock(mu_);
      while (!free_.empty() && (free_.size() >= kMaxBlocks || held_ + b.bytes > kMaxBytes)) {
        gone.push_back(free_.front());
        held_ -= free_.front().bytes;
        free_.erase(free_.begin());
      }
      free_.push_back(b);
      held_ += b.bytes;
    }
    for (const Block& g : gone) c10::free_cpu(g.ptr);
  }
  // The profiler's memory timeline sees a live gradient whether its block came
  // from the cache or not (as it sees at::empty's), so peak-memory figures hold.
  static void report(void* ptr, int64_t delta) {
    if (!c10::memoryProfilingEnabled()) return;
    static std::atomic<int64_t> live{0};
    const int64_t now = live += delta;
    c10::reportMemoryUsageToProfiler(ptr, delta, static_cast<size_t>(now), 0,
                                     c10::Device(c10::kCPU));
  }
  static void release(void* ctx) {
    Block* b = static_cast<Block*>(ctx);
    report(b->ptr, -static_cast<int64_t>(b->bytes));
    get().put(*b);
    delete b;
  }

  std::mutex mu_;
  std::vector<Block> free_;
  size_t held_ = 0;
};

}  // namespace

at::Tensor gradient_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
  if (options.device().type() != c10::kCPU || !cache_enabled()) return at::empty(sizes, options);
  const at::ScalarType dtype = c10::typeMetaToScalarType(options.dtype());
  size_t bytes = c10::elementSize(dtype);
  for (const int64_t s : sizes) bytes *= static_cast<size_t>(s);
  if (bytes < kMinBytes || bytes > kMaxBytes) return at::empty(sizes, options);
  return at::detail::empty_generic(sizes, &BlockCache::get(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   dtype, std::nullopt);
}

int64_t empty_cpu_cache() { return BlockCache::get().clear(); }

int64_t cpu_cache_bytes() { return BlockCache::get().held(); }

}  // namespace fused_losses

TORCH_LIBRARY_FRAGMENT(fused_losses, m) {
  m.def("_empty_cpu_cache() -> int", &fused_losses::empty_cpu_cache);
  m.def("_cpu_cache_bytes() -> int", &fused_losses::cpu_cache_bytes);
}

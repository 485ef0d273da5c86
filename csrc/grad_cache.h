// The buffers a fused forward writes its gradient into.
//
// On the CPU a fresh gradient of N×C floats is a fresh mmap: its first write
// faults in every 4 KiB page, which costs more than the loss itself on small
// VMs (about 25 ms per 68 MB measured on this project's 2-core machine). A
// training loop frees each step's gradient before the next step allocates the
// same shape, so large CPU gradients come from a small cache of freed blocks
// instead: at most kMaxBlocks blocks of at least kMinBytes each, kMaxBytes in
// all. FUSED_LOSSES_CPU_GRAD_CACHE=0 turns it off; empty_cpu_cache() (Python:
// fused_losses.empty_cpu_cache()) frees what it holds. Other devices use
// at::empty (CUDA has its own caching allocator).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace fused_losses {

// An uninitialised tensor of `sizes` for a gradient every element of which
// the kernel writes.
at::Tensor gradient_buffer(at::IntArrayRef sizes, const at::TensorOptions& options);

// Frees every cached block; returns the bytes it held.
int64_t empty_cpu_cache();

// Bytes held by the cache now (freed blocks only, not live tensors).
int64_t cpu_cache_bytes();

}  // namespace fused_losses

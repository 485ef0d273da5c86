// The elementwise family on CUDA (focal_bce.cu, asl.cu): kernels and launcher
// written once, with the per-element maths supplied by the loss.
//
// Forward with a reduction: one pass reads logits and targets once, writes
// one fp32 loss partial (and, for losses that can ignore elements, one
// kept-count) per block and, when asked, d(loss)/d(input) already multiplied
// by grad_scale; sum_partials_kernel then sums the partials in a fixed order.
// Forward without reduction writes the loss; its backward recomputes the
// gradient in one pass.
//
// A loss is a struct with
//   using Options = <Stem>Options;
//   static constexpr bool kCountKept;  // a mean divides by the kept count
//   struct Consts {...};               // derived from the options on the host:
//                                      // grad_scale, clamp_count and the loss's own
//   static Consts consts(const LaunchArgs<Options>&);
//   template <typename TIn, typename TT>
//   __device__ static Element element(const LaunchArgs<Options>&, const Consts&,
//                                     int64_t i, int64_t row, int64_t col);
// Everything a kernel branches on is uniform over the grid, so no warp diverges.
//
// Only CUDA headers here, no torch: CI compile-checks the .cu files with nvcc alone.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "launch.cuh"
#include "math.cuh"

namespace fused_losses {
namespace elementwise {

constexpr int kBlock = 256;
// Enough blocks to fill any current GPU a few times over (see grid_blocks).
constexpr int64_t kMaxBlocks = 4096;
static_assert(kBlock % device::kWarpSize == 0 && kBlock <= 1024, "block_sum needs whole warps");

struct Element {
  float loss;  // 0 where ignored
  float grad;  // d loss/dx, 0 where ignored
  bool keep;
};

// Per-block loss partials (and kept-counts), forward with a reduction only.
struct Partials {
  float* sum = nullptr;
  int32_t* count = nullptr;
};

template <typename Loss>
Partials carve(launch::Workspace& w, const LaunchArgs<typename Loss::Options>& a, Pass pass) {
  Partials p;
  if (pass != Pass::Forward || !a.reduce) return p;
  const int64_t n = launch::grid_blocks(a.numel, kBlock, kMaxBlocks);
  p.sum = w.take<float>(n);
  if (Loss::kCountKept) p.count = w.take<int32_t>(n);
  return p;
}

// Grid-stride loop over all elements, calling body(i, element) for each.
// Without operands (need_rc false) (row, col) is not tracked at all.
template <typename Loss, typename TIn, typename TT, typename Body>
__device__ __forceinline__ void for_each_element(const LaunchArgs<typename Loss::Options>& a,
                                                 const typename Loss::Consts& c, bool need_rc,
                                                 Body&& body) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  device::RowCol rc;
  if (need_rc) rc.start(i, step, a.cols);
  for (; i < a.numel; i += step) {
    body(i, Loss::template element<TIn, TT>(a, c, i, rc.row, rc.col));
    if (need_rc) rc.advance(a.cols);
  }
}

// reduce: per-block loss partial (and kept-count) + the scaled gradient when
// write_grad; otherwise the elementwise loss.
template <typename Loss, typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _elementwise_fwd_kernel(
    const LaunchArgs<typename Loss::Options> a, const typename Loss::Consts c,
    const Partials partials, const bool need_rc) {
  TIn* const out = static_cast<TIn*>(a.out);
  TIn* const grad = static_cast<TIn*>(a.grad);
  float sum = 0.f;
  int32_t count = 0;
  for_each_element<Loss, TIn, TT>(a, c, need_rc, [&](int64_t i, const Element& e) {
    if (!a.reduce) {
      device::store_float(out + i, e.loss);
      return;
    }
    sum += e.loss;
    if constexpr (Loss::kCountKept) count += e.keep ? 1 : 0;
    if (a.write_grad) device::store_float(grad + i, e.grad * c.grad_scale);
  });
  // a.reduce is grid-uniform: either every thread of the block reaches the
  // block_sum barriers or none does.
  if (!a.reduce) return;
  sum = device::block_sum(sum);
  if constexpr (Loss::kCountKept) count = device::block_sum(count);
  if (threadIdx.x == 0) {
    partials.sum[blockIdx.x] = sum;
    if constexpr (Loss::kCountKept) partials.count[blockIdx.x] = count;
  }
}

// reduction="none" backward: grad_input = d loss/dx · grad_output.
template <typename Loss, typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _elementwise_bwd_kernel(
    const LaunchArgs<typename Loss::Options> a, const typename Loss::Consts c,
    const bool need_rc) {
  const TIn* const grad_output = static_cast<const TIn*>(a.grad_output);
  TIn* const grad_input = static_cast<TIn*>(a.grad);
  for_each_element<Loss, TIn, TT>(a, c, need_rc, [&](int64_t i, const Element& e) {
    device::store_float(grad_input + i, e.grad * device::load_float(grad_output + i));
  });
}

// ---------------------------------------------------------------------------
// Host side, shared with GHM-C's loss pass (ghmc.cu), whose kernels differ.
// ---------------------------------------------------------------------------

template <typename Options>
void check_inputs(const LaunchArgs<Options>& a, const char* loss) {
  launch::require(a.numel >= 0, loss, "numel must be >= 0");
  launch::require(a.numel == 0 || a.cols >= 1, loss, "cols must be >= 1 for a non-empty input");
  launch::require(a.numel == 0 || (a.input != nullptr && a.target != nullptr), loss,
                  "input and target must be set");
}

// The second stage of a forward with a reduction: sum_partials_kernel on
// `block` threads (which fixes its summation order).
struct Reduction {
  Partials partials;
  int block;
  bool mean;         // a mean divides by the count (GHM-C's weights already have)
  bool clamp_count;  // see sum_partials_kernel
};

// A forward pass: launch(Tag<TIn>, Tag<TT>) issues the loss kernel on
// `blocks` blocks (none for an empty input), then the partials are summed.
template <typename Options, typename Launch>
void forward(const LaunchArgs<Options>& a, const char* loss, const char* kernel, int64_t blocks,
             const Reduction& r, cudaStream_t s, Launch&& launch) {
  using launch::require;
  check_inputs(a, loss);
  if (a.reduce) {
    require(a.out != nullptr && a.scale != nullptr, loss, "out and scale must be set");
    require(blocks == 0 || r.partials.sum != nullptr, loss, "the workspace must be set");
    require(blocks == 0 || !a.write_grad || a.grad != nullptr, loss,
            "grad must be set with write_grad");
  } else {
    require(blocks == 0 || a.out != nullptr, loss, "out must be set");
  }
  if (blocks > 0) {
    launch::dispatch_pair(a, loss, launch);
    launch::check_launch(kernel);
  }
  if (!a.reduce) return;
  // Runs for numel == 0 too: out is then 0 (sum), NaN or 0 (mean).
  launch::dispatch_input(a.input_dtype, loss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    device::sum_partials_kernel<TIn><<<1, r.block, 0, s>>>(
        r.partials.sum, r.partials.count, blocks, a.numel, static_cast<TIn*>(a.out), a.scale,
        r.mean, r.clamp_count);
  });
  launch::check_launch("sum_partials_kernel");
}

// The reduction="none" backward pass: launch(Tag<TIn>, Tag<TT>) issues the kernel.
template <typename Options, typename Launch>
void backward(const LaunchArgs<Options>& a, const char* loss, const char* kernel,
              int64_t blocks, Launch&& launch) {
  check_inputs(a, loss);
  if (blocks == 0) return;
  launch::require(a.grad_output != nullptr && a.grad != nullptr, loss,
                  "grad_output and grad must be set");
  launch::dispatch_pair(a, loss, launch);
  launch::check_launch(kernel);
}

template <typename Loss>
int64_t workspace_bytes(const LaunchArgs<typename Loss::Options>& a, Pass pass) {
  return launch::workspace_bytes(carve<Loss>, a, pass);
}

// A loss on this skeleton: its Forward or Backward pass.
template <typename Loss>
void run(const LaunchArgs<typename Loss::Options>& a, Pass pass, void* stream) {
  const int64_t blocks = launch::grid_blocks(a.numel, kBlock, kMaxBlocks);
  const typename Loss::Consts c = Loss::consts(a);
  bool need_rc = false;  // some operand is present: track (row, col)
  for (const Operand& op : a.operands) need_rc = need_rc || op.ptr != nullptr;
  const auto s = static_cast<cudaStream_t>(stream);
  const auto grid = static_cast<unsigned>(blocks);
  if (pass == Pass::Backward) {
    return backward(a, Stem<typename Loss::Options>::value, "_elementwise_bwd_kernel", blocks, [&](auto in, auto tt) {
      using TIn = typename decltype(in)::type;
      _elementwise_bwd_kernel<Loss, TIn, typename decltype(tt)::type><<<grid, kBlock, 0, s>>>(
          a, c, need_rc);
    });
  }
  launch::Workspace w(a.workspace);
  const Reduction r{carve<Loss>(w, a, pass), kBlock, a.mean, c.clamp_count};
  forward(a, Stem<typename Loss::Options>::value, "_elementwise_fwd_kernel", blocks, r, s, [&](auto in, auto tt) {
    using TIn = typename decltype(in)::type;
    _elementwise_fwd_kernel<Loss, TIn, typename decltype(tt)::type><<<grid, kBlock, 0, s>>>(
        a, c, r.partials, need_rc);
  });
}

}  // namespace elementwise
}  // namespace fused_losses

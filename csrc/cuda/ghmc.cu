// GHM-C on CUDA: kernels and their launchers.
//
// The semantics are in csrc/ghmc_args.h and fused_losses/reference/ghmc.py.
// Three passes, all stream-ordered and without a host sync, so a training
// step stays capturable in a CUDA graph:
//   1. histogram: per-block integer histograms, summed by one block into hist;
//   2. weights: one warp turns hist (+ the momentum EMA) into per-bin weights;
//   3. loss: reads logits and targets again, writes one fp32 loss partial per
//      block (summed by one block in a fixed order) or the elementwise loss,
//      and, when asked, the gradient.
// The caller may all-reduce hist across ranks between passes 1 and 2.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../ghmc_args.h"
#include "dispatch.cuh"
#include "math.cuh"

namespace fused_losses {
namespace {

using device::block_sum;
using device::kWarpSize;
using device::load_float;
using device::load_operand;
using device::store_float;
using device::warp_sum;
using launch::check_launch;
using launch::dispatch_input;
using launch::dispatch_target;

constexpr const char* kLoss = "ghmc";  // names the kernel in errors

// Large blocks and a small grid cap: a full grid is still 4-5 waves on an
// A100/H100 (two resident blocks per SM), so the last wave's tail stays small,
// while the per-block histograms that one block must sum stay <= 1024 * 65
// int64 (520 KiB). The cap is a constant, not a multiple of the SM count, so the
// partition, and with it the loss's summation order and bits, depend on numel
// alone.
constexpr int kBlock = 1024;
constexpr int kWarps = kBlock / kWarpSize;
constexpr int64_t kMaxBlocks = 1024;
constexpr int kSlots = kGhmcMaxBins + 2;  // bins, "valid but in no bin", invalid
static_assert(kBlock % kWarpSize == 0 && kBlock <= 1024, "block_sum needs whole warps");
static_assert(kBlock / (kGhmcMaxBins + 1) >= 1, "_ghmc_hist_sum_kernel needs a row per step");

// Kernels take the GhmcArgs by value; every flag in it is uniform over the
// grid, so branching on one never diverges a warp.

// What one element contributes: its slot (the reference's bin index: 0..bins-1
// a bin, bins valid but in no bin, bins + 1 invalid) and the sigmoid terms of
// its loss and gradient. The histogram pass uses only the slot; the compiler
// drops the logarithms there.
struct Element {
  int slot;
  float t, log_p, log_n, s_p, s_n;
};

// The fp32 edges mmdet builds: i/bins rounded once, and 1 + 1e-6 at the top.
__device__ __forceinline__ float bin_edge(int i, int bins) {
  return i < bins ? static_cast<float>(i) / static_cast<float>(bins) : 1.f + 1e-6f;
}

// b with edge(b) <= g < edge(b+1), else bins. floor(g·bins) rounds differently
// from the edges i/bins, but never by more than one bin, so one step corrects
// it; the final test then decides (g past the top edge, NaN g). fmaxf maps a
// NaN to 0, so the float -> int conversion is always defined.
__device__ __forceinline__ int bin_of(float g, int bins) {
  const float n = static_cast<float>(bins);
  int b = static_cast<int>(fminf(fmaxf(floorf(g * n), 0.f), n - 1.f));
  if (g < bin_edge(b, bins)) {
    --b;
  } else if (g >= bin_edge(b + 1, bins)) {
    ++b;
  }
  const bool in_bin = b >= 0 && b < bins && bin_edge(b, bins) <= g && g < bin_edge(b + 1, bins);
  return in_bin ? b : bins;
}

// Passes 1 and 3 both bin through here. g is rounded after the subtraction
// (__fsub_rn: no FMA with the sigmoid's product, which the compiler might form
// in one kernel and not the other), so an element lands in the same bin in both
// passes, and as in the reference, which rounds σ(x) first.
template <typename TIn, typename TT>
__device__ __forceinline__ Element ghmc_element(const GhmcArgs& p, int64_t i,
                                                const device::RowCol& rc) {
  Element e;
  const float x = load_float(static_cast<const TIn*>(p.input) + i);
  e.t = load_float(static_cast<const TT*>(p.target) + i);
  device::sigmoid_terms(x, &e.log_p, &e.log_n, &e.s_p, &e.s_n);
  // `> 0` is false for a NaN weight, as in the reference.
  const bool valid =
      p.label_weight.ptr == nullptr || load_operand(p.label_weight, rc.row, rc.col) > 0.f;
  e.slot = valid ? bin_of(fabsf(__fsub_rn(e.s_p, e.t)), p.bins) : p.bins + 1;
  return e;
}

// Grid-stride loop calling body(i, active, rc). Every thread of a block runs
// the same number of iterations (lanes past the end get active == false), so
// warp-wide intrinsics in the body always see the full warp.
template <typename Body>
__device__ __forceinline__ void for_each_index(const GhmcArgs& p, Body&& body) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x;
  const bool need_rc = p.label_weight.ptr != nullptr;  // else (row, col) is never read
  device::RowCol rc;
  if (need_rc) rc.start(first + threadIdx.x, step, p.cols);
  for (int64_t base = first; base < p.numel; base += step) {
    const int64_t i = base + threadIdx.x;
    body(i, i < p.numel, rc);
    if (need_rc) rc.advance(p.cols);
  }
}

// Counts each lane's slot (if <= bins) in its warp's histogram; every lane of
// the warp must call it. Most elements of a trained classifier fall in bin 0,
// so a plain shared atomic per element would serialise the warp on one
// address: lanes with equal slots are grouped first and one of them adds the
// group's size. __match_any_sync needs sm_70; older targets (a torch build
// with a wide arch list) take the plain atomics rather than fail to build.
__device__ __forceinline__ void count_slot(unsigned* warp_counts, int slot, int bins) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 700
  const unsigned peers = __match_any_sync(0xffffffffu, slot);
  if (slot <= bins && static_cast<int>(threadIdx.x % kWarpSize) == __ffs(peers) - 1) {
    atomicAdd(warp_counts + slot, static_cast<unsigned>(__popc(peers)));
  }
#else
  if (slot <= bins) atomicAdd(warp_counts + slot, 1u);
#endif
}

// Pass 1: this block's histogram to partial_hist[block][0..bins], built from
// per-warp histograms so that warps never contend. Integer counts make the
// result independent of the order of the adds. 32-bit counters are enough:
// a warp sees numel / (kMaxBlocks·kWarps) elements at most.
template <typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _ghmc_hist_kernel(const GhmcArgs p) {
  __shared__ unsigned counts[kWarps][kGhmcMaxBins + 1];
  for (int k = threadIdx.x; k < kWarps * (kGhmcMaxBins + 1); k += blockDim.x) {
    counts[k / (kGhmcMaxBins + 1)][k % (kGhmcMaxBins + 1)] = 0u;
  }
  __syncthreads();
  unsigned* const warp_counts = counts[threadIdx.x / kWarpSize];
  for_each_index(p, [&](int64_t i, bool active, const device::RowCol& rc) {
    const int slot = active ? ghmc_element<TIn, TT>(p, i, rc).slot : p.bins + 1;
    count_slot(warp_counts, slot, p.bins);
  });
  __syncthreads();
  if (static_cast<int>(threadIdx.x) <= p.bins) {
    int64_t total = 0;
    for (int w = 0; w < kWarps; ++w) total += counts[w][threadIdx.x];
    p.partial_hist[static_cast<int64_t>(blockIdx.x) * (p.bins + 1) + threadIdx.x] = total;
  }
}

// Pass 1, second stage, one block: hist[s] = Σ_blocks partial_hist[block][s].
// Thread t sums slot t % slots of every (kBlock / slots)-th block's row, so
// consecutive threads read consecutive words; unrolled so that several loads
// are in flight per thread. Runs with n_partials == 0 too: hist is then zeros.
__global__ void __launch_bounds__(kBlock) _ghmc_hist_sum_kernel(const int64_t* partial_hist,
                                                               int64_t n_partials, int slots,
                                                               int64_t* hist) {
  __shared__ int64_t sums[kBlock];
  const int rows = kBlock / slots;
  int64_t acc = 0;
  if (static_cast<int>(threadIdx.x) < rows * slots) {
    const int64_t end = n_partials * slots;
    const int64_t step = static_cast<int64_t>(rows) * slots;
#pragma unroll 8
    for (int64_t k = threadIdx.x; k < end; k += step) acc += partial_hist[k];
  }
  sums[threadIdx.x] = acc;
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < slots) {
    int64_t total = 0;
    for (int r = 0; r < rows; ++r) total += sums[r * slots + threadIdx.x];
    hist[threadIdx.x] = total;
  }
}

// Pass 2, one warp, lane l owning bins l and l + 32: ghmc_weights of the
// reference, operation for operation, so the weights match it bit for bit.
// The momentum update is rounded product by product (__fmul_rn/__fadd_rn
// forbid the FMA contraction that the reference's separate torch ops never
// get). (1 - momentum) comes rounded once from double, as torch forms it.
__global__ void __launch_bounds__(kWarpSize) _ghmc_weights_kernel(
    const int64_t* hist, int bins, float* acc_sum, float momentum, float one_minus_momentum,
    bool mean, float* weights) {
  const int lane = threadIdx.x;
  int64_t valid = 0;
  int nonempty = 0;
  for (int s = lane; s <= bins; s += kWarpSize) valid += hist[s];
  for (int b = lane; b < bins; b += kWarpSize) nonempty += hist[b] > 0 ? 1 : 0;
  valid = __shfl_sync(0xffffffffu, warp_sum(valid), 0);
  nonempty = __shfl_sync(0xffffffffu, warp_sum(nonempty), 0);
  const float tot = static_cast<float>(valid > 1 ? valid : int64_t{1});
  const float n = static_cast<float>(nonempty > 1 ? nonempty : 1);
  for (int b = lane; b < bins; b += kWarpSize) {
    const float count = static_cast<float>(hist[b]);
    float w = 0.f;  // empty bin; its acc_sum entry stays untouched
    if (count > 0.f) {
      float denom = count;
      if (momentum > 0.f) {
        denom = __fadd_rn(__fmul_rn(momentum, acc_sum[b]), __fmul_rn(one_minus_momentum, count));
        acc_sum[b] = denom;
      }
      w = tot / denom;
    }
    w = w / n;
    weights[b] = mean ? w / tot : w;
  }
}

// The per-bin weights in shared memory, read once per block, padded with zeros
// for slots bins and bins + 1: the weight of an element in no bin or invalid
// is then a lookup, not a branch, and it multiplies the element's BCE, so a NaN
// logit still makes the loss NaN, as in the reference.
__device__ __forceinline__ void stage_weights(const GhmcArgs& p, float* w) {
  const int k = threadIdx.x;
  if (k < kSlots) w[k] = k < p.bins ? p.weights[k] : 0.f;
  __syncthreads();
}

// Pass 3. reduce: per-block loss partial; otherwise the elementwise loss. write_grad:
// the unscaled gradient w·(σ(x) - t).
template <typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _ghmc_fwd_kernel(const GhmcArgs p) {
  __shared__ float w[kSlots];
  stage_weights(p, w);
  TIn* const out = static_cast<TIn*>(p.out);
  TIn* const grad = static_cast<TIn*>(p.grad);
  float sum = 0.f;
  for_each_index(p, [&](int64_t i, bool active, const device::RowCol& rc) {
    if (!active) return;
    const Element e = ghmc_element<TIn, TT>(p, i, rc);
    const float we = w[e.slot];
    const float loss = we * -(e.t * e.log_p + (1.f - e.t) * e.log_n);
    // σ(x) - t without cancellation when σ(x) ≈ t ≈ 1.
    if (p.write_grad) store_float(grad + i, we * ((1.f - e.t) * e.s_p - e.t * e.s_n));
    if (p.reduce) {
      sum += loss;
    } else {
      store_float(out + i, loss);
    }
  });
  // p.reduce is grid-uniform: every thread of the block reaches the
  // block_sum barriers or none does.
  if (!p.reduce) return;
  sum = block_sum(sum);
  if (threadIdx.x == 0) p.partial_sum[blockIdx.x] = sum;
}

// reduction="none" backward: grad_input = w·(σ(x) - t)·grad_output.
template <typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _ghmc_bwd_kernel(const GhmcArgs p) {
  __shared__ float w[kSlots];
  stage_weights(p, w);
  const TIn* const grad_output = static_cast<const TIn*>(p.grad_output);
  TIn* const grad_input = static_cast<TIn*>(p.grad);
  for_each_index(p, [&](int64_t i, bool active, const device::RowCol& rc) {
    if (!active) return;
    const Element e = ghmc_element<TIn, TT>(p, i, rc);
    const float g = w[e.slot] * ((1.f - e.t) * e.s_p - e.t * e.s_n);
    store_float(grad_input + i, g * load_float(grad_output + i));
  });
}

// Pass 3, second stage, one block: out = Σ partials in a fixed order (the
// weights already carry the mean's 1/tot). Runs for numel == 0 too: out = 0.
template <typename TOut>
__global__ void __launch_bounds__(kBlock) _ghmc_sum_partials_kernel(const float* partial_sum,
                                                                   int64_t n_partials,
                                                                   TOut* out) {
  float total = 0.f;
  for (int64_t j = threadIdx.x; j < n_partials; j += blockDim.x) total += partial_sum[j];
  total = block_sum(total);
  if (threadIdx.x == 0) store_float(out, total);
}

// ---------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------

void require(bool ok, const char* message) {
  if (!ok) throw std::invalid_argument(std::string("fused_losses: ghmc CUDA: ") + message);
}

void check_elementwise(const GhmcArgs& a) {
  require(a.numel >= 0, "numel must be >= 0");
  require(a.numel == 0 || a.cols >= 1, "cols must be >= 1 for a non-empty input");
  require(a.bins >= 1 && a.bins <= kGhmcMaxBins, "bins must be in 1..64");
  require(a.numel == 0 || (a.input != nullptr && a.target != nullptr),
          "input and target must be set");
}

// Calls f(Tag<TIn>, Tag<TT>) for the logits and target types of `a`.
template <typename F>
void dispatch_types(const GhmcArgs& a, F&& f) {
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    dispatch_target(a.target_dtype, kLoss, [&](auto target_tag) { f(in_tag, target_tag); });
  });
}

}  // namespace

int64_t ghmc_cuda_num_partials(int64_t numel) {
  if (numel <= 0) return 0;
  return std::min<int64_t>((numel + kBlock - 1) / kBlock, kMaxBlocks);
}

void ghmc_cuda_histogram(const GhmcArgs& a, void* stream) {
  check_elementwise(a);
  const int64_t blocks = ghmc_cuda_num_partials(a.numel);
  require(a.hist != nullptr, "hist must be set");
  require(blocks == 0 || a.partial_hist != nullptr, "partial_hist must be set");
  const auto s = static_cast<cudaStream_t>(stream);
  if (blocks > 0) {
    dispatch_types(a, [&](auto in_tag, auto target_tag) {
      using TIn = typename decltype(in_tag)::type;
      using TT = typename decltype(target_tag)::type;
      _ghmc_hist_kernel<TIn, TT><<<static_cast<unsigned>(blocks), kBlock, 0, s>>>(a);
    });
    check_launch("_ghmc_hist_kernel");
  }
  _ghmc_hist_sum_kernel<<<1, kBlock, 0, s>>>(a.partial_hist, blocks, a.bins + 1, a.hist);
  check_launch("_ghmc_hist_sum_kernel");
}

void ghmc_cuda_weights(const GhmcArgs& a, void* stream) {
  require(a.bins >= 1 && a.bins <= kGhmcMaxBins, "bins must be in 1..64");
  require(a.hist != nullptr && a.weights != nullptr, "hist and weights must be set");
  require(!(a.momentum > 0.f) || a.acc_sum != nullptr, "acc_sum must be set when momentum > 0");
  const auto s = static_cast<cudaStream_t>(stream);
  _ghmc_weights_kernel<<<1, kWarpSize, 0, s>>>(a.hist, a.bins, a.acc_sum, a.momentum,
                                               a.one_minus_momentum, a.mean, a.weights);
  check_launch("_ghmc_weights_kernel");
}

void ghmc_cuda_forward(const GhmcArgs& a, void* stream) {
  check_elementwise(a);
  const int64_t blocks = ghmc_cuda_num_partials(a.numel);
  require(blocks == 0 || a.weights != nullptr, "weights must be set");
  require(blocks == 0 || !a.write_grad || a.grad != nullptr, "grad must be set with write_grad");
  if (a.reduce) {
    require(a.out != nullptr, "out must be set");
    require(blocks == 0 || a.partial_sum != nullptr, "partial_sum must be set for a reduction");
  } else {
    require(blocks == 0 || a.out != nullptr, "out must be set");
  }
  const auto s = static_cast<cudaStream_t>(stream);
  if (blocks > 0) {
    dispatch_types(a, [&](auto in_tag, auto target_tag) {
      using TIn = typename decltype(in_tag)::type;
      using TT = typename decltype(target_tag)::type;
      _ghmc_fwd_kernel<TIn, TT><<<static_cast<unsigned>(blocks), kBlock, 0, s>>>(a);
    });
    check_launch("_ghmc_fwd_kernel");
  }
  if (!a.reduce) return;
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    _ghmc_sum_partials_kernel<TIn><<<1, kBlock, 0, s>>>(a.partial_sum, blocks,
                                                        static_cast<TIn*>(a.out));
  });
  check_launch("_ghmc_sum_partials_kernel");
}

void ghmc_cuda_backward(const GhmcArgs& a, void* stream) {
  check_elementwise(a);
  const int64_t blocks = ghmc_cuda_num_partials(a.numel);
  if (blocks == 0) return;
  require(a.weights != nullptr && a.grad_output != nullptr && a.grad != nullptr,
          "weights, grad_output and grad must be set");
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch_types(a, [&](auto in_tag, auto target_tag) {
    using TIn = typename decltype(in_tag)::type;
    using TT = typename decltype(target_tag)::type;
    _ghmc_bwd_kernel<TIn, TT><<<static_cast<unsigned>(blocks), kBlock, 0, s>>>(a);
  });
  check_launch("_ghmc_bwd_kernel");
}

}  // namespace fused_losses

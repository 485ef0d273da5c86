// GHM-C on CUDA: kernels and their launchers.
//
// The semantics are in csrc/cpu/ghmc_kernel.h and fused_losses/reference/ghmc.py.
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

#include <cstdint>

#include "../launch_args.h"
#include "elementwise.cuh"
#include "launch.cuh"
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
using launch::require;
using GhmcArgs = LaunchArgs<GhmcOptions>;

constexpr const char* kLoss = Stem<GhmcOptions>::value;

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

__host__ __device__ __forceinline__ int bins_of(const GhmcArgs& a) {
  return static_cast<int>(a.opt.bins);
}

// Scratch of the two-stage reductions: per-block histograms (Histogram pass)
// or loss partials (Forward pass with a reduction).
struct Scratch {
  int64_t* partial_hist = nullptr;  // blocks · (bins + 1)
  float* partial_sum = nullptr;     // blocks
};

Scratch carve(launch::Workspace& w, const GhmcArgs& a, Pass pass) {
  Scratch s;
  const int64_t blocks = launch::grid_blocks(a.numel, kBlock, kMaxBlocks);
  if (pass == Pass::Histogram) s.partial_hist = w.take<int64_t>(blocks * (a.opt.bins + 1));
  if (pass == Pass::Forward && a.reduce) s.partial_sum = w.take<float>(blocks);
  return s;
}

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
  const Operand& label_weight = p.operands[GhmcOperands::label_weight];
  const bool valid =
      label_weight.ptr == nullptr || load_operand(label_weight, rc.row, rc.col) > 0.f;
  const int bins = bins_of(p);
  e.slot = valid ? bin_of(fabsf(__fsub_rn(e.s_p, e.t)), bins) : bins + 1;
  return e;
}

// Grid-stride loop calling body(i, active, rc). Every thread of a block runs
// the same number of iterations (lanes past the end get active == false), so
// warp-wide intrinsics in the body always see the full warp.
template <typename Body>
__device__ __forceinline__ void for_each_index(const GhmcArgs& p, Body&& body) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x;
  // Without label_weight (row, col) is never read.
  const bool need_rc = p.operands[GhmcOperands::label_weight].ptr != nullptr;
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
__global__ void __launch_bounds__(kBlock) _ghmc_hist_kernel(const GhmcArgs p,
                                                           int64_t* partial_hist) {
  const int bins = bins_of(p);
  __shared__ unsigned counts[kWarps][kGhmcMaxBins + 1];
  for (int k = threadIdx.x; k < kWarps * (kGhmcMaxBins + 1); k += blockDim.x) {
    counts[k / (kGhmcMaxBins + 1)][k % (kGhmcMaxBins + 1)] = 0u;
  }
  __syncthreads();
  unsigned* const warp_counts = counts[threadIdx.x / kWarpSize];
  for_each_index(p, [&](int64_t i, bool active, const device::RowCol& rc) {
    const int slot = active ? ghmc_element<TIn, TT>(p, i, rc).slot : bins + 1;
    count_slot(warp_counts, slot, bins);
  });
  __syncthreads();
  if (static_cast<int>(threadIdx.x) <= bins) {
    int64_t total = 0;
    for (int w = 0; w < kWarps; ++w) total += counts[w][threadIdx.x];
    partial_hist[static_cast<int64_t>(blockIdx.x) * (bins + 1) + threadIdx.x] = total;
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
  if (k < kSlots) w[k] = k < bins_of(p) ? p.operands[GhmcOperands::weights].ptr[k] : 0.f;
  __syncthreads();
}

// Pass 3. reduce: per-block loss partial; otherwise the elementwise loss. write_grad:
// the unscaled gradient w·(σ(x) - t).
template <typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _ghmc_fwd_kernel(const GhmcArgs p, float* partial_sum) {
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
  if (threadIdx.x == 0) partial_sum[blockIdx.x] = sum;
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

// ---------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------

void histogram(const GhmcArgs& a, const Scratch& scratch, int64_t blocks, cudaStream_t s) {
  elementwise::check_inputs(a, kLoss);
  require(a.out != nullptr, kLoss, "out (the histogram) must be set");
  require(blocks == 0 || scratch.partial_hist != nullptr, kLoss, "the workspace must be set");
  if (blocks > 0) {
    launch::dispatch_pair(a, kLoss, [&](auto in, auto tt) {
      using TIn = typename decltype(in)::type;
      _ghmc_hist_kernel<TIn, typename decltype(tt)::type>
          <<<static_cast<unsigned>(blocks), kBlock, 0, s>>>(a, scratch.partial_hist);
    });
    check_launch("_ghmc_hist_kernel");
  }
  _ghmc_hist_sum_kernel<<<1, kBlock, 0, s>>>(scratch.partial_hist, blocks, bins_of(a) + 1,
                                             static_cast<int64_t*>(a.out));
  check_launch("_ghmc_hist_sum_kernel");
}

// input: the histogram; out: the weights; aux: acc_sum.
void weights(const GhmcArgs& a, cudaStream_t s) {
  require(a.input != nullptr && a.out != nullptr, kLoss, "hist and weights must be set");
  require(!(a.opt.momentum > 0.f) || a.aux != nullptr, kLoss,
          "acc_sum must be set when momentum > 0");
  // 1 - m formed in double and rounded once, as torch rounds the Python scalar.
  const float one_minus_momentum = static_cast<float>(1.0 - static_cast<double>(a.opt.momentum));
  _ghmc_weights_kernel<<<1, kWarpSize, 0, s>>>(static_cast<const int64_t*>(a.input), bins_of(a),
                                               a.aux, a.opt.momentum, one_minus_momentum,
                                               a.mean, static_cast<float*>(a.out));
  check_launch("_ghmc_weights_kernel");
}

// The loss passes on the elementwise host skeleton (elementwise.cuh). The
// weights already carry a mean's 1/tot: the partials are summed, never divided.
void loss(const GhmcArgs& a, Pass pass, const Scratch& scratch, int64_t blocks,
          cudaStream_t s) {
  const auto grid = static_cast<unsigned>(blocks);
  require(blocks == 0 || a.operands[GhmcOperands::weights].ptr != nullptr, kLoss,
          "weights must be set");
  if (pass == Pass::Backward) {
    return elementwise::backward(a, kLoss, "_ghmc_bwd_kernel", blocks, [&](auto in, auto tt) {
      using TIn = typename decltype(in)::type;
      _ghmc_bwd_kernel<TIn, typename decltype(tt)::type><<<grid, kBlock, 0, s>>>(a);
    });
  }
  const elementwise::Reduction r{{scratch.partial_sum, nullptr}, kBlock, false, false};
  elementwise::forward(a, kLoss, "_ghmc_fwd_kernel", blocks, r, s, [&](auto in, auto tt) {
    using TIn = typename decltype(in)::type;
    _ghmc_fwd_kernel<TIn, typename decltype(tt)::type><<<grid, kBlock, 0, s>>>(
        a, scratch.partial_sum);
  });
}

}  // namespace

int64_t cuda_workspace_bytes(const GhmcArgs& a, Pass pass) {
  return launch::workspace_bytes(carve, a, pass);
}

void cuda_run(const GhmcArgs& a, Pass pass, void* stream) {
  require(a.opt.bins >= 1 && a.opt.bins <= kGhmcMaxBins, kLoss, "bins must be in 1..64");
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t blocks = launch::grid_blocks(a.numel, kBlock, kMaxBlocks);
  launch::Workspace w(a.workspace);
  const Scratch scratch = carve(w, a, pass);
  switch (pass) {
    case Pass::Histogram: return histogram(a, scratch, blocks, s);
    case Pass::Weights: return weights(a, s);
    default: return loss(a, pass, scratch, blocks, s);
  }
}

}  // namespace fused_losses

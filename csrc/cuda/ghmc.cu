// GHM-C on CUDA: kernels and their launchers.
//
// The semantics are in fused_losses/reference/ghmc.py (and csrc/cpu/ghmc_kernel.h);
// the per-element maths (bin, weight, loss) is ghmc.cuh. Three passes, all
// stream-ordered and without a host sync, so a training step stays
// capturable in a CUDA graph:
//   1. histogram: reads logits and targets (128-bit vectors, the chunk walk of
//      walk.cuh), counts slots in a shared-memory histogram per block, then
//      one global integer add per bin into hist (zeroed first). Integer adds:
//      the counts do not depend on their order;
//   2. weights: one warp turns hist (+ the momentum EMA) into per-bin weights;
//   3. loss: the elementwise skeleton (elementwise.cuh) with operands
//      (label_weight, weights): one fp32 partial per fixed chunk, summed in
//      chunk order, or the elementwise loss, and, when asked, the gradient.
// The caller may all-reduce hist across ranks between passes 1 and 2.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../launch_args.h"
#include "elementwise.cuh"
#include "elementwise_host.cuh"
#include "ghmc.cuh"
#include "launch.cuh"
#include "math.cuh"
#include "walk.cuh"

namespace fused_losses {
namespace {

using device::kWarpSize;
using device::warp_sum;
using elementwise::General;
using elementwise::Hot;
using elementwise::kBlock;
using elementwise::kChunk;
using elementwise::OpsKind;
using elementwise::Pos;
using elementwise::Scratch;
using elementwise::Walk;
using launch::check_launch;
using launch::require;
using GhmcArgs = LaunchArgs<GhmcOptions>;

constexpr const char* kLoss = Stem<GhmcOptions>::value;

// Pass 1. Each thread counts runs of equal slots in a register and adds a
// run to the block's shared histogram when its slot changes: most elements of
// a trained classifier fall in bin 0, and one shared atomic per element would
// serialise the warp on that address. Invalid elements (slot bins + 1) are
// counted too, and dropped with the rest of the table. 32-bit shared counts:
// a block sees numel / grid elements, < 2^32 for any tensor that fits a GPU.
template <class Plan, typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _ghmc_hist_kernel(const GhmcArgs a,
                                                           const Ghmc::Consts c0, const Walk w,
                                                           const Scratch s,
                                                           unsigned long long* hist) {
  using elementwise::Pack;
  using elementwise::load_pack;
  constexpr int V = elementwise::vec_width<Plan, TIn, TT>(), U = elementwise::unroll<Plan, TIn>();
  constexpr int kSub = kBlock * V;
  using Ops = typename Plan::Ops;
  constexpr bool kCols = !std::is_same<Ops, elementwise::Uniform>::value;
  __shared__ unsigned counts[kGhmcSlots];
  for (int k = threadIdx.x; k < kGhmcSlots; k += kBlock) counts[k] = 0u;
  Ghmc::Consts c = c0;
  Ghmc::block_setup(a, c0, c);  // its barrier also orders the zeroing above
  const TIn* __restrict__ xp = static_cast<const TIn*>(a.input);
  const TT* __restrict__ tp = static_cast<const TT*>(a.target);
  const float4* __restrict__ table = s.table;
  const int32_t cols = w.cols;
  const int32_t tile_c = kCols ? (kSub * U) % cols : 0;
  const int32_t sub_c = kCols ? kSub % cols : 0;
  Pos start = kCols ? elementwise::pos_of(static_cast<int64_t>(blockIdx.x) * kChunk, cols) : Pos{};
  const Pos step = kCols ? elementwise::pos_of(static_cast<int64_t>(gridDim.x) * kChunk, cols)
                         : Pos{};
  int run_slot = c.bins + 1;
  unsigned run = 0;
  auto one = [&](float x, TT t, int32_t col, int32_t r) {
    float lw = 1.f;
    if constexpr (std::is_same<Ops, elementwise::Table>::value) lw = __ldg(table + col).x;
    if constexpr (std::is_same<Ops, elementwise::Strided>::value) {
      const Pos p = elementwise::pos_after(start, r, cols);
      lw = Ghmc::load_coef(a, c, p.row, p.col).x;
    }
    const fast::Sig sg = fast::sig(x);
    const int slot = Plan::kHard ? Ghmc::slot_hard(c, sg, x, t != TT(0), lw)
                                 : Ghmc::slot(c, sg, x, device::to_float(t), lw);
    if (slot != run_slot) {
      atomicAdd(counts + run_slot, run);
      run_slot = slot;
      run = 0u;
    }
    ++run;
  };
  for (int64_t chunk = blockIdx.x; chunk < w.n_chunks; chunk += gridDim.x) {
    elementwise::walk_chunk<V, U, kCols>(
        w, chunk, threadIdx.x, start, tile_c, sub_c,
        [&](int64_t i0, int32_t r0, const int32_t(&cs)[U]) {
          Pack<TIn, V> xv[U];
          Pack<TT, V> tv[U];
#pragma unroll
          for (int u = 0; u < U; ++u) {
            xv[u] = load_pack<TIn, V>(xp + i0 + u * kSub);
            tv[u] = load_pack<TT, V>(tp + i0 + u * kSub);
          }
#pragma unroll
          for (int u = 0; u < U; ++u) {
#pragma unroll
            for (int k = 0; k < V; ++k) {
              one(device::to_float(xv[u].v[k]), tv[u].v[k], kCols ? cs[u] + k : 0,
                  r0 + u * kSub + k);
            }
          }
        },
        [&](int64_t i, int32_t r, int32_t col) { one(device::load_float(xp + i), tp[i], col, r); });
    if (kCols) start = elementwise::pos_add(start, step, cols);
  }
  atomicAdd(counts + run_slot, run);
  __syncthreads();
  for (int k = threadIdx.x; k <= c.bins; k += kBlock) {
    if (counts[k] != 0u) atomicAdd(hist + k, static_cast<unsigned long long>(counts[k]));
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

// ---------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------

// The histogram pass's plan: bool targets take the hard plan (per-class
// label_weight from a table), other targets the general one.
enum class HistPlan { HotUniform, HotTable, GeneralUniform, GeneralStrided };

HistPlan hist_plan(const GhmcArgs& a) {
  const OpsKind kind = elementwise::ops_kind<Ghmc>(a);
  if (a.target_dtype == DType::UInt8 && kind != OpsKind::Strided) {
    return kind == OpsKind::Table ? HistPlan::HotTable : HistPlan::HotUniform;
  }
  return kind == OpsKind::Uniform ? HistPlan::GeneralUniform : HistPlan::GeneralStrided;
}

Scratch carve(launch::Workspace& w, const GhmcArgs& a, Pass pass) {
  if (pass == Pass::Forward || pass == Pass::Backward) {
    return elementwise::carve<Ghmc>(w, a, pass);
  }
  Scratch s;
  if (pass == Pass::Histogram && hist_plan(a) == HistPlan::HotTable) {
    s.table = w.take<float4>(a.cols + 8);
  }
  return s;
}

Walk walk_of(const GhmcArgs& a) {
  Walk w;
  w.numel = a.numel;
  w.n_chunks = elementwise::n_chunks(a.numel);
  w.cols = static_cast<int32_t>(a.cols < (int64_t{1} << 30) ? a.cols : (int64_t{1} << 30));
  return w;
}

void histogram(const GhmcArgs& a, const Scratch& sc, cudaStream_t s) {
  elementwise::check_inputs(a, kLoss);
  require(a.out != nullptr, kLoss, "out (the histogram) must be set");
  const HistPlan plan = hist_plan(a);
  require(plan == HistPlan::HotUniform || plan == HistPlan::GeneralUniform ||
              a.cols < (int64_t{1} << 30),
          kLoss, "a broadcast label_weight needs fewer than 2^30 columns");
  require(plan != HistPlan::HotTable || sc.table != nullptr, kLoss, "the workspace must be set");
  auto* hist = static_cast<unsigned long long*>(a.out);
  if (cudaMemsetAsync(hist, 0, (a.opt.bins + 1) * sizeof(unsigned long long), s) != cudaSuccess) {
    check_launch("cudaMemsetAsync(hist)");
  }
  const Walk w = walk_of(a);
  if (w.n_chunks == 0) return;
  const Ghmc::Consts c = Ghmc::consts(a);
  if (plan == HistPlan::HotTable) {
    const auto blocks = static_cast<unsigned>((a.cols + 8 + kBlock - 1) / kBlock);
    elementwise::_class_table_kernel<Ghmc><<<blocks, kBlock, 0, s>>>(a, c, sc.table);
    check_launch("_class_table_kernel");
  }
  GhmcArgs va = a;  // the vector check reads the logits and targets only
  va.out = nullptr;
  va.reduce = true;
  auto issue = [&](auto plan_tag, auto in, auto tt) {
    using Plan = decltype(plan_tag);
    using TIn = typename decltype(in)::type;
    using TT = typename decltype(tt)::type;
    constexpr auto kernel = &_ghmc_hist_kernel<Plan, TIn, TT>;
    Walk wv = w;
    wv.vector = elementwise::vector_ok<elementwise::vec_width<Plan, TIn, TT>(), TIn, TT>(va);
    const auto grid = static_cast<unsigned>(launch::wave_grid<kernel>(w.n_chunks, kBlock));
    kernel<<<grid, kBlock, 0, s>>>(a, c, wv, sc, hist);
  };
  using elementwise::Strided;
  using elementwise::Table;
  using elementwise::Uniform;
  if (plan == HistPlan::HotUniform || plan == HistPlan::HotTable) {
    launch::dispatch_input(a.input_dtype, kLoss, [&](auto in) {
      if (plan == HistPlan::HotTable) {
        issue(Hot<0, Table>{}, in, launch::Tag<uint8_t>{});
      } else {
        issue(Hot<0, Uniform>{}, in, launch::Tag<uint8_t>{});
      }
    });
  } else {
    launch::dispatch_pair(a, kLoss, [&](auto in, auto tt) {
      using TT = typename decltype(tt)::type;
      if constexpr (elementwise::vec_width<General<Uniform>, float, TT>() > 1) {
        if (plan == HistPlan::GeneralUniform) return issue(General<Uniform>{}, in, tt);
      }
      issue(General<Strided>{}, in, tt);
    });
  }
  check_launch("_ghmc_hist_kernel");
}

// input: the histogram; out: the weights; aux: acc_sum.
void weights(const GhmcArgs& a, cudaStream_t s) {
  require(a.input != nullptr && a.out != nullptr, kLoss, "hist and weights must be set");
  require(!(a.opt.momentum > 0.f) || a.aux != nullptr, kLoss,
          "acc_sum must be set when momentum > 0");
  // 1 - m formed in double and rounded once, as torch rounds the Python scalar.
  const float one_minus_momentum = static_cast<float>(1.0 - static_cast<double>(a.opt.momentum));
  _ghmc_weights_kernel<<<1, kWarpSize, 0, s>>>(static_cast<const int64_t*>(a.input),
                                               static_cast<int>(a.opt.bins), a.aux,
                                               a.opt.momentum, one_minus_momentum, a.mean,
                                               static_cast<float*>(a.out));
  check_launch("_ghmc_weights_kernel");
}

}  // namespace

int64_t cuda_workspace_bytes(const GhmcArgs& a, Pass pass) {
  return launch::workspace_bytes(carve, a, pass);
}

void cuda_run(const GhmcArgs& a, Pass pass, void* stream) {
  require(a.opt.bins >= 1 && a.opt.bins <= kGhmcMaxBins, kLoss, "bins must be in 1..64");
  const auto s = static_cast<cudaStream_t>(stream);
  switch (pass) {
    case Pass::Histogram: {
      launch::Workspace w(a.workspace);
      return histogram(a, carve(w, a, pass), s);
    }
    case Pass::Weights: return weights(a, s);
    default:
      // The weights already carry a mean's 1/tot (Ghmc::Consts::prescaled).
      require(a.numel == 0 || a.operands[GhmcOperands::weights].ptr != nullptr, kLoss,
              "weights must be set");
      return elementwise::run<Ghmc>(a, pass, stream);
  }
}

}  // namespace fused_losses

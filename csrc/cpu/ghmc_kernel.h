// GHM-C on the CPU, written once and compiled per capability (ghmc_default.cpp,
// ghmc_avx2.cpp, ghmc_avx512.cpp). Semantics: fused_losses/reference/ghmc.py
// (mmdet's GHMC), per element:
//   g = |σ(x) - t|, valid = label_weight > 0 (all valid without label_weight)
//   bin b: edges[b] <= g < edges[b+1], edges[i] = float(i)/float(bins) in fp32,
//          edges[bins] = 1.0f + 1e-6f; a valid g outside [0, edges[bins]) (or NaN)
//          is in no bin.
//   tot = max(#valid, 1); per non-empty bin: w_b = tot / count_b, or with
//   momentum m > 0: acc_sum[b] = m·acc_sum[b] + (1-m)·count_b, w_b = tot / acc_sum[b];
//   empty bins: w_b = 0 and acc_sum[b] untouched; n = #non-empty bins; w_b /= n if n > 0.
//   loss_e = w_{b(e)} · bce(x, t) (0·bce for elements in no bin or invalid, so a
//   NaN logit still makes the loss NaN); mean = Σ loss_e / tot, sum = Σ loss_e.
//   d loss_e/dx = w_{b(e)} · (σ(x) - t)   (weights are constants).
// Three passes, each a Pass of cpu_run/cuda_run:
//   Histogram: out = int64 [bins + 1], valid elements per bin, then those in no bin;
//   Weights:   input = that histogram, out = float32 [bins] w_b (÷ tot when mean),
//              aux = acc_sum, updated in place when momentum > 0;
//   Forward/Backward: the elementwise loss with operands (label_weight, weights).
// The caller may all-reduce the histogram across ranks between the first two.
//
// The histogram and the loss passes walk the same fixed chunks of kChunk
// elements (kernel_common.h) and bin an element with the same vector code
// (ghmc_slot), so the loss pass weights every element by the bin the
// histogram counted it in. Chunks, not threads, own the partials, and they
// are combined in chunk order: results are bit-identical for any thread count.
#pragma once
#include <algorithm>
#include <vector>

#include "kernel_common.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

using GhmcArgs = LaunchArgs<GhmcOptions>;

// Per-call tables. A bin index travels as a float lane (a small exact
// integer) and becomes int32 only to address a table: "slot" bins means the
// element is in no bin, bins + 1 that it is invalid (label_weight <= 0).
struct GhmcConsts {
  alignas(64) float edges[kGhmcMaxBins + 1];    // edges[0..bins]
  alignas(64) float weights[kGhmcMaxBins + 2];  // w_b, then 0 for both extra slots
  Vec fbins, last_bin, edge_end, no_bin, invalid;
  explicit GhmcConsts(const GhmcArgs& a, int32_t bins)
      : fbins(static_cast<float>(bins)),
        last_bin(static_cast<float>(bins - 1)),
        edge_end(1.0f + 1e-6f),
        no_bin(static_cast<float>(bins)),
        invalid(static_cast<float>(bins + 1)) {
    // The reference's fp32 edges: arange(bins + 1).float() / bins, last one + 1e-6.
    for (int32_t i = 0; i < bins; ++i)
      edges[i] = static_cast<float>(i) / static_cast<float>(bins);
    edges[bins] = 1.0f + 1e-6f;
    const float* w = a.operands[GhmcOperands::weights].ptr;
    for (int32_t i = 0; i < bins + 2; ++i) weights[i] = (w && i < bins) ? w[i] : 0.f;
  }
};

// bins sizes the tables above: checked again here, whoever calls.
inline int32_t ghmc_bins(const GhmcArgs& a) {
  TORCH_CHECK(a.opt.bins >= 1 && a.opt.bins <= kGhmcMaxBins,
              "fused_losses: ghmc bins must be in [1, ", kGhmcMaxBins, "], got ", a.opt.bins);
  return static_cast<int32_t>(a.opt.bins);
}

// The slot of n lanes: their bin b (edges[b] <= g < edges[b+1] with
// g = |σ(x) - t|), bins when g is NaN or >= edges[bins], bins + 1 when invalid.
// floor(g·bins) is at most one bin away from the fp32 edges' answer (checked
// for every bins <= 64 on all floats within 2000 ulps of each edge), so one
// correction step reproduces the reference's bucketize exactly.
inline Vec ghmc_slot(const Vec& s_p, const Vec& t, const OperandRow& label_weight, int64_t col,
                     int64_t n, const GhmcConsts& c) {
  const Vec zero(0.f), one(1.f);
  Vec g = (s_p - t).abs();
  auto in_range = g < c.edge_end;  // false for NaN
  g = Vec::blendv(zero, g, in_range);
  Vec b = at::vec::minimum((g * c.fbins).floor(), c.last_bin);
  auto index = at::vec::convert_to_int_of_same_size(b);
  Vec lo = at::vec::gather<sizeof(float)>(c.edges, index);
  Vec hi = at::vec::gather<sizeof(float)>(c.edges + 1, index);
  b = b - ((g < lo) & one) + ((g >= hi) & one);
  b = Vec::blendv(c.no_bin, b, in_range);
  if (label_weight.base) b = Vec::blendv(c.invalid, b, label_weight.load(col, n) > zero);
  return b;
}

// w·bce and w·(σ(x) - t) for n lanes. A product, not a select, so a NaN logit
// makes its loss NaN even at weight 0, as the reference's w * bce does.
C10_ALWAYS_INLINE void ghmc_vec(const Vec& x, const Vec& t, const OperandRow& label_weight,
                                int64_t col, int64_t n, const GhmcConsts& c, Vec& loss,
                                Vec& grad) {
  const Vec one(1.f);
  SigmoidTerms s = sigmoid_terms(x);
  Vec slot = ghmc_slot(s.s_p, t, label_weight, col, n, c);
  Vec w = at::vec::gather<sizeof(float)>(c.weights, at::vec::convert_to_int_of_same_size(slot));
  Vec one_minus_t = one - t;
  loss = w * (t * s.log_p + one_minus_t * s.log_n).neg();
  grad = w * (one_minus_t * s.s_p - t * s.s_n);  // σ(x) - t without 1 - σ(x) cancelling
}

inline int64_t ghmc_cols(const GhmcArgs& a) {
  return operand_cols(a, a.operands[GhmcOperands::label_weight].ptr != nullptr);
}

template <typename xT, typename tT>
void histogram_typed(const GhmcArgs& a) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  const int64_t bins = ghmc_bins(a);
  const GhmcConsts c(a, static_cast<int32_t>(bins));
  const int64_t cols = ghmc_cols(a);
  const int64_t n_chunks = (a.numel + kChunk - 1) / kChunk;
  const Operand& label_weight = a.operands[GhmcOperands::label_weight];
  // Each lane counts into its own table, so the increments of one vector
  // never wait on each other when its elements share a bin (the usual case).
  const int64_t stride = bins + 2;
  alignas(64) float lane_base_arr[kLanes];
  for (int64_t k = 0; k < kLanes; ++k) lane_base_arr[k] = static_cast<float>(k * stride);
  const Vec lane_base = Vec::loadu(lane_base_arr);
  std::vector<int64_t> partial(n_chunks * (bins + 1));
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<int32_t> counts(kLanes * stride);  // a chunk's counts fit int32
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      const int64_t begin = chunk * kChunk, end = std::min(a.numel, begin + kChunk);
      std::fill(counts.begin(), counts.end(), 0);
      for_each_vector(begin, end, cols, [&](int64_t row, int64_t col, int64_t i, int64_t n) {
        Vec slot = ghmc_slot(sigmoids(load_as_float(x + i, n)).s_p, load_as_float(t + i, n),
                             OperandRow(label_weight, row), col, n, c);
        alignas(64) int32_t where[kLanes];
        at::vec::convert_to_int_of_same_size(slot + lane_base).store(where);
        if (n == kLanes) {
          for (int64_t k = 0; k < kLanes; ++k) ++counts[where[k]];
        } else {
          for (int64_t k = 0; k < n; ++k) ++counts[where[k]];
        }
      });
      int64_t* out = partial.data() + chunk * (bins + 1);
      for (int64_t b = 0; b <= bins; ++b) {  // slot bins + 1 (invalid) is not reported
        int64_t s = 0;
        for (int64_t k = 0; k < kLanes; ++k) s += counts[k * stride + b];
        out[b] = s;
      }
    }
  });
  auto* hist = static_cast<int64_t*>(a.out);
  std::fill(hist, hist + bins + 1, int64_t{0});
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk)
    for (int64_t b = 0; b <= bins; ++b) hist[b] += partial[chunk * (bins + 1) + b];
}

// Scalar and tiny (bins <= 64), in the reference's fp32 operation order:
// every product and quotient is rounded on its own, as separate torch ops are.
void ghmc_weights(const GhmcArgs& a) {
  const int32_t bins = ghmc_bins(a);
  const auto* hist = static_cast<const int64_t*>(a.input);
  float* const weights = static_cast<float*>(a.out);
  float* const acc_sum = a.aux;
  int64_t total = 0;
  for (int32_t b = 0; b <= bins; ++b) total += hist[b];
  const float tot = static_cast<float>(std::max<int64_t>(total, 1));
  const bool ema = a.opt.momentum > 0.f && acc_sum != nullptr;
  // 1 - m formed in double and rounded once, as torch rounds the Python scalar;
  // m itself arrives as fp32, so a non-dyadic m (0.6) can be an ulp off torch's.
  const float keep = a.opt.momentum;
  const float take = static_cast<float>(1.0 - static_cast<double>(a.opt.momentum));
  int32_t nonempty = 0;
  for (int32_t b = 0; b < bins; ++b) {
    const float count = static_cast<float>(hist[b]);
    weights[b] = 0.f;
    if (!(count > 0.f)) continue;  // empty bin: weight 0, acc_sum untouched
    ++nonempty;
    float denom = count;
    if (ema) {
      denom = mul_unfused(keep, acc_sum[b]) + mul_unfused(take, count);
      acc_sum[b] = denom;
    }
    weights[b] = tot / denom;
  }
  const float n = static_cast<float>(std::max<int32_t>(nonempty, 1));
  for (int32_t b = 0; b < bins; ++b) {
    float w = weights[b] / n;
    if (a.mean) w = w / tot;
    weights[b] = w;
  }
}

// The elementwise-driver view of a loss pass (kernel_common.h). The weights
// carry the mean's 1/tot, so the gradient needs no scale and both reductions
// are a plain sum.
struct Ghmc {
  static constexpr bool kScaleGrad = false;
  static constexpr bool kHot = false;
  const Operand label_weight;  // a copy: the loop then keeps it in registers
  const GhmcConsts c;
  const Vec grad_scale{1.f};
  const int64_t cols;
  const bool count_kept = false, mean = false;
  explicit Ghmc(const GhmcArgs& a)
      : label_weight(a.operands[GhmcOperands::label_weight]), c(a, ghmc_bins(a)),
        cols(ghmc_cols(a)) {}
  // Inlined, with ghmc_vec, into the driver's loops: no call per vector, and
  // the backward drops the loss maths it does not use.
  C10_ALWAYS_INLINE void operator()(int64_t row, int64_t col, const Vec& x, const Vec& t,
                                    int64_t n, Vec& loss, Vec& grad, Vec&) const {
    ghmc_vec(x, t, OperandRow(label_weight, row), col, n, c, loss, grad);
  }
};

void run(const GhmcArgs& a, Pass pass) {
  switch (pass) {
    case Pass::Histogram:
      return dispatch_pair(a.input_dtype, a.target_dtype, [&](auto xs, auto ts) {
        histogram_typed<decltype(xs), decltype(ts)>(a);
      });
    case Pass::Weights: return ghmc_weights(a);
    default: return run_elementwise(a, pass, Ghmc(a));
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses

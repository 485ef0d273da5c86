// GHM-C on the CPU, written once and compiled per capability (ghmc_default.cpp,
// ghmc_avx2.cpp, ghmc_avx512.cpp). Semantics: ../ghmc_args.h and
// fused_losses/reference/ghmc.py.
//
// The histogram and the loss passes walk the same fixed chunks of kChunk
// elements as focal_bce and bin an element with the same vector code
// (ghmc_slot), so the loss pass weights every element by the bin the
// histogram counted it in. Chunks, not threads, own the partials, and they
// are combined in chunk order: results are bit-identical for any thread count.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../ghmc_args.h"
#include "kernel_common.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

// Per-call tables. A bin index travels as a float lane (a small exact
// integer) and becomes int32 only to address a table: "slot" bins means the
// element is in no bin, bins + 1 that it is invalid (label_weight <= 0).
struct GhmcConsts {
  alignas(64) float edges[kGhmcMaxBins + 1];    // edges[0..bins]
  alignas(64) float weights[kGhmcMaxBins + 2];  // w_b, then 0 for both extra slots
  Vec fbins, last_bin, edge_end, no_bin, invalid;
  explicit GhmcConsts(const GhmcArgs& a)
      : fbins(static_cast<float>(a.bins)),
        last_bin(static_cast<float>(a.bins - 1)),
        edge_end(1.0f + 1e-6f),
        no_bin(static_cast<float>(a.bins)),
        invalid(static_cast<float>(a.bins + 1)) {
    TORCH_CHECK(a.bins >= 1 && a.bins <= kGhmcMaxBins, "fused_losses: ghmc bins must be in [1, ",
                kGhmcMaxBins, "], got ", a.bins);
    // The reference's fp32 edges: arange(bins + 1).float() / bins, last one + 1e-6.
    for (int32_t i = 0; i < a.bins; ++i)
      edges[i] = static_cast<float>(i) / static_cast<float>(a.bins);
    edges[a.bins] = 1.0f + 1e-6f;
    for (int32_t i = 0; i < a.bins + 2; ++i)
      weights[i] = (a.weights && i < a.bins) ? a.weights[i] : 0.f;
  }
};

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
inline void ghmc_vec(const Vec& x, const Vec& t, const OperandRow& label_weight, int64_t col,
                     int64_t n, const GhmcConsts& c, Vec& loss, Vec& grad) {
  const Vec one(1.f);
  SigmoidTerms s = sigmoid_terms(x);
  Vec slot = ghmc_slot(s.s_p, t, label_weight, col, n, c);
  Vec w = at::vec::gather<sizeof(float)>(c.weights, at::vec::convert_to_int_of_same_size(slot));
  Vec one_minus_t = one - t;
  loss = w * (t * s.log_p + one_minus_t * s.log_n).neg();
  grad = w * (one_minus_t * s.s_p - t * s.s_n);  // σ(x) - t without 1 - σ(x) cancelling
}

// Without label_weight rows don't matter: one long row gives fewer partial vectors.
inline int64_t ghmc_cols(const GhmcArgs& a) {
  return a.label_weight.ptr ? a.cols : std::max<int64_t>(a.numel, 1);
}

inline int64_t ghmc_chunks(const GhmcArgs& a) { return (a.numel + kChunk - 1) / kChunk; }

template <typename xT, typename tT>
void histogram_typed(const GhmcArgs& a) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  const GhmcConsts c(a);
  const int64_t bins = a.bins;
  const int64_t cols = ghmc_cols(a);
  const int64_t n_chunks = ghmc_chunks(a);
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
                             OperandRow(a.label_weight, row), col, n, c);
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
  std::fill(a.hist, a.hist + bins + 1, int64_t{0});
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk)
    for (int64_t b = 0; b <= bins; ++b) a.hist[b] += partial[chunk * (bins + 1) + b];
}

template <typename xT, typename tT>
void forward_typed(const GhmcArgs& a) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  auto* out = static_cast<xT*>(a.out);
  auto* grad_out = static_cast<xT*>(a.grad);
  const GhmcConsts c(a);
  const int64_t cols = ghmc_cols(a);
  const int64_t n_chunks = ghmc_chunks(a);
  std::vector<float> psum(a.reduce ? n_chunks : 0);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      const int64_t begin = chunk * kChunk, end = std::min(a.numel, begin + kChunk);
      Vec acc(0.f);
      for_each_vector(begin, end, cols, [&](int64_t row, int64_t col, int64_t i, int64_t n) {
        Vec loss, grad;
        ghmc_vec(load_as_float(x + i, n), load_as_float(t + i, n),
                 OperandRow(a.label_weight, row), col, n, c, loss, grad);
        if (!a.reduce) {
          store_as(out + i, loss, n);
          return;
        }
        acc = acc + Vec::set(Vec(0.f), loss, n);
        if (a.write_grad) store_as(grad_out + i, grad, n);
      });
      if (a.reduce) psum[chunk] = lane_sum(acc);
    }
  });
  if (!a.reduce) return;
  // The weights already hold 1/tot for a mean: both reductions are a plain sum.
  double total = 0.0;
  for (int64_t k = 0; k < n_chunks; ++k) total += psum[k];
  out[0] = static_cast<xT>(static_cast<float>(total));
}

template <typename xT, typename tT>
void backward_typed(const GhmcArgs& a) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  const auto* g_out = static_cast<const xT*>(a.grad_output);
  auto* g_in = static_cast<xT*>(a.grad);
  const GhmcConsts c(a);
  const int64_t cols = ghmc_cols(a);
  const int64_t n_chunks = ghmc_chunks(a);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    const int64_t begin = c0 * kChunk, end = std::min(a.numel, c1 * kChunk);
    for_each_vector(begin, end, cols, [&](int64_t row, int64_t col, int64_t i, int64_t n) {
      Vec loss, grad;
      ghmc_vec(load_as_float(x + i, n), load_as_float(t + i, n),
               OperandRow(a.label_weight, row), col, n, c, loss, grad);
      store_as(g_in + i, grad * load_as_float(g_out + i, n), n);
    });
  });
}

void ghmc_histogram(const GhmcArgs& a) {
  dispatch_input(a.input_dtype, [&](auto xs) {
    dispatch_target(a.target_dtype, [&](auto ts) {
      histogram_typed<decltype(xs), decltype(ts)>(a);
    });
  });
}

// Scalar and tiny (bins <= 64), in the reference's fp32 operation order:
// every product and quotient is rounded on its own, as separate torch ops are.
void ghmc_weights(const GhmcArgs& a) {
  const int32_t bins = a.bins;
  int64_t total = 0;
  for (int32_t b = 0; b <= bins; ++b) total += a.hist[b];
  const float tot = static_cast<float>(std::max<int64_t>(total, 1));
  const bool ema = a.momentum > 0.f && a.acc_sum != nullptr;
  const float keep = a.momentum, take = a.one_minus_momentum;
  int32_t nonempty = 0;
  for (int32_t b = 0; b < bins; ++b) {
    const float count = static_cast<float>(a.hist[b]);
    a.weights[b] = 0.f;
    if (!(count > 0.f)) continue;  // empty bin: weight 0, acc_sum untouched
    ++nonempty;
    float denom = count;
    if (ema) {
      denom = mul_unfused(keep, a.acc_sum[b]) + mul_unfused(take, count);
      a.acc_sum[b] = denom;
    }
    a.weights[b] = tot / denom;
  }
  const float n = static_cast<float>(std::max<int32_t>(nonempty, 1));
  for (int32_t b = 0; b < bins; ++b) {
    float w = a.weights[b] / n;
    if (a.mean) w = w / tot;
    a.weights[b] = w;
  }
}

void ghmc_forward(const GhmcArgs& a) {
  dispatch_pair(a.input_dtype, a.target_dtype,
                [&](auto xs, auto ts) { forward_typed<decltype(xs), decltype(ts)>(a); });
}

void ghmc_backward(const GhmcArgs& a) {
  dispatch_pair(a.input_dtype, a.target_dtype,
                [&](auto xs, auto ts) { backward_typed<decltype(xs), decltype(ts)>(a); });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses

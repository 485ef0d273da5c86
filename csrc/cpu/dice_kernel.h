// Fused multilabel soft dice on the CPU, written once and compiled per
// capability (dice_default.cpp, dice_avx2.cpp, dice_avx512.cpp).
//
// Logits [N, C, S] (S = product of the spatial dims, 1 for [N, C]; LaunchArgs
// rows = N·S, inner = S), per class c summing over n and s (see
// fused_losses/reference/dice.py), with p̃ = (1-σ(x))^α·σ(x), k = square ? 2 : 1:
//   sums (aux) [3, C] = Σ p̃·t, Σ p̃ᵏ, Σ tᵏ   (fp32)
//   dice_c = 1 - (2·S_pt + smooth) / (S_p + S_t + smooth)
//   loss = mean_c / Σ_c dice_c (reduce) or dice_c written to out[C] (none).
// Backward, with g_c = grad_output[c or 0] (÷ C for a mean), num = 2S_pt + s,
// den = S_p + S_t + s:
//   d loss/dx = g_c·(-2t/den + k·num·p̃^(k-1)/den²)·p̃·(σ(-x) - α·σ(x)).
//
// Forward, a column reduction over fixed work items; items, not threads, own
// the partial sums, which are combined in item order (in double), so the result
// is bit-identical for any thread count:
//   [N, C] (S = 1): an item is a block of rows, vectorised along the columns,
//                   its partial a [3, C] vector;
//   [N, C, S]:      an item is one (n, c) segment piece of at most kChunk
//                   spatial elements, vectorised along s, its partial 3 floats.
// Backward: per-class coefficients once, then one elementwise pass.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernel_common.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

using DiceArgs = LaunchArgs<DiceOptions>;

// N of [N, C, S] (0 when S = 0: there is nothing to visit then).
inline int64_t dice_batch(const DiceArgs& a) { return a.inner ? a.rows / a.inner : 0; }

struct DiceTerms {
  Vec pt, pk, tk, dpt;  // p̃, p̃ᵏ, tᵏ, d p̃/dx
};

inline DiceTerms dice_terms(const Vec& x, const Vec& t, const Vec& alpha, bool alpha_zero,
                            bool square) {
  AdjustedSigmoid a = adjusted_sigmoid(x, alpha, alpha_zero);
  if (square) return {a.pt, a.pt * a.pt, t * t, a.dpt};
  return {a.pt, a.pt, t, a.dpt};
}

// Per-item partials: sums of p̃·t, p̃ᵏ, tᵏ for the columns [col, col + n) of row r.
template <typename xT, typename tT>
void forward_rows(const DiceArgs& a, const xT* x, const tT* t, std::vector<double>& sums) {
  const int64_t C = a.cols;
  const Vec alpha(a.opt.alpha);
  const int64_t rows_per_item = std::max<int64_t>(1, kChunk / C);
  const int64_t n_items = (a.rows + rows_per_item - 1) / rows_per_item;
  std::vector<float> part(n_items * 3 * C, 0.f);
  at::parallel_for(0, n_items, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t item = i0; item < i1; ++item) {
      float* acc = part.data() + item * 3 * C;
      const int64_t r_end = std::min(a.rows, (item + 1) * rows_per_item);
      for (int64_t r = item * rows_per_item; r < r_end; ++r) {
        for (int64_t col = 0; col < C; col += kLanes) {
          const int64_t n = std::min(kLanes, C - col), i = r * C + col;
          Vec tv = load_as_float(t + i, n);
          DiceTerms d = dice_terms(load_as_float(x + i, n), tv, alpha, a.opt.alpha == 0.f,
                                   a.opt.square_denominator);
          (Vec::loadu(acc + col, n) + d.pt * tv).store(acc + col, n);
          (Vec::loadu(acc + C + col, n) + d.pk).store(acc + C + col, n);
          (Vec::loadu(acc + 2 * C + col, n) + d.tk).store(acc + 2 * C + col, n);
        }
      }
    }
  });
  for (int64_t item = 0; item < n_items; ++item)
    for (int64_t q = 0; q < 3 * C; ++q) sums[q] += part[item * 3 * C + q];
}

template <typename xT, typename tT>
void forward_spatial(const DiceArgs& a, const xT* x, const tT* t, std::vector<double>& sums) {
  const int64_t C = a.cols, S = a.inner;
  const Vec alpha(a.opt.alpha), zero(0.f);
  const int64_t pieces = (S + kChunk - 1) / kChunk;
  const int64_t n_items = dice_batch(a) * C * pieces;
  std::vector<float> part(n_items * 3);
  const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(1, std::min(S, kChunk)));
  at::parallel_for(0, n_items, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t segment = item / pieces, piece = item - segment * pieces;
      const int64_t base = segment * S;
      const int64_t s_end = std::min(S, (piece + 1) * kChunk);
      Vec acc_pt(0.f), acc_p(0.f), acc_t(0.f);
      for (int64_t s = piece * kChunk; s < s_end; s += kLanes) {
        const int64_t n = std::min(kLanes, s_end - s);
        Vec tv = load_as_float(t + base + s, n);
        DiceTerms d = dice_terms(load_as_float(x + base + s, n), tv, alpha, a.opt.alpha == 0.f,
                                 a.opt.square_denominator);
        acc_pt = acc_pt + Vec::set(zero, d.pt * tv, n);
        acc_p = acc_p + Vec::set(zero, d.pk, n);
        acc_t = acc_t + Vec::set(zero, d.tk, n);
      }
      part[item * 3] = lane_sum(acc_pt);
      part[item * 3 + 1] = lane_sum(acc_p);
      part[item * 3 + 2] = lane_sum(acc_t);
    }
  });
  for (int64_t item = 0; item < n_items; ++item) {
    const int64_t c = (item / pieces) % C;
    for (int64_t q = 0; q < 3; ++q) sums[q * C + c] += part[item * 3 + q];
  }
}

template <typename xT, typename tT>
void forward_typed(const DiceArgs& a) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  auto* out = static_cast<xT*>(a.out);
  const int64_t C = a.cols;
  std::vector<double> sums(3 * C, 0.0);
  if (C > 0 && a.rows > 0 && a.inner > 0) {
    if (a.inner == 1) {
      forward_rows(a, x, t, sums);
    } else {
      forward_spatial(a, x, t, sums);
    }
  }
  double total = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    const float s_pt = static_cast<float>(sums[c]), s_p = static_cast<float>(sums[C + c]);
    const float s_t = static_cast<float>(sums[2 * C + c]);
    a.aux[c] = s_pt;
    a.aux[C + c] = s_p;
    a.aux[2 * C + c] = s_t;
    // fp32, as the reference forms the ratio from its fp32 sums.
    const float dice = 1.f - (2.f * s_pt + a.opt.smooth) / (s_p + s_t + a.opt.smooth);
    if (!a.reduce) out[c] = static_cast<xT>(dice);
    total += dice;
  }
  if (a.reduce) {
    if (a.mean) total = total / static_cast<double>(C);  // C = 0: NaN, as torch's mean
    out[0] = static_cast<xT>(static_cast<float>(total));
  }
}

template <typename xT, typename tT>
void backward_typed(const DiceArgs& a) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  auto* g_in = static_cast<xT*>(a.grad);
  const int64_t C = a.cols, S = a.inner;
  // d loss/dx = (coef_t·t + coef_p·p̃^(k-1))·d p̃/dx; k = 2 folds into coef_p.
  const bool square = a.opt.square_denominator;
  const float smooth = a.opt.smooth;
  const auto* grad_output = static_cast<const float*>(a.grad_output);
  const int64_t g_stride = a.reduce ? 0 : 1;
  const float g_scale = (a.mean && C) ? 1.f / static_cast<float>(C) : 1.f;
  std::vector<float> coef_t(C), coef_p(C);
  for (int64_t c = 0; c < C; ++c) {
    const float g = grad_output[c * g_stride] * g_scale;
    const float num = 2.f * a.aux[c] + smooth;
    const float den = a.aux[C + c] + a.aux[2 * C + c] + smooth;
    coef_t[c] = -2.f * g / den;
    coef_p[c] = (square ? 2.f : 1.f) * g * num / (den * den);
  }
  const Vec alpha(a.opt.alpha);
  auto grad_of = [&](int64_t i, int64_t n, const Vec& ct, const Vec& cp) {
    Vec tv = load_as_float(t + i, n);
    DiceTerms d = dice_terms(load_as_float(x + i, n), tv, alpha, a.opt.alpha == 0.f, square);
    Vec scale = square ? cp * d.pt : cp;
    store_as(g_in + i, (ct * tv + scale) * d.dpt, n);
  };
  if (S == 1) {
    const int64_t rows_per_item = std::max<int64_t>(1, kChunk / std::max<int64_t>(C, 1));
    at::parallel_for(0, a.rows, rows_per_item, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t col = 0; col < C; col += kLanes) {
          const int64_t n = std::min(kLanes, C - col);
          grad_of(r * C + col, n, Vec::loadu(coef_t.data() + col, n),
                  Vec::loadu(coef_p.data() + col, n));
        }
    });
    return;
  }
  const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(S, 1));
  at::parallel_for(0, dice_batch(a) * C, grain, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t c = j % C;
      const Vec ct(coef_t[c]), cp(coef_p[c]);
      for (int64_t s = 0; s < S; s += kLanes) grad_of(j * S + s, std::min(kLanes, S - s), ct, cp);
    }
  });
}

void run(const DiceArgs& a, Pass pass) {
  dispatch_pair(a.input_dtype, a.target_dtype, [&](auto xs, auto ts) {
    using xT = decltype(xs);
    using tT = decltype(ts);
    pass == Pass::Forward ? forward_typed<xT, tT>(a) : backward_typed<xT, tT>(a);
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses

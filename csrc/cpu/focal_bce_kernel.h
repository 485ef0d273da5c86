// Fused focal BCE on the CPU, written once and compiled per capability
// (focal_bce_default.cpp, focal_bce_avx2.cpp, focal_bce_avx512.cpp).
//
// One pass over fixed chunks of kChunk elements: each chunk reads logits and
// targets once and writes its loss partial (and the gradient) or the
// elementwise loss. Chunks, not threads, own the partials, and they are summed
// in chunk order, so the result is bit-identical for any thread count.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../focal_bce_args.h"
#include "kernel_common.h"

namespace fused_losses {
namespace cpu {
namespace CPU_CAPABILITY {

// Per-call constants, broadcast once.
struct FocalConsts {
  Vec gamma, smooth_scale, smooth_shift, ignore, alpha_value, grad_scale;
  int int_gamma;  // >= 0 when γ ∈ {1, 2, 3, 4}: powers by multiplication
  bool hard, gamma_zero, has_ignore, has_alpha_value;
  explicit FocalConsts(const FocalBceArgs& a)
      : gamma(a.gamma), smooth_scale(1.f - a.smoothing), smooth_shift(0.5f * a.smoothing),
        ignore(a.ignore_value), alpha_value(a.alpha_value), grad_scale(a.grad_scale),
        int_gamma(-1), hard(a.hard), gamma_zero(a.gamma == 0.f), has_ignore(a.has_ignore),
        has_alpha_value(a.has_alpha_value) {
    for (int k = 1; k <= 4; ++k)
      if (a.gamma == static_cast<float>(k)) int_gamma = k;
  }
};

struct RowOperands {
  OperandRow alpha, pos_weight, weight;
  RowOperands(const FocalBceArgs& a, int64_t row)
      : alpha(a.alpha, row), pos_weight(a.pos_weight, row), weight(a.weight, row) {}
};

// Loss and d loss/dx for n lanes at columns [col, col + n); 0 where ignored.
inline void focal_bce_vec(const Vec& x, Vec t, const RowOperands& ops, int64_t col, int64_t n,
                          const FocalConsts& c, Vec& loss, Vec& grad, Vec& keep) {
  const Vec zero(0.f), one(1.f);
  Vec ignored = zero;  // lane mask
  if (c.has_ignore) {
    ignored = t == c.ignore;
    t = Vec::blendv(t, zero, ignored);
  }
  keep = Vec::blendv(one, zero, ignored);
  t = t * c.smooth_scale + c.smooth_shift;
  SigmoidTerms s = sigmoid_terms(x);
  Vec pos_t = ops.pos_weight.base ? t * ops.pos_weight.load(col, n) : t;
  loss = (pos_t * s.log_p + (one - t) * s.log_n).neg();
  grad = (one - t) * s.s_p - pos_t * s.s_n;
  if (!c.gamma_zero) {
    Vec f, r;
    focal_factor(s, t, c.gamma, c.int_gamma, c.hard || all_hard(t), f, r);
    grad = f * (c.gamma * (one - t - t) * r * loss + grad);
    loss = f * loss;
  }
  if (ops.alpha.base || c.has_alpha_value) {
    Vec alpha = ops.alpha.base ? ops.alpha.load(col, n) : c.alpha_value;
    Vec alpha_t = alpha * t + (one - alpha) * (one - t);
    loss = loss * alpha_t;
    grad = grad * alpha_t;
  }
  if (ops.weight.base) {
    Vec w = ops.weight.load(col, n);
    loss = loss * w;
    grad = grad * w;
  }
  if (c.has_ignore) {  // a select, not a product: an ignored NaN logit contributes 0
    loss = Vec::blendv(loss, zero, ignored);
    grad = Vec::blendv(grad, zero, ignored);
  }
}

inline bool has_operand(const FocalBceArgs& a) {
  return a.alpha.ptr || a.pos_weight.ptr || a.weight.ptr;
}

template <typename xT, typename tT>
void forward_typed(const FocalBceArgs& a) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  auto* out = static_cast<xT*>(a.out);
  auto* grad_out = static_cast<xT*>(a.grad);
  const FocalConsts c(a);
  // Without operands rows don't matter: one long row gives fewer partial vectors.
  const int64_t cols = has_operand(a) ? a.cols : std::max<int64_t>(a.numel, 1);
  const int64_t n_chunks = (a.numel + kChunk - 1) / kChunk;
  std::vector<float> psum(a.reduce ? n_chunks : 0);
  std::vector<int64_t> pcnt(a.reduce ? n_chunks : 0);
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      const int64_t begin = chunk * kChunk, end = std::min(a.numel, begin + kChunk);
      Vec acc(0.f), cnt(0.f);
      for_each_vector(begin, end, cols, [&](int64_t row, int64_t col, int64_t i, int64_t n) {
        Vec loss, grad, keep;
        focal_bce_vec(load_as_float(x + i, n), load_as_float(t + i, n), RowOperands(a, row),
                      col, n, c, loss, grad, keep);
        if (!a.reduce) {
          store_as(out + i, loss, n);
          return;
        }
        acc = acc + Vec::set(Vec(0.f), loss, n);
        if (c.has_ignore) cnt = cnt + Vec::set(Vec(0.f), keep, n);
        if (a.write_grad) store_as(grad_out + i, grad * c.grad_scale, n);
      });
      if (a.reduce) {
        psum[chunk] = lane_sum(acc);
        pcnt[chunk] = c.has_ignore ? static_cast<int64_t>(lane_sum(cnt)) : end - begin;
      }
    }
  });
  if (!a.reduce) return;
  double total = 0.0;
  int64_t count = 0;
  for (int64_t k = 0; k < n_chunks; ++k) {
    total += psum[k];
    count += pcnt[k];
  }
  float scale = 1.f;
  if (a.mean) {
    double denom = a.has_ignore ? std::max<int64_t>(count, 1) : count;
    if (a.has_ignore) scale = static_cast<float>(1.0 / denom);
    total = total / denom;
  }
  out[0] = static_cast<xT>(static_cast<float>(total));
  *a.scale = scale;
}

template <typename xT, typename tT>
void backward_typed(const FocalBceArgs& a) {
  const auto* x = static_cast<const xT*>(a.input);
  const auto* t = static_cast<const tT*>(a.target);
  const auto* g_out = static_cast<const xT*>(a.grad_output);
  auto* g_in = static_cast<xT*>(a.grad);
  const FocalConsts c(a);
  const int64_t cols = has_operand(a) ? a.cols : std::max<int64_t>(a.numel, 1);
  const int64_t n_chunks = (a.numel + kChunk - 1) / kChunk;
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    const int64_t begin = c0 * kChunk, end = std::min(a.numel, c1 * kChunk);
    for_each_vector(begin, end, cols, [&](int64_t row, int64_t col, int64_t i, int64_t n) {
      Vec loss, grad, keep;
      focal_bce_vec(load_as_float(x + i, n), load_as_float(t + i, n), RowOperands(a, row), col,
                    n, c, loss, grad, keep);
      store_as(g_in + i, grad * load_as_float(g_out + i, n), n);
    });
  });
}

void focal_bce_forward(const FocalBceArgs& a) {
  dispatch_pair(a.input_dtype, a.target_dtype,
                [&](auto xs, auto ts) { forward_typed<decltype(xs), decltype(ts)>(a); });
}

void focal_bce_backward(const FocalBceArgs& a) {
  dispatch_pair(a.input_dtype, a.target_dtype,
                [&](auto xs, auto ts) { backward_typed<decltype(xs), decltype(ts)>(a); });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace fused_losses

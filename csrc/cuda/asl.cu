// Fused asymmetric loss (ASL) on CUDA: kernels and their launchers.
//
// The same maths as fused_losses/triton/asl.py (formula and subgradients in
// fused_losses/reference/asl.py). Forward with a reduction: one pass reads
// logits and targets once, writes one fp32 loss partial per block and, when
// asked, d(loss)/d(input) already multiplied by grad_scale; a single-block
// kernel sums the partials in a fixed order. Forward without reduction writes
// the loss; its backward recomputes the gradient in one pass.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../asl_args.h"
#include "dispatch.cuh"
#include "math.cuh"

namespace fused_losses {
namespace {

using device::block_sum;
using device::load_float;
using device::load_operand;
using device::store_float;
using launch::check_launch;
using launch::dispatch_input;
using launch::dispatch_target;

constexpr const char* kLoss = "asl";  // names the kernel in errors
constexpr int kBlock = 256;
// A constant (not a multiple of the SM count) so the partition, and with it
// the summation order and the result's bits, depend on numel alone.
constexpr int64_t kMaxBlocks = 4096;
static_assert(kBlock % device::kWarpSize == 0 && kBlock <= 1024, "block_sum needs whole warps");

// Grid-uniform launch parameters: branching on them never diverges a warp.
struct Params {
  const void* input;
  const void* target;
  const void* grad_output;
  Operand weight;
  int64_t numel;
  int64_t cols;
  float gamma_pos, gamma_neg, clip, log_eps, grad_scale;
  bool clip_on, has_eps, hard, focal, detach, reduce, write_grad;
  void* out;
  void* grad;
  float* partial_sum;
  int32_t* partial_count;
};

struct Element {
  float loss;
  float grad;  // d loss/dx
};

// The eps clamp on a log-probability and its derivative: the derivative passes
// at equality (torch's clamp rule); the `<` keeps a NaN as NaN.
__device__ __forceinline__ void clamp_log(const Params& p, float* log_v, float* dlog_v) {
  if (!p.has_eps) return;
  if (*log_v < p.log_eps) {
    *log_v = p.log_eps;
    *dlog_v = 0.f;
  }
}

// Loss and gradient of one element before the weight: the CUDA twin of asl_terms.
__device__ __forceinline__ Element asl_terms(const Params& p, float x, float t) {
  const float kNegInf = -__int_as_float(0x7f800000);  // -inf (no constexpr intrinsic)
  float log_p, log_n, s_p, s_n;
  device::sigmoid_terms(x, &log_p, &log_n, &s_p, &s_n);
  float log_pm = log_n, dlog_pm = -s_p, log_d = log_p, dlog_d = s_n;
  bool live_d = true;
  if (p.clip_on) {
    const float diff = s_p - p.clip;
    const float d = diff < 0.f ? 0.f : diff;  // d = 1 - p_m; NaN stays NaN
    const bool small = d < 0.5f;
    // log p_m: log1p(-d) while p_m > 1/2, else log(σ(-x) + clip): no cancellation.
    const float pm = small ? 1.f - d : s_n + p.clip;
    log_pm = small ? log1pf(-d) : logf(s_n + p.clip);
    const float sp_sn = s_p * s_n;
    dlog_pm = s_p >= p.clip ? -sp_sn / pm : 0.f;
    live_d = d > 0.f;
    log_d = live_d ? logf(d) : kNegInf;
    dlog_d = live_d ? sp_sn / d : 0.f;
  }
  float lp = log_p, dlp = s_n;
  clamp_log(p, &lp, &dlp);
  clamp_log(p, &log_pm, &dlog_pm);
  float loss = -(t * lp + (1.f - t) * log_pm);
  float grad = -(t * dlp + (1.f - t) * dlog_pm);
  if (!p.focal) return Element{loss, grad};
  const float gamma = p.gamma_pos * t + p.gamma_neg * (1.f - t);
  float log_q, dlog_q;
  if (p.hard) {
    const bool one = t > 0.5f;
    log_q = one ? log_n : log_d;
    dlog_q = one ? -s_p : dlog_d;
  } else {
    const bool live = t > 0.f || live_d;
    if (live) {
      // 1 - p_t = t·σ(-x) + (1-t)·d, summed in the log domain.
      log_q = device::log_add_exp(logf(t) + log_n, log1pf(-t) + log_d);
      const float coef = (1.f - t) * (live_d ? 1.f : 0.f) - t;
      dlog_q = coef * expf(log_p + log_n - log_q);
    } else {
      log_q = kNegInf;
      dlog_q = 0.f;
    }
  }
  float f;
  if (log_q > kNegInf) {
    f = expf(gamma * log_q);
  } else {  // 1 - p_t = 0: 0^γ, with 0^0 = 1; the derivative is taken as 0
    f = gamma == 0.f ? 1.f : 0.f;
    dlog_q = 0.f;
  }
  grad *= f;
  if (!p.detach) grad += gamma * f * dlog_q * loss;
  loss *= f;
  return Element{loss, grad};
}

template <typename TIn, typename TT>
__device__ __forceinline__ Element asl_element(const Params& p, int64_t i, int64_t row,
                                               int64_t col) {
  const float x = load_float(static_cast<const TIn*>(p.input) + i);
  const float t = load_float(static_cast<const TT*>(p.target) + i);
  Element e = asl_terms(p, x, t);
  if (p.weight.ptr != nullptr) {
    const float w = load_operand(p.weight, row, col);
    e.loss *= w;
    e.grad *= w;
  }
  return e;
}

// Grid-stride loop over all elements; (row, col) only tracked with a weight.
template <typename TIn, typename TT, typename Body>
__device__ __forceinline__ void for_each_element(const Params& p, Body&& body) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool need_rc = p.weight.ptr != nullptr;
  device::RowCol rc;
  if (need_rc) rc.start(i, step, p.cols);
  for (; i < p.numel; i += step) {
    body(i, asl_element<TIn, TT>(p, i, rc.row, rc.col));
    if (need_rc) rc.advance(p.cols);
  }
}

template <typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _asl_fwd_kernel(const Params p) {
  TIn* const out = static_cast<TIn*>(p.out);
  TIn* const grad = static_cast<TIn*>(p.grad);
  float sum = 0.f;
  for_each_element<TIn, TT>(p, [&](int64_t i, const Element& e) {
    if (!p.reduce) {
      store_float(out + i, e.loss);
      return;
    }
    sum += e.loss;
    if (p.write_grad) store_float(grad + i, e.grad * p.grad_scale);
  });
  if (!p.reduce) return;  // grid-uniform: every thread or none reaches block_sum
  sum = block_sum(sum);
  if (threadIdx.x == 0) p.partial_sum[blockIdx.x] = sum;
}

template <typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _asl_bwd_kernel(const Params p) {
  const TIn* const grad_output = static_cast<const TIn*>(p.grad_output);
  TIn* const grad_input = static_cast<TIn*>(p.grad);
  for_each_element<TIn, TT>(p, [&](int64_t i, const Element& e) {
    store_float(grad_input + i, e.grad * load_float(grad_output + i));
  });
}

// One block: out = Σ partials, ÷ numel for a mean (0/0 = NaN for an empty
// mean, as torch gives); scale = 1.
template <typename TOut>
__global__ void __launch_bounds__(kBlock) _asl_sum_partials_kernel(
    const float* partial_sum, int64_t n_partials, int64_t numel, TOut* out, float* scale,
    bool mean) {
  float total = 0.f;
  for (int64_t j = threadIdx.x; j < n_partials; j += blockDim.x) total += partial_sum[j];
  total = block_sum(total);
  if (threadIdx.x != 0) return;
  if (mean) total = total / static_cast<float>(numel);
  store_float(out, total);
  *scale = 1.f;
}

void require(bool ok, const char* message) {
  if (!ok) throw std::invalid_argument(std::string("fused_losses: asl CUDA: ") + message);
}

Params make_params(const AslArgs& a) {
  require(a.numel >= 0, "numel must be >= 0");
  require(a.numel == 0 || a.cols >= 1, "cols must be >= 1 for a non-empty input");
  require(a.numel == 0 || (a.input != nullptr && a.target != nullptr),
          "input and target must be set");
  Params p{};
  p.input = a.input;
  p.target = a.target;
  p.grad_output = a.grad_output;
  p.weight = a.weight;
  p.numel = a.numel;
  p.cols = std::max<int64_t>(a.cols, 1);
  p.gamma_pos = a.gamma_pos;
  p.gamma_neg = a.gamma_neg;
  p.clip = a.clip;
  p.log_eps = a.log_eps;
  p.grad_scale = a.grad_scale;
  p.clip_on = a.clip > 0.f;
  p.has_eps = a.has_eps;
  p.hard = a.hard;
  p.focal = a.focal;
  p.detach = a.detach;
  p.reduce = a.reduce;
  p.write_grad = a.write_grad;
  p.out = a.out;
  p.grad = a.grad;
  p.partial_sum = a.partial_sum;
  p.partial_count = a.partial_count;
  return p;
}

}  // namespace

int64_t asl_cuda_num_partials(int64_t numel) {
  if (numel <= 0) return 0;
  return std::min<int64_t>((numel + kBlock - 1) / kBlock, kMaxBlocks);
}

void asl_cuda_forward(const AslArgs& a, void* stream) {
  const Params p = make_params(a);
  const int64_t blocks = asl_cuda_num_partials(a.numel);
  if (a.reduce) {
    require(a.out != nullptr && a.scale != nullptr, "out and scale must be set for a reduction");
    require(blocks == 0 || a.partial_sum != nullptr, "partial_sum must be set for a reduction");
    require(blocks == 0 || !a.write_grad || a.grad != nullptr, "grad must be set with write_grad");
  } else {
    require(blocks == 0 || a.out != nullptr, "out must be set");
  }
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    if (blocks > 0) {
      dispatch_target(a.target_dtype, kLoss, [&](auto target_tag) {
        using TT = typename decltype(target_tag)::type;
        _asl_fwd_kernel<TIn, TT><<<static_cast<unsigned>(blocks), kBlock, 0, s>>>(p);
      });
      check_launch("_asl_fwd_kernel");
    }
    if (a.reduce) {
      _asl_sum_partials_kernel<TIn><<<1, kBlock, 0, s>>>(
          a.partial_sum, blocks, a.numel, static_cast<TIn*>(a.out), a.scale, a.mean);
      check_launch("_asl_sum_partials_kernel");
    }
  });
}

void asl_cuda_backward(const AslArgs& a, void* stream) {
  const Params p = make_params(a);
  const int64_t blocks = asl_cuda_num_partials(a.numel);
  if (blocks == 0) return;
  require(a.grad_output != nullptr && a.grad != nullptr, "grad_output and grad must be set");
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    dispatch_target(a.target_dtype, kLoss, [&](auto target_tag) {
      using TT = typename decltype(target_tag)::type;
      _asl_bwd_kernel<TIn, TT><<<static_cast<unsigned>(blocks), kBlock, 0, s>>>(p);
    });
    check_launch("_asl_bwd_kernel");
  });
}

}  // namespace fused_losses

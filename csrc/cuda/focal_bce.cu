// Fused sigmoid focal BCE on CUDA: kernels and their launchers.
//
// The same maths as fused_losses/triton/focal_bce.py (see
// fused_losses/reference/focal_bce.py for the formula). Forward with a
// reduction: one pass reads logits and targets once, writes one fp32 loss
// partial and one kept-count per block and, when asked, d(loss)/d(input)
// already multiplied by grad_scale; a single-block kernel then sums the
// partials in a fixed order. Forward without reduction writes the loss; its
// backward recomputes the gradient in one pass.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../focal_bce_args.h"
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

constexpr const char* kLoss = "focal_bce";  // names the kernel in errors

constexpr int kBlock = 256;
// Enough blocks to fill any current GPU a few times over. It is a constant
// rather than a multiple of the SM count so that the partition, and with it
// the summation order and the result's bits, depend on numel alone.
constexpr int64_t kMaxBlocks = 4096;
static_assert(kBlock % device::kWarpSize == 0 && kBlock <= 1024, "block_sum needs whole warps");

// What a launch reads, with the flags derived once on the host. Every flag is
// uniform over the grid, so branching on it never diverges a warp.
struct Params {
  const void* input;
  const void* target;
  const void* grad_output;
  Operand alpha, pos_weight, weight;
  int64_t numel;
  int64_t cols;
  float gamma, alpha_value, smoothing, ignore_value, grad_scale;
  int gamma_int;          // γ when the hard path may use q^γ by multiplication, else 0
  bool use_alpha_value;   // scalar α (no α operand)
  bool has_ignore, hard, reduce, write_grad;
  bool need_rc;           // some operand is present: track (row, col)
  void* out;
  void* grad;
  float* partial_sum;
  int32_t* partial_count;
};

struct Element {
  float loss;  // 0 where ignored
  float grad;  // d loss/dx, 0 where ignored
  bool keep;
};

// Loss and gradient of one element: the CUDA twin of _focal_bce_tile.
template <typename TIn, typename TT>
__device__ __forceinline__ Element focal_bce_element(const Params& p, int64_t i, int64_t row,
                                                     int64_t col) {
  const float x = load_float(static_cast<const TIn*>(p.input) + i);
  float t = load_float(static_cast<const TT*>(p.target) + i);
  const bool keep = !(p.has_ignore && t == p.ignore_value);
  // Zeroed before smoothing so a value like -100 never enters the maths.
  t = keep ? t : 0.f;
  t = t * (1.f - p.smoothing) + 0.5f * p.smoothing;

  float log_p, log_n, s_p, s_n;
  device::sigmoid_terms(x, &log_p, &log_n, &s_p, &s_n);
  const float pos_t = p.pos_weight.ptr != nullptr ? t * load_operand(p.pos_weight, row, col) : t;
  float loss = -(pos_t * log_p + (1.f - t) * log_n);
  float grad = (1.f - t) * s_p - pos_t * s_n;
  if (p.gamma != 0.f) {
    float f, r;
    device::focal_factor(log_p, log_n, s_p, s_n, t, p.gamma, p.gamma_int, p.hard, &f, &r);
    grad = f * (p.gamma * (1.f - 2.f * t) * r * loss + grad);
    loss *= f;
  }
  if (p.alpha.ptr != nullptr || p.use_alpha_value) {
    const float a = p.alpha.ptr != nullptr ? load_operand(p.alpha, row, col) : p.alpha_value;
    const float a_t = a * t + (1.f - a) * (1.f - t);
    loss *= a_t;
    grad *= a_t;
  }
  if (p.weight.ptr != nullptr) {
    const float w = load_operand(p.weight, row, col);
    loss *= w;
    grad *= w;
  }
  // Selects, not products: an ignored element's NaN or inf must not leak.
  return Element{keep ? loss : 0.f, keep ? grad : 0.f, keep};
}

// Grid-stride loop over all elements, calling body(i, element) for each.
// Without operands (row, col) is not tracked at all.
template <typename TIn, typename TT, typename Body>
__device__ __forceinline__ void for_each_element(const Params& p, Body&& body) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  device::RowCol rc;
  if (p.need_rc) rc.start(i, step, p.cols);
  for (; i < p.numel; i += step) {
    body(i, focal_bce_element<TIn, TT>(p, i, rc.row, rc.col));
    if (p.need_rc) rc.advance(p.cols);
  }
}

// reduce: per-block loss partial and kept-count (+ the scaled gradient when
// write_grad); otherwise the elementwise loss.
template <typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _focal_bce_fwd_kernel(const Params p) {
  TIn* const out = static_cast<TIn*>(p.out);
  TIn* const grad = static_cast<TIn*>(p.grad);
  float sum = 0.f;
  int32_t count = 0;
  for_each_element<TIn, TT>(p, [&](int64_t i, const Element& e) {
    if (!p.reduce) {
      store_float(out + i, e.loss);
      return;
    }
    sum += e.loss;
    count += e.keep ? 1 : 0;
    if (p.write_grad) store_float(grad + i, e.grad * p.grad_scale);
  });
  // p.reduce is grid-uniform: either every thread of the block reaches the
  // block_sum barriers or none does.
  if (!p.reduce) return;
  sum = block_sum(sum);
  count = block_sum(count);
  if (threadIdx.x == 0) {
    p.partial_sum[blockIdx.x] = sum;
    p.partial_count[blockIdx.x] = count;
  }
}

// reduction="none" backward: grad_input = d loss/dx · grad_output.
template <typename TIn, typename TT>
__global__ void __launch_bounds__(kBlock) _focal_bce_bwd_kernel(const Params p) {
  const TIn* const grad_output = static_cast<const TIn*>(p.grad_output);
  TIn* const grad_input = static_cast<TIn*>(p.grad);
  for_each_element<TIn, TT>(p, [&](int64_t i, const Element& e) {
    store_float(grad_input + i, e.grad * load_float(grad_output + i));
  });
}

// Second stage, one block: out = Σ partials (÷ Σ counts for a mean). scale is
// 1/count when the gradient still needs the mean's divisor (clamp_count:
// ignore_index in use, so an all-ignored mean is 0, not NaN), else 1.
// Without ignore, a mean of nothing is 0/0 = NaN, as torch's mean gives.
template <typename TOut>
__global__ void __launch_bounds__(kBlock) _focal_bce_sum_partials_kernel(
    const float* partial_sum, const int32_t* partial_count, int64_t n_partials, TOut* out,
    float* scale, bool mean, bool clamp_count) {
  float total = 0.f;
  int64_t count = 0;
  for (int64_t j = threadIdx.x; j < n_partials; j += blockDim.x) {
    total += partial_sum[j];
    count += partial_count[j];
  }
  total = block_sum(total);
  count = block_sum(count);
  if (threadIdx.x != 0) return;
  float divisor_scale = 1.f;
  if (mean) {
    if (clamp_count && count < 1) count = 1;
    const float n_kept = static_cast<float>(count);
    if (clamp_count) divisor_scale = 1.f / n_kept;
    total = total / n_kept;
  }
  store_float(out, total);
  *scale = divisor_scale;
}

// ---------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------

void require(bool ok, const char* message) {
  if (!ok) throw std::invalid_argument(std::string("fused_losses: focal_bce CUDA: ") + message);
}

Params make_params(const FocalBceArgs& a) {
  require(a.numel >= 0, "numel must be >= 0");
  require(a.numel == 0 || a.cols >= 1, "cols must be >= 1 for a non-empty input");
  require(a.numel == 0 || (a.input != nullptr && a.target != nullptr),
          "input and target must be set");
  Params p{};
  p.input = a.input;
  p.target = a.target;
  p.grad_output = a.grad_output;
  p.alpha = a.alpha;
  p.pos_weight = a.pos_weight;
  p.weight = a.weight;
  p.numel = a.numel;
  p.cols = std::max<int64_t>(a.cols, 1);
  p.gamma = a.gamma;
  p.alpha_value = a.alpha_value;
  p.smoothing = a.smoothing;
  p.ignore_value = a.ignore_value;
  p.grad_scale = a.grad_scale;
  const bool small_int_gamma = a.gamma == 1.f || a.gamma == 2.f || a.gamma == 3.f || a.gamma == 4.f;
  p.gamma_int = a.hard && small_int_gamma ? static_cast<int>(a.gamma) : 0;
  p.use_alpha_value = a.alpha.ptr == nullptr && a.has_alpha_value;
  p.has_ignore = a.has_ignore;
  p.hard = a.hard;
  p.reduce = a.reduce;
  p.write_grad = a.write_grad;
  p.need_rc = a.alpha.ptr != nullptr || a.pos_weight.ptr != nullptr || a.weight.ptr != nullptr;
  p.out = a.out;
  p.grad = a.grad;
  p.partial_sum = a.partial_sum;
  p.partial_count = a.partial_count;
  return p;
}

}  // namespace

int64_t focal_bce_cuda_num_partials(int64_t numel) {
  if (numel <= 0) return 0;
  return std::min<int64_t>((numel + kBlock - 1) / kBlock, kMaxBlocks);
}

void focal_bce_cuda_forward(const FocalBceArgs& a, void* stream) {
  const Params p = make_params(a);
  const int64_t blocks = focal_bce_cuda_num_partials(a.numel);
  if (a.reduce) {
    require(a.out != nullptr && a.scale != nullptr, "out and scale must be set for a reduction");
    require(blocks == 0 || (a.partial_sum != nullptr && a.partial_count != nullptr),
            "partial_sum and partial_count must be set for a reduction");
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
        _focal_bce_fwd_kernel<TIn, TT><<<static_cast<unsigned>(blocks), kBlock, 0, s>>>(p);
      });
      check_launch("_focal_bce_fwd_kernel");
    }
    if (a.reduce) {
      // Runs for numel == 0 too: out is then 0 (sum), NaN or 0 (mean).
      _focal_bce_sum_partials_kernel<TIn><<<1, kBlock, 0, s>>>(
          a.partial_sum, a.partial_count, blocks, static_cast<TIn*>(a.out), a.scale, a.mean,
          a.has_ignore);
      check_launch("_focal_bce_sum_partials_kernel");
    }
  });
}

void focal_bce_cuda_backward(const FocalBceArgs& a, void* stream) {
  const Params p = make_params(a);
  const int64_t blocks = focal_bce_cuda_num_partials(a.numel);
  if (blocks == 0) return;
  require(a.grad_output != nullptr && a.grad != nullptr, "grad_output and grad must be set");
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch_input(a.input_dtype, kLoss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    dispatch_target(a.target_dtype, kLoss, [&](auto target_tag) {
      using TT = typename decltype(target_tag)::type;
      _focal_bce_bwd_kernel<TIn, TT><<<static_cast<unsigned>(blocks), kBlock, 0, s>>>(p);
    });
    check_launch("_focal_bce_bwd_kernel");
  });
}

}  // namespace fused_losses

// The non-template half of the binding every loss shares (binding.h).
#include "binding.h"

#include <vector>

#ifdef FUSED_LOSSES_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace fused_losses {

DType dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float32;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    case at::kDouble: return DType::Float64;
    case at::kBool:
    case at::kByte: return DType::UInt8;
    case at::kChar: return DType::Int8;
    case at::kShort: return DType::Int16;
    case at::kInt: return DType::Int32;
    case at::kLong: return DType::Int64;
    default: TORCH_CHECK(false, "fused_losses: unsupported dtype ", t.scalar_type());
  }
}

namespace {

// (rows, cols) of a logits shape [..., C]; a 0-d tensor is one element.
std::pair<int64_t, int64_t> rows_cols(at::IntArrayRef shape) {
  const int64_t cols = shape.empty() ? 1 : shape.back();
  int64_t numel = 1;
  for (auto s : shape) numel *= s;
  return {cols ? numel / cols : 0, cols};
}

void check_logits(const at::Tensor& input) {
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kHalf ||
                  input.scalar_type() == at::kBFloat16,
              "fused_losses: input must be float32, float16 or bfloat16, got ",
              input.scalar_type());
}

Layout binary_layout(const at::Tensor& input, const at::Tensor& target, Dims dims,
                     const char* stem) {
  TORCH_CHECK(target.sizes() == input.sizes(), "fused_losses: target shape ", target.sizes(),
              " must equal input shape ", input.sizes());
  Layout l;
  l.numel = input.numel();
  if (dims == Dims::Any) {
    const auto [rows, cols] = rows_cols(input.sizes());
    l.rows = rows;
    l.cols = std::max<int64_t>(cols, 1);
    return l;
  }
  TORCH_CHECK(input.dim() >= 2, "fused_losses: ", stem, " input must be [N, C] or "
              "[N, C, d1, ...], got shape ", input.sizes());
  l.cols = input.size(1);
  for (int64_t d = 2; d < input.dim(); ++d) l.inner *= input.size(d);
  l.rows = input.size(0) * l.inner;
  return l;
}

Layout index_layout(const at::Tensor& input, const at::Tensor& target, Dims dims) {
  if (dims == Dims::Matrix) {
    TORCH_CHECK(input.dim() == 2 && input.size(1) >= 1,
                "fused_losses: input must be [N, C] with C >= 1, got ", input.sizes());
  } else {
    TORCH_CHECK(input.dim() >= 1 && input.size(input.dim() > 1 ? 1 : 0) >= 1,
                "fused_losses: input must be [N, C, ...] or [C] with C >= 1, got ",
                input.sizes());
  }
  std::vector<int64_t> expected;
  if (input.dim() > 1) {
    expected.push_back(input.size(0));
    for (int64_t d = 2; d < input.dim(); ++d) expected.push_back(input.size(d));
  }
  TORCH_CHECK(target.sizes() == at::IntArrayRef(expected), "fused_losses: target shape ",
              target.sizes(), " must be input shape ", input.sizes(), " without dim 1");
  TORCH_CHECK(!target.is_floating_point() && !target.is_complex() &&
                  target.scalar_type() != at::kBool,
              "fused_losses: target must hold integer class indices, got ", target.scalar_type());
  Layout l;
  l.numel = input.numel();
  l.cols = input.dim() > 1 ? input.size(1) : input.size(0);
  for (int64_t d = 2; d < input.dim(); ++d) l.inner *= input.size(d);
  l.rows = input.dim() > 1 ? input.size(0) * l.inner : 1;
  return l;
}

}  // namespace

Layout check_inputs(const at::Tensor& input, const at::Tensor& target, Targets targets,
                    Dims dims, const char* stem) {
  check_logits(input);
  TORCH_CHECK(target.device() == input.device(), "fused_losses: target is on ",
              target.device(), " but input is on ", input.device());
  return targets == Targets::Binary ? binary_layout(input, target, dims, stem)
                                    : index_layout(input, target, dims);
}

at::IntArrayRef none_shape(const at::Tensor& input, const at::Tensor& target, Targets targets) {
  return targets == Targets::Binary ? input.sizes() : target.sizes();
}

void set_reduction(c10::string_view reduction, bool& reduce, bool& mean) {
  TORCH_CHECK(reduction == "none" || reduction == "mean" || reduction == "sum",
              "fused_losses: reduction must be none, mean or sum, got ", reduction);
  reduce = reduction != "none";
  mean = reduction == "mean";
}

void check_option_count(size_t got, int expected, const char* stem, const char* names) {
  TORCH_CHECK(got == static_cast<size_t>(expected), "fused_losses: ", stem, " takes ",
              expected, " options (", names, "), got ", got,
              " (from fused_losses: the build predates fused_losses/spec; rebuild it)");
}

Operand broadcast_operand(const OptionalTensor& t, const char* name, const at::Tensor& input,
                          at::Tensor& keep) {
  Operand op;
  if (!t.has_value()) return op;
  TORCH_CHECK(t->device() == input.device(), "fused_losses: ", name, " is on ", t->device(),
              " but input is on ", input.device());
  TORCH_CHECK(t->is_floating_point(), "fused_losses: ", name, " must be floating point");
  const auto [rows, cols] = rows_cols(input.sizes());
  at::Tensor view = t->to(at::kFloat).expand(input.sizes());
  int64_t stride_r = 0;
  bool mergeable = true;
  int64_t prev_size = -1, prev_stride = 0;
  for (int64_t d = 0; d + 1 < view.dim(); ++d) {
    if (view.size(d) == 1) continue;
    // Leading dims merge into one row index when strides nest like a contiguous block.
    if (prev_size >= 0 && prev_stride != view.stride(d) * view.size(d)) mergeable = false;
    prev_size = view.size(d);
    prev_stride = view.stride(d);
    stride_r = view.stride(d);
  }
  if (!mergeable) {
    view = view.reshape({rows, cols}).contiguous();
    stride_r = cols;
  }
  op.ptr = view.data_ptr<float>();
  op.stride_r = stride_r;
  op.stride_c = (view.dim() == 0 || cols <= 1) ? 0 : view.stride(-1);
  keep = view;
  return op;
}

Operand vector_operand(const at::Tensor& t) {
  Operand op;
  op.ptr = t.data_ptr<float>();
  op.stride_c = 1;
  return op;
}

void run_on_device(const at::Device& device, c10::function_ref<void()> on_cpu,
                   c10::function_ref<void(void*)> on_cuda) {
  if (device.is_cuda()) {
#ifdef FUSED_LOSSES_WITH_CUDA
    const c10::cuda::CUDAGuard guard(device);
    return on_cuda(c10::cuda::getCurrentCUDAStream().stream());
#else
    (void)on_cuda;
    TORCH_CHECK(false, "fused_losses._C was built without CUDA kernels");
#endif
  }
  TORCH_CHECK(device.is_cpu(), "fused_losses: unsupported device ", device);
  on_cpu();
}

}  // namespace fused_losses

// Torch-side helpers shared by the loss bindings.
#include "binding.h"

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

std::pair<int64_t, int64_t> rows_cols(at::IntArrayRef shape) {
  const int64_t cols = shape.empty() ? 1 : shape.back();
  int64_t numel = 1;
  for (auto s : shape) numel *= s;
  return {cols ? numel / cols : 0, cols};
}

PreparedOperand prepare_operand(const std::optional<at::Tensor>& t, const char* name,
                                const at::Tensor& input) {
  PreparedOperand out;
  if (!t.has_value()) return out;
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
  out.op.ptr = view.data_ptr<float>();
  out.op.stride_r = stride_r;
  out.op.stride_c = (view.dim() == 0 || cols <= 1) ? 0 : view.stride(-1);
  out.keep = view;
  return out;
}

void check_pair(const at::Tensor& input, const at::Tensor& target) {
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kHalf ||
                  input.scalar_type() == at::kBFloat16,
              "fused_losses: input must be float32, float16 or bfloat16, got ",
              input.scalar_type());
  TORCH_CHECK(target.sizes() == input.sizes(), "fused_losses: target shape ", target.sizes(),
              " must equal input shape ", input.sizes());
  TORCH_CHECK(target.device() == input.device(), "fused_losses: target is on ",
              target.device(), " but input is on ", input.device());
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

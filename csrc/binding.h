// Torch-side helpers shared by every loss's binding (.cpp only: this header
// includes ATen, so no .cu file may include it).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/FunctionRef.h>

#include <optional>

#include "focal_bce_args.h"

namespace fused_losses {

// The kernels' element type code for a tensor (bool is read as uint8).
DType dtype_code(const at::Tensor& t);

// (rows, cols) of a logits shape [..., C]; a 0-d tensor is one element.
std::pair<int64_t, int64_t> rows_cols(at::IntArrayRef shape);

// An optional broadcast operand as float32 base + [R, C] strides. `keep`
// owns any converted or materialised copy for the duration of the launch.
struct PreparedOperand {
  at::Tensor keep;
  Operand op;
};
PreparedOperand prepare_operand(const std::optional<at::Tensor>& t, const char* name,
                                const at::Tensor& input);

// Shared argument checks for C++ ops called directly (Python validates first;
// these keep a direct call from reading out of bounds).
void check_pair(const at::Tensor& input, const at::Tensor& target);

// Runs on_cpu() for a CPU device, or on_cuda(stream) for a CUDA one with that
// device current and `stream` its current cudaStream_t (as void*). Errors on
// other devices and on CUDA tensors when the extension was built without CUDA.
void run_on_device(const at::Device& device, c10::function_ref<void()> on_cpu,
                   c10::function_ref<void(void*)> on_cuda);

}  // namespace fused_losses

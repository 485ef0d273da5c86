// The torch binding every loss's ops go through: argument checks, contiguous
// inputs, outputs, the CPU or CUDA launch and the backward, written once.
// .cpp only: this header includes ATen, so no .cu file may include it.
//
// A loss's binding (csrc/<stem>.cpp) declares its op schemas and a traits
// struct with only what is its own:
//   : LossTraits<<Stem>Options, targets, dims>  its options and accepted shapes
//   static void operands(Launch&, ...)          its tensor operands -> Operand slots
// The options' ranges are the spec's, checked by the generated
// <Stem>Options::range_error for ops called directly.
// Everything derived from the options is computed by the kernels.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/FunctionRef.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

#include "grad_cache.h"
#include "launch_args.h"

namespace fused_losses {

using OptionalTensor = std::optional<at::Tensor>;

// The spec's `targets`: same shape as the input, or one class index per row.
enum class Targets { Binary, Index };
// The spec's `input_dims`: [..., C], [N, C, d1, ...] (also [C] for class
// indices) or [N, C].
enum class Dims { Any, ClassDim, Matrix };

template <typename OptionsT, Targets kTargetsV, Dims kDimsV>
struct LossTraits {
  using Options = OptionsT;
  static constexpr const char* kStem = Stem<OptionsT>::value;
  static constexpr Targets kTargets = kTargetsV;
  static constexpr Dims kDims = kDimsV;
};

// The kernels' element type code for a tensor (bool is read as uint8).
DType dtype_code(const at::Tensor& t);

// Checks input and target for a loss and returns their layout.
struct Layout {
  int64_t numel = 0, rows = 0, cols = 1, inner = 1;
};
Layout check_inputs(const at::Tensor& input, const at::Tensor& target, Targets targets,
                    Dims dims, const char* stem);

// The shape of reduction="none"'s loss, which grad_output has in a backward.
at::IntArrayRef none_shape(const at::Tensor& input, const at::Tensor& target, Targets targets);

// Validates `reduction` and sets reduce/mean from it.
void set_reduction(c10::string_view reduction, bool& reduce, bool& mean);

// Checks that the options bundle has the loss's kCount values.
void check_option_count(size_t got, int expected, const char* stem, const char* names);

// An optional operand broadcast to the input, as float32 + [rows, cols]
// strides; `keep` owns any converted or materialised copy.
Operand broadcast_operand(const OptionalTensor& t, const char* name, const at::Tensor& input,
                          at::Tensor& keep);

// A contiguous float32 vector `t`, read as [n] (stride_c 1).
Operand vector_operand(const at::Tensor& t);

// Runs on_cpu() for a CPU device, or on_cuda(stream) for a CUDA one with that
// device current and `stream` its current cudaStream_t (as void*). Errors on
// other devices and on CUDA tensors when the extension was built without CUDA.
void run_on_device(const at::Device& device, c10::function_ref<void()> on_cpu,
                   c10::function_ref<void(void*)> on_cuda);

// One launch: its arguments and the tensors they point into.
template <typename Options>
struct Launch {
  at::Tensor input, target;
  std::array<at::Tensor, kMaxOperands> keep;
  LaunchArgs<Options> args;

  void broadcast(int slot, const OptionalTensor& t, const char* name) {
    args.operands[slot] = broadcast_operand(t, name, input, keep[slot]);
  }
};

// The options bundle, checked against the spec (count, then ranges) and unpacked.
template <typename Options>
Options unpack_options(c10::ArrayRef<double> options, const char* stem) {
  check_option_count(options.size(), Options::kCount, stem, Options::kNames);
  const char* range = Options::range_error(options.data());
  TORCH_CHECK(range == nullptr, "fused_losses: ", stem, ": ", range);
  return Options::unpack(options.data());
}

template <typename Loss>
Launch<typename Loss::Options> prepare(const at::Tensor& input, const at::Tensor& target,
                                       c10::ArrayRef<double> options) {
  using Options = typename Loss::Options;
  const Layout layout = check_inputs(input, target, Loss::kTargets, Loss::kDims, Loss::kStem);
  Launch<Options> l;
  LaunchArgs<Options>& a = l.args;
  a.opt = unpack_options<Options>(options, Loss::kStem);
  l.input = input.contiguous();
  l.target = target.contiguous();
  a.input = l.input.data_ptr();
  a.input_dtype = dtype_code(l.input);
  a.target = l.target.data_ptr();
  a.target_dtype = dtype_code(l.target);
  a.numel = layout.numel;
  a.rows = layout.rows;
  a.cols = layout.cols;
  a.inner = layout.inner;
  return l;
}

// Runs one pass of a loss on the arguments' device. A CUDA pass gets the
// scratch its kernels asked for, freed (stream-ordered) when the pass is queued.
template <typename Options>
void launch(LaunchArgs<Options>& a, Pass pass, const at::Device& device) {
  at::Tensor workspace;
  run_on_device(
      device, [&] { cpu_run(a, pass); },
      [&](void* stream) {
#ifdef FUSED_LOSSES_WITH_CUDA
        const int64_t bytes = cuda_workspace_bytes(a, pass);
        if (bytes > 0) {
          workspace = at::empty({bytes}, at::TensorOptions(device).dtype(at::kByte));
          a.workspace = workspace.data_ptr();
        }
        cuda_run(a, pass, stream);
#else
        (void)stream;
#endif
      });
}

// The (loss, grad, scale) protocol of fused_losses/ops/_protocols.py:
//   <stem>_fwd(input, target, *operands, options, reduction, compute_grad)
//   <stem>_bwd(grad_output, input, target, *operands, options)
// `Operands` are the C++ types of the loss's operand arguments.
template <typename Loss, typename... Operands>
struct ElementwiseOps {
  using Options = typename Loss::Options;

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> fwd(
      const at::Tensor& input, const at::Tensor& target, const Operands&... operands,
      c10::ArrayRef<double> options, c10::string_view reduction, bool compute_grad) {
    Launch<Options> l = prepare<Loss>(input, target, options);
    LaunchArgs<Options>& a = l.args;
    set_reduction(reduction, a.reduce, a.mean);
    Loss::operands(l, operands...);
    a.write_grad = a.reduce && compute_grad;
    const auto like = input.options();
    at::Tensor loss = a.reduce ? at::empty({}, like)
                               : at::empty(none_shape(input, target, Loss::kTargets), like);
    at::Tensor grad = a.write_grad ? gradient_buffer(input.sizes(), like) : at::empty({0}, like);
    at::Tensor scale = at::empty({}, like.dtype(at::kFloat));
    if (!a.reduce) scale.fill_(1.0);  // a reduction's kernels write it
    a.out = loss.data_ptr();
    a.grad = grad.data_ptr();
    a.scale = scale.data_ptr<float>();
    launch(a, Pass::Forward, input.device());
    return {loss, grad, scale};
  }

  // The reduction="none" backward: one pass recomputes d loss/dx · grad_output.
  static at::Tensor bwd(const at::Tensor& grad_output, const at::Tensor& input,
                        const at::Tensor& target, const Operands&... operands,
                        c10::ArrayRef<double> options) {
    const at::IntArrayRef expected = none_shape(input, target, Loss::kTargets);
    TORCH_CHECK(grad_output.sizes() == expected, "fused_losses: ", Loss::kStem,
                " grad_output shape ", grad_output.sizes(), " must be ", expected);
    TORCH_CHECK(grad_output.device() == input.device(), "fused_losses: grad_output is on ",
                grad_output.device(), " but input is on ", input.device());
    Launch<Options> l = prepare<Loss>(input, target, options);
    Loss::operands(l, operands...);
    at::Tensor g_out = grad_output.to(input.scalar_type()).contiguous();
    at::Tensor grad_input = gradient_buffer(input.sizes(), input.options());
    l.args.grad_output = g_out.data_ptr();
    l.args.grad = grad_input.data_ptr();
    launch(l.args, Pass::Backward, input.device());
    return grad_input;
  }

  static void define_impls(torch::Library& m) {
    m.impl((std::string(Loss::kStem) + "_fwd").c_str(), &fwd);
    m.impl((std::string(Loss::kStem) + "_bwd").c_str(), &bwd);
  }
};

}  // namespace fused_losses

// Registers define(m) (a function of torch::Library&) as a loss's kernels for
// the CPU dispatch key and, in a CUDA build, for the CUDA key.
#define FUSED_LOSSES_IMPL(define)                 \
  TORCH_LIBRARY_IMPL(fused_losses, CPU, m) {      \
    define(m);                                    \
  }                                               \
  FUSED_LOSSES_CUDA_IMPL_(define)

#ifdef FUSED_LOSSES_WITH_CUDA
#define FUSED_LOSSES_CUDA_IMPL_(define)           \
  TORCH_LIBRARY_IMPL(fused_losses, CUDA, m) {     \
    define(m);                                    \
  }
#else
#define FUSED_LOSSES_CUDA_IMPL_(define)
#endif

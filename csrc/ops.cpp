// Every C++ op schema of the fused_losses namespace, and the Python module
// entry point of fused_losses._C (importing it registers the ops).
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "cpu/capability.h"

TORCH_LIBRARY(fused_losses, m) {
  // Fused focal BCE: see fused_losses/ops/_fused.py for the (loss, grad, scale) protocol.
  m.def(
      "focal_bce_fwd(Tensor input, Tensor target, Tensor? alpha, Tensor? pos_weight, "
      "Tensor? weight, float gamma, float? alpha_value, float label_smoothing, "
      "int? ignore_index, str reduction, bool compute_grad) -> (Tensor, Tensor, Tensor)");
  m.def(
      "focal_bce_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor? alpha, "
      "Tensor? pos_weight, Tensor? weight, float gamma, float? alpha_value, "
      "float label_smoothing, int? ignore_index) -> Tensor");
  // GHM-C in three passes (csrc/ghmc_args.h): histogram -> per-bin weights ->
  // loss with the same (loss, grad, scale) protocol as focal_bce_fwd.
  m.def("ghmc_hist(Tensor input, Tensor target, Tensor? label_weight, int bins) -> Tensor");
  m.def("ghmc_weights(Tensor hist, Tensor(a!)? acc_sum, float momentum, bool mean) -> Tensor");
  m.def(
      "ghmc_fwd(Tensor input, Tensor target, Tensor? label_weight, Tensor weights, int bins, "
      "str reduction, bool compute_grad) -> (Tensor, Tensor, Tensor)");
  m.def(
      "ghmc_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor? label_weight, "
      "Tensor weights, int bins) -> Tensor");
  // Multilabel soft dice (csrc/dice_args.h): forward -> (loss, fp32 sums [3, C]);
  // backward recomputes d loss/dx from x, t and the saved sums.
  m.def(
      "dice_fwd(Tensor input, Tensor target, float smooth, float alpha, "
      "bool square_denominator, str reduction) -> (Tensor, Tensor)");
  m.def(
      "dice_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor sums, float smooth, "
      "float alpha, bool square_denominator, str reduction) -> Tensor");
  // Asymmetric loss (csrc/asl_args.h), the (loss, grad, scale) protocol; scale is 1.
  m.def(
      "asl_fwd(Tensor input, Tensor target, Tensor? weight, float gamma_pos, float gamma_neg, "
      "float clip, float eps, bool detach_focal_weight, str reduction, bool compute_grad) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "asl_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor? weight, "
      "float gamma_pos, float gamma_neg, float clip, float eps, bool detach_focal_weight) "
      "-> Tensor");
  // Softmax focal loss over class indices (csrc/softmax_focal_args.h), same protocol.
  m.def(
      "softmax_focal_fwd(Tensor input, Tensor target, Tensor? alpha, float gamma, "
      "int? ignore_index, float label_smoothing, str reduction, bool compute_grad) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "softmax_focal_bwd(Tensor grad_output, Tensor input, Tensor target, Tensor? alpha, "
      "float gamma, int? ignore_index, float label_smoothing) -> Tensor");
  // Per-sample self-adjusting DSC over class indices (csrc/dsc_args.h), same protocol.
  m.def(
      "dsc_fwd(Tensor input, Tensor target, float alpha, float smooth, str reduction, "
      "bool compute_grad) -> (Tensor, Tensor, Tensor)");
  m.def("dsc_bwd(Tensor grad_output, Tensor input, Tensor target, float alpha, float smooth) "
        "-> Tensor");
  m.def("_cpu_capability() -> str", []() -> std::string {
    return fused_losses::cpu::capability_name(fused_losses::cpu::active_capability());
  });
  m.def("_built_with_cuda() -> bool", []() -> bool {
#ifdef FUSED_LOSSES_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
}

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "fused_losses C++/CUDA ops", -1,
                               nullptr};
  return PyModule_Create(&module);
}

// Fused asymmetric loss (ASL) on CUDA: the maths of asl.cuh on the
// elementwise skeleton of elementwise.cuh (kernels) and elementwise_host.cuh (launch).
//
// The same formula as fused_losses/triton/asl.py (subgradients in
// fused_losses/reference/asl.py). No element is ignored: a mean divides by
// numel, folded into the coefficients, and the saved gradient's scale is 1.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cstdint>

#include "../launch_args.h"
#include "asl.cuh"
#include "elementwise_host.cuh"

namespace fused_losses {

int64_t cuda_workspace_bytes(const LaunchArgs<AslOptions>& a, Pass p) {
  return elementwise::workspace_bytes<Asl>(a, p);
}
void cuda_run(const LaunchArgs<AslOptions>& a, Pass p, void* stream) {
  elementwise::run<Asl>(a, p, stream);
}

}  // namespace fused_losses

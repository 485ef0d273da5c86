// Fused sigmoid focal BCE on CUDA: the maths of focal_bce.cuh on the
// elementwise skeleton of elementwise.cuh (kernels) and elementwise_host.cuh (launch).
//
// The same formula as fused_losses/triton/focal_bce.py and
// fused_losses/reference/focal_bce.py.
//
// Only CUDA headers here, no torch: CI compile-checks this file with nvcc alone.
#include <cstdint>

#include "../launch_args.h"
#include "elementwise_host.cuh"
#include "focal_bce.cuh"

namespace fused_losses {

int64_t cuda_workspace_bytes(const LaunchArgs<FocalBceOptions>& a, Pass p) {
  return elementwise::workspace_bytes<FocalBce>(a, p);
}
void cuda_run(const LaunchArgs<FocalBceOptions>& a, Pass p, void* stream) {
  elementwise::run<FocalBce>(a, p, stream);
}

}  // namespace fused_losses

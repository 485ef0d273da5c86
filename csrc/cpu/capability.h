// Which CPU kernel build runs (see dispatch.cpp).
#pragma once

namespace fused_losses {
namespace cpu {

enum class Capability : int { Default = 0, Avx2 = 1, Avx512 = 2 };

Capability active_capability();
const char* capability_name(Capability c);

}  // namespace cpu
}  // namespace fused_losses

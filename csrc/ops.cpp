// The fused_losses op library and the Python module entry point of
// fused_losses._C (importing it registers the ops). Module-level ops live
// here; each loss declares its own schemas next to its binding
// (csrc/<stem>.cpp, TORCH_LIBRARY_FRAGMENT).
#include <Python.h>
#include <torch/library.h>

#include <string>

#include "cpu/capability.h"
#include "launch_args.h"

namespace fused_losses {
namespace {

// The option names this build was generated with, which Python compares with
// the spec at import to refuse a stale build.
std::string option_names(c10::string_view stem) {
  const char* names = nullptr;
#define FUSED_LOSSES_OPTION_NAMES(name, Options) \
  if (stem == #name) names = Options::kNames;
  FUSED_LOSSES_FOR_EACH_LOSS(FUSED_LOSSES_OPTION_NAMES)
#undef FUSED_LOSSES_OPTION_NAMES
  TORCH_CHECK(names != nullptr, "fused_losses: no C++ kernels for a loss named ", stem);
  return names;
}

bool built_with_cuda() {
#ifdef FUSED_LOSSES_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace
}  // namespace fused_losses

TORCH_LIBRARY(fused_losses, m) {
  m.def("_cpu_capability() -> str", []() -> std::string {
    return fused_losses::cpu::capability_name(fused_losses::cpu::active_capability());
  });
  m.def("_built_with_cuda() -> bool", &fused_losses::built_with_cuda);
  m.def("_option_names(str stem) -> str", &fused_losses::option_names);
}

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "fused_losses C++/CUDA ops", -1,
                               nullptr};
  return PyModule_Create(&module);
}

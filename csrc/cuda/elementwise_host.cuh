// The host half of the elementwise skeleton (elementwise.cuh holds the
// kernels): argument checks, the workspace carve, plan choice and launches,
// and the fixed-order second stage of a forward with a reduction.
// focal_bce.cu, asl.cu and GHM-C's loss pass (ghmc.cu) call run<Loss>.
//
// Only CUDA headers here, no torch: CI compile-checks the .cu files with nvcc alone.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "elementwise.cuh"
#include "launch.cuh"
#include "math.cuh"
#include "walk.cuh"

namespace fused_losses {
namespace elementwise {

template <typename Options>
void check_inputs(const LaunchArgs<Options>& a, const char* loss) {
  launch::require(a.numel >= 0, loss, "numel must be >= 0");
  launch::require(a.numel == 0 || a.cols >= 1, loss, "cols must be >= 1 for a non-empty input");
  launch::require(a.numel == 0 || (a.input != nullptr && a.target != nullptr), loss,
                  "input and target must be set");
}

struct Partials {
  float* sum = nullptr;
  int32_t* count = nullptr;
};

// The second stage of a forward with a reduction: sum_partials_kernel on
// `block` threads (which fixes its summation order).
struct Reduction {
  Partials partials;
  int block;
  bool mean;         // divide by the count (not when the partials are pre-scaled)
  bool clamp_count;  // see sum_partials_kernel
};

// A forward pass: launch(Tag<TIn>, Tag<TT>) issues the loss kernel, which
// writes `n_partials` partials (none for an empty input), then they are summed.
template <typename Options, typename Launch>
void forward(const LaunchArgs<Options>& a, const char* loss, const char* kernel,
             int64_t n_partials, const Reduction& r, cudaStream_t s, Launch&& launch) {
  using launch::require;
  check_inputs(a, loss);
  if (a.reduce) {
    require(a.out != nullptr && a.scale != nullptr, loss, "out and scale must be set");
    require(n_partials == 0 || r.partials.sum != nullptr, loss, "the workspace must be set");
    require(n_partials == 0 || !a.write_grad || a.grad != nullptr, loss,
            "grad must be set with write_grad");
  } else {
    require(n_partials == 0 || a.out != nullptr, loss, "out must be set");
  }
  if (n_partials > 0) {
    launch::dispatch_pair(a, loss, launch);
    launch::check_launch(kernel);
  }
  if (!a.reduce) return;
  // Runs for numel == 0 too: out is then 0 (sum), NaN or 0 (mean).
  launch::dispatch_input(a.input_dtype, loss, [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    device::sum_partials_kernel<TIn><<<1, r.block, 0, s>>>(
        r.partials.sum, r.partials.count, n_partials, a.numel, static_cast<TIn*>(a.out),
        a.scale, r.mean, r.clamp_count);
  });
  launch::check_launch("sum_partials_kernel");
}

// The reduction="none" backward pass: launch(Tag<TIn>, Tag<TT>) issues the kernel.
template <typename Options, typename Launch>
void backward(const LaunchArgs<Options>& a, const char* loss, const char* kernel,
              int64_t blocks, Launch&& launch) {
  check_inputs(a, loss);
  if (blocks == 0) return;
  launch::require(a.grad_output != nullptr && a.grad != nullptr, loss,
                  "grad_output and grad must be set");
  launch::dispatch_pair(a, loss, launch);
  launch::check_launch(kernel);
}

enum class OpsKind { Uniform, Table, Strided };

// The operand slots a loss reads per element (coefficients); all by default.
template <class Loss, class = void>
struct CoefOperands : std::integral_constant<unsigned, ~0u> {};
template <class Loss>
struct CoefOperands<Loss, std::void_t<decltype(Loss::kCoefOperands)>>
    : std::integral_constant<unsigned, Loss::kCoefOperands> {};

// No operand; every present one per-class ([C] or a scalar: row stride 0,
// column stride 1 or 0) on a small enough C; anything else.
template <class Loss>
OpsKind ops_kind(const LaunchArgs<typename Loss::Options>& a) {
  bool any = false, per_class = true;
  for (int slot = 0; slot < kMaxOperands; ++slot) {
    const Operand& o = a.operands[slot];
    if (o.ptr == nullptr || !((CoefOperands<Loss>::value >> slot) & 1u)) continue;
    any = true;
    per_class = per_class && o.stride_r == 0 && (o.stride_c == 0 || o.stride_c == 1);
  }
  if (!any) return OpsKind::Uniform;
  return per_class && a.cols <= kMaxTableCols ? OpsKind::Table : OpsKind::Strided;
}

// Whether the loss's hot plans take floating targets (Loss::kFloatHot).
template <class Loss, class = void>
struct FloatHot : std::false_type {};
template <class Loss>
struct FloatHot<Loss, std::void_t<decltype(Loss::kFloatHot)>>
    : std::integral_constant<bool, Loss::kFloatHot> {};

// The target types a hot plan is instantiated for, given the logits': bool,
// and with kFloatHot fp32 (fp32 logits) or the logits' own type.
template <class Loss, typename TIn, typename TT>
constexpr bool hot_pair() {
  return std::is_same<TT, uint8_t>::value ||
         (FloatHot<Loss>::value && std::is_same<TT, TIn>::value);
}
template <class Loss>
bool hot_target(DType input, DType target) {
  return target == DType::UInt8 || (FloatHot<Loss>::value && target == input);
}

// Whether a specialised plan runs (Forward with a reduction, bool targets or,
// with kFloatHot, floating ones; the loss's hot() says which options).
template <class Loss>
bool takes_hot(const LaunchArgs<typename Loss::Options>& a, const typename Loss::Consts& c,
               Pass pass, OpsKind kind) {
  if (pass != Pass::Forward || !a.reduce || !hot_target<Loss>(a.input_dtype, a.target_dtype)) {
    return false;
  }
  if (kind == OpsKind::Strided) return false;
  return Loss::hot(a, c, kind == OpsKind::Table, [](auto) {});
}

template <class Loss>
Scratch carve(launch::Workspace& w, const LaunchArgs<typename Loss::Options>& a, Pass pass) {
  const typename Loss::Consts c = Loss::consts(a);
  const OpsKind kind = ops_kind<Loss>(a);
  Scratch s;
  if (kind == OpsKind::Table && takes_hot<Loss>(a, c, pass, kind)) s.table = w.take<float4>(a.cols + 8);
  if (pass != Pass::Forward || !a.reduce) return s;
  s.sum = w.take<float>(n_chunks(a.numel));
  if (c.count_kept) s.count = w.take<int32_t>(n_chunks(a.numel));
  return s;
}

template <class Loss>
int64_t workspace_bytes(const LaunchArgs<typename Loss::Options>& a, Pass pass) {
  return launch::workspace_bytes(carve<Loss>, a, pass);
}

// Every pointer of the launch allows V-element vectors.
template <int V, typename TIn, typename TT, typename Options>
bool vector_ok(const LaunchArgs<Options>& a) {
  auto ok = [](const void* p, int size) {
    const int align = V * size < 16 ? V * size : 16;
    return p == nullptr || reinterpret_cast<uintptr_t>(p) % align == 0;
  };
  return V > 1 && ok(a.input, sizeof(TIn)) && ok(a.target, sizeof(TT)) &&
         ok(a.grad_output, sizeof(TIn)) && ok(a.grad, sizeof(TIn)) &&
         (a.reduce || ok(a.out, sizeof(TIn)));
}

// A loss on this skeleton: its Forward or Backward pass.
template <class Loss>
void run(const LaunchArgs<typename Loss::Options>& a, Pass pass, void* stream) {
  const char* stem = Stem<typename Loss::Options>::value;
  const typename Loss::Consts c = Loss::consts(a);
  const OpsKind kind = ops_kind<Loss>(a);
  launch::require(kind == OpsKind::Uniform || a.cols < (int64_t{1} << 30), stem,
                  "a broadcast operand needs fewer than 2^30 columns");
  const auto s = static_cast<cudaStream_t>(stream);
  launch::Workspace ws(a.workspace);
  const Scratch sc = carve<Loss>(ws, a, pass);
  Walk w;
  w.numel = a.numel;
  w.n_chunks = n_chunks(a.numel);
  w.cols = static_cast<int32_t>(a.cols < (int64_t{1} << 30) ? a.cols : (int64_t{1} << 30));
  // Issues the Mode m kernel of `plan` for logits TIn and targets TT.
  auto issue = [&](auto plan, auto m, auto in, auto tt) {
    using Plan = decltype(plan);
    using TIn = typename decltype(in)::type;
    using TT = typename decltype(tt)::type;
    constexpr Mode M = decltype(m)::value;
    Walk wv = w;
    wv.vector = vector_ok<vec_width<Plan, TIn, TT>(), TIn, TT>(a);
    // if constexpr, not a ?: of the three: naming a kernel instantiates it.
    auto go = [&](auto kernel_tag) {
      constexpr auto kernel = decltype(kernel_tag)::value;
      const auto grid = static_cast<unsigned>(launch::wave_grid<kernel>(w.n_chunks, kBlock));
      kernel<<<grid, kBlock, 0, s>>>(a, c, wv, sc);
    };
    if constexpr (M == Mode::Reduce) {
      go(std::integral_constant<decltype(&_elementwise_fwd_kernel<Loss, Plan, TIn, TT>),
                                &_elementwise_fwd_kernel<Loss, Plan, TIn, TT>>{});
    } else if constexpr (M == Mode::None) {
      go(std::integral_constant<decltype(&_elementwise_none_kernel<Loss, Plan, TIn, TT>),
                                &_elementwise_none_kernel<Loss, Plan, TIn, TT>>{});
    } else {
      go(std::integral_constant<decltype(&_elementwise_bwd_kernel<Loss, Plan, TIn, TT>),
                                &_elementwise_bwd_kernel<Loss, Plan, TIn, TT>>{});
    }
  };
  using Red = std::integral_constant<Mode, Mode::Reduce>;
  if (pass == Pass::Backward) {
    return backward(a, stem, "_elementwise_bwd_kernel", w.n_chunks, [&](auto in, auto tt) {
      issue(General<Strided>{}, std::integral_constant<Mode, Mode::Backward>{}, in, tt);
    });
  }
  const Reduction r{{sc.sum, sc.count}, kSumBlock, a.mean && !c.prescaled, c.clamp_count};
  if (takes_hot<Loss>(a, c, pass, kind) && w.n_chunks > 0) {
    if (sc.table != nullptr) {
      const auto blocks = static_cast<unsigned>((a.cols + 8 + kBlock - 1) / kBlock);
      _class_table_kernel<Loss><<<blocks, kBlock, 0, s>>>(a, c, sc.table);
      launch::check_launch("_class_table_kernel");
    }
    return forward(a, stem, "_elementwise_fwd_kernel", w.n_chunks, r, s, [&](auto in, auto tt) {
      // takes_hot admitted only these pairs: naming no other keeps the kernel count down.
      if constexpr (hot_pair<Loss, typename decltype(in)::type, typename decltype(tt)::type>()) {
        Loss::hot(a, c, kind == OpsKind::Table, [&](auto plan) { issue(plan, Red{}, in, tt); });
      }
    });
  }
  forward(a, stem, "_elementwise_fwd_kernel", w.n_chunks, r, s, [&](auto in, auto tt) {
    if (!a.reduce) {
      issue(General<Strided>{}, std::integral_constant<Mode, Mode::None>{}, in, tt);
    } else if constexpr (vec_width<General<Uniform>, float, typename decltype(tt)::type>() > 1) {
      // Common target types only: the rest share the strided kernel (compile time).
      if (kind == OpsKind::Uniform) {
        issue(General<Uniform>{}, Red{}, in, tt);
      } else {
        issue(General<Strided>{}, Red{}, in, tt);
      }
    } else {
      issue(General<Strided>{}, Red{}, in, tt);
    }
  });
}

}  // namespace elementwise
}  // namespace fused_losses

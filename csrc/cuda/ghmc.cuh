// GHM-C: the per-element maths of csrc/cuda/ghmc.cu, host-callable
// (tests/test_cuda_host_math.py runs it on a CPU). The formula is
// fused_losses/reference/ghmc.py's (mmdet's GHMC):
//   g = |σ(x) - t|, rounded as the reference rounds it (σ(x) first, then - t);
//   slot = b with edges[b] <= g < edges[b+1] (edges[i] = i/bins in fp32, 1 + 1e-6
//          at the top), bins when g is in no bin (past the top, NaN), bins + 1
//          when label_weight <= 0 (or NaN): invalid;
//   loss = W[slot]·bce(x, t), d loss/dx = W[slot]·(σ(x) - t), W[bins] = W[bins+1] = 0.
// The histogram pass (ghmc.cu) and the loss pass bin through the same slot()
// on the same fast sigmoid, so an element lands in the same bin in both.
//
// Operands: label_weight per element (coef .x; 1 without one), the per-bin
// weights [bins] read through a table that block_setup stages in shared memory.
#pragma once
#include <cstdint>

#include "../launch_args.h"
#include "elementwise.cuh"
#include "fast_math.cuh"

namespace fused_losses {

constexpr int kGhmcSlots = kGhmcMaxBins + 2;  // bins, "valid but in no bin", invalid

// a - b rounded on its own: never contracted into an FMA with the product
// that formed a, which one kernel might do and the other not.
FL_HD float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

struct Ghmc {
  using Options = GhmcOptions;
  using Args = LaunchArgs<GhmcOptions>;
  using Element = elementwise::Element;

  // Only label_weight is per element; weights is indexed by bin.
  static constexpr unsigned kCoefOperands = 1u << GhmcOperands::label_weight;

  struct Consts {
    float4 coef;             // .x = 1: every element valid (no label_weight)
    int bins;
    float nbins;
    const float* weights;    // global [bins] (loss passes), null in the histogram pass
    float edge[kGhmcMaxBins + 1];  // the bin edges, formed on the host (no division here)
    const float2* edges;     // [bins]: {edges[b], edges[b+1]}; shared after block_setup
    const float* w;          // [kGhmcSlots]: W[slot], zero past bins; shared after block_setup
    bool count_kept, clamp_count;
    bool prescaled;          // a mean's 1/tot is in the weights: partials summed, not divided
  };

  static Consts consts(const Args& a) {
    Consts c{};
    c.coef = make_float4(1.f, 0.f, 0.f, 0.f);
    c.bins = static_cast<int>(a.opt.bins);
    c.nbins = static_cast<float>(c.bins);
    c.weights = a.operands[GhmcOperands::weights].ptr;
    for (int i = 0; i <= c.bins && i <= kGhmcMaxBins; ++i) c.edge[i] = edge(i, c.bins);
    c.count_kept = c.clamp_count = false;
    c.prescaled = true;
    return c;
  }

  // label_weight at (row, col) in .x.
  __device__ static float4 load_coef(const Args& a, const Consts& c, int64_t row, int64_t col) {
    const Operand& lw = a.operands[GhmcOperands::label_weight];
    if (lw.ptr == nullptr) return c.coef;
    return make_float4(device::load_operand(lw, row, col), 0.f, 0.f, 0.f);
  }

  // fp32 edges as mmdet builds them: i/bins rounded once, 1 + 1e-6 at the top.
  FL_HD static float edge(int i, int bins) {
    return i < bins ? static_cast<float>(i) / static_cast<float>(bins) : 1.f + 1e-6f;
  }

  // The tables of one block, from the kernel's parameters `in`: edges and
  // weights, from which every element's bin and weight are one shared load each.
  __device__ static void block_setup(const Args&, const Consts& in, Consts& c) {
    __shared__ float2 edges[kGhmcMaxBins];
    __shared__ float w[kGhmcSlots];
    for (int k = threadIdx.x; k < kGhmcSlots; k += blockDim.x) {
      if (k < in.bins) edges[k] = make_float2(in.edge[k], in.edge[k + 1]);
      w[k] = k < in.bins && in.weights != nullptr ? in.weights[k] : 0.f;
    }
    __syncthreads();
    c.edges = edges;
    c.w = w;
  }

  // b with edges[b] <= g < edges[b+1], else bins. trunc(g·bins) (g >= 0)
  // rounds differently from the edges i/bins, but by at most one bin, so one
  // step against the exact edges decides; g >= 1 + 1e-6 gives bins, and so
  // does NaN (the clamp maps it to 0, the last test to bins).
  FL_HD static int bin_of(const Consts& c, float g) {
    const int b0 = static_cast<int>(fminf(fmaxf(g * c.nbins, 0.f), c.nbins - 1.f));
    const float2 e = c.edges[b0];
    const int b = b0 - (g < e.x ? 1 : 0) + (g >= e.y ? 1 : 0);
    return g >= 0.f ? b : c.bins;
  }

  // The slot of a hard target (one: t = 1) and of any target.
  FL_HD static int slot_hard(const Consts& c, const fast::Sig& s, float x, bool one, float lw) {
    const float sp = fast::sigmoid(x, s);
    // |.|: rcp.approx may put σ(x) an ulp above 1, and g < 0 would read as NaN.
    const float g = fabsf(one ? sub_rn(1.f, sp) : sp);
    return lw > 0.f ? bin_of(c, g) : c.bins + 1;
  }
  FL_HD static int slot(const Consts& c, const fast::Sig& s, float x, float t, float lw) {
    return lw > 0.f ? bin_of(c, fabsf(sub_rn(fast::sigmoid(x, s), t))) : c.bins + 1;
  }

  // Hard 0/1 target, margin z = ±x: bce = -log σ(z), d bce/dx = ∓σ(-z).
  // W multiplies (never selects), so a NaN logit keeps a NaN loss.
  template <int G>
  FL_HD static Element hard(const Consts& c, float x, bool one, const float4& k) {
    const fast::Sig s = fast::sig(x);
    const float w = c.w[slot_hard(c, s, x, one, k.x)];
    const float z = one ? x : -x;
    const float q = z >= 0.f ? s.small : s.big;  // σ(-z)
    const float g = w * q;
    return Element{-w * fast::log_sigmoid(z, s), one ? -g : g, true};
  }

  // Any target t in [0, 1]: bce = -(t·log σ(x) + (1-t)·log σ(-x)),
  // d bce/dx = (1-t)·σ(x) - t·σ(-x) (σ(x) - t without cancellation).
  FL_HD static Element general(const Consts& c, float x, float t, const float4& k) {
    const fast::Sig s = fast::sig(x);
    const float w = c.w[slot(c, s, x, t, k.x)];
    const float log_p = fast::log_sigmoid(x, s), log_n = fast::log_sigmoid(-x, s);
    const float s_p = fast::sigmoid(x, s), s_n = fast::sigmoid(-x, s);
    const float loss = -(t * log_p + (1.f - t) * log_n);
    return Element{w * loss, w * ((1.f - t) * s_p - t * s_n), true};
  }

  // Bool targets: one plan, with or without a per-class label_weight table.
  template <class F>
  static bool hot(const Args&, const Consts&, bool table, F&& f) {
    if (table) {
      f(elementwise::Hot<0, elementwise::Table>{});
    } else {
      f(elementwise::Hot<0, elementwise::Uniform>{});
    }
    return true;
  }
};

}  // namespace fused_losses

// Runs the CUDA elementwise maths (csrc/cuda/focal_bce.cuh, asl.cuh, ghmc.cuh)
// and the skeleton's index walk (walk.cuh) on the CPU: built by
// tests/test_cuda_host_math.py with nvcc, -DFUSED_LOSSES_HOST_ERR=±1 pushing
// every approximate instruction by its worst-case error (fast_math.cuh).
//
// stdin, one case per line; stdout one line per case:
//   focal PLAN TK gamma alpha smoothing ignore pw w numel x t -> "loss grad"
//   asl PLAN TK gp gn clip eps detach pw w smoothing numel x t -> "loss grad"
//   ghmc PLAN bins lw x t                                      -> "loss grad slot"
//   bin bins g                                                 -> Ghmc::bin_of(g)
//   dice alpha x                                               -> "pt dpt" (dice.cuh)
//   walk numel cols V U vector grid                            -> "ok" | "FAIL why"
// PLAN: h0 h2 h14 hr (specialised hard-target plans), m0 m2 m14 mr (the same
// plans on floating targets: a tile, see mixed_tile; prints "loss grad verdict")
// or gen; TK: i (integer targets) or f (floating), for m*: fb / fs (the tile's
// other targets 0/1 / one soft); alpha / ignore nan = None; numel > 0 = a mean.
//   binary t1 .. t8                                            -> binary_targets: 1 | 0
// ghmc: PLAN h (hard target, Ghmc::hard) or gen; per-bin weights W[b] = 1 + b/8.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/asl.cuh"
#include "cuda/dice.cuh"
#include "cuda/focal_bce.cuh"
#include "cuda/ghmc.cuh"
#include "cuda/walk.cuh"

using namespace fused_losses;
using elementwise::Element;

// operator>> cannot read "nan": every number goes through strtod.
static double num(std::istream& in) {
  std::string s;
  in >> s;
  return std::strtod(s.c_str(), nullptr);
}

// A mixed plan (elementwise.cuh mixed(): a Hot plan on floating targets): the
// element is first of a tile of kTile targets, the others 0/1 (TK fb) or with
// one soft (fs); binary_targets decides the path for the whole tile, as the
// kernel's warp vote does, and eval_path runs it. Prints the verdict after.
constexpr int kTile = 8;
static int g_verdict = -1;

template <class Loss, int G>
Element mixed_tile(const std::string& tk, const typename Loss::Consts& c, float x, float t,
                   const float4& k) {
  float ts[kTile] = {t, 1.f, 0.f, 1.f, -0.f, 0.f, 1.f, 0.f};
  if (tk == "fs") ts[5] = 0.25f;
  const bool binary = elementwise::binary_targets(ts);
  g_verdict = binary ? 1 : 0;
  return binary ? elementwise::eval_path<Loss, G, true>(c, x, t, k)
                : elementwise::eval_path<Loss, G, false>(c, x, t, k);
}

template <class Loss, class Args>
Element eval(const std::string& plan, const std::string& tk, const Args& a,
             const typename Loss::Consts& c, float x, float t, const float4& k) {
  if (plan == "m0") return mixed_tile<Loss, 0>(tk, c, x, t, k);
  if (plan == "m2") return mixed_tile<Loss, 2>(tk, c, x, t, k);
  if (plan == "m14") return mixed_tile<Loss, 14>(tk, c, x, t, k);
  if (plan == "mr") return mixed_tile<Loss, -1>(tk, c, x, t, k);
  if (plan == "h0") return Loss::template hard<0>(c, x, t != 0.f, k);
  if (plan == "h2") return Loss::template hard<2>(c, x, t != 0.f, k);
  if (plan == "h14") return Loss::template hard<14>(c, x, t != 0.f, k);
  if (plan == "hr") return Loss::template hard<-1>(c, x, t != 0.f, k);
  return Loss::general(c, x, t, k);
}

static Element focal(std::istringstream& in) {
  std::string plan, tk;
  in >> plan >> tk;
  const double gamma = num(in), alpha = num(in), smoothing = num(in), ignore = num(in);
  const double pw = num(in), w = num(in);
  const auto numel = static_cast<int64_t>(num(in));
  const double x = num(in), t = num(in);
  LaunchArgs<FocalBceOptions> a;
  a.target_dtype = tk[0] == 'f' ? DType::Float32 : DType::Int64;
  a.numel = numel;
  a.mean = numel > 0;
  a.reduce = true;
  a.opt.gamma = static_cast<float>(gamma);
  a.opt.has_alpha = !std::isnan(alpha);
  a.opt.alpha = a.opt.has_alpha ? static_cast<float>(alpha) : 0.f;
  a.opt.label_smoothing = static_cast<float>(smoothing);
  a.opt.has_ignore_index = !std::isnan(ignore);
  a.opt.ignore_index = a.opt.has_ignore_index ? static_cast<int64_t>(ignore) : 0;
  const FocalBce::Consts c = FocalBce::consts(a);
  const float4 k = FocalBce::coef(c, c.alpha, static_cast<float>(pw), static_cast<float>(w));
  return eval<FocalBce>(plan, tk, a, c, static_cast<float>(x), static_cast<float>(t), k);
}

static Element asl(std::istringstream& in) {
  std::string plan, tk;
  in >> plan >> tk;
  const double gp = num(in), gn = num(in), clip = num(in), eps = num(in);
  const bool detach = num(in) != 0;
  const double pw = num(in), w = num(in), smoothing = num(in);
  const auto numel = static_cast<int64_t>(num(in));
  const double x = num(in), t = num(in);
  LaunchArgs<AslOptions> a;
  a.target_dtype = tk[0] == 'f' ? DType::Float32 : DType::Int64;
  a.numel = numel;
  a.mean = numel > 0;
  a.reduce = true;
  a.opt.gamma_pos = static_cast<float>(gp);
  a.opt.gamma_neg = static_cast<float>(gn);
  a.opt.clip = static_cast<float>(clip);
  a.opt.eps = static_cast<float>(eps);
  a.opt.detach_focal_weight = detach;
  a.opt.has_pos_weight = !std::isnan(pw);
  a.opt.pos_weight = a.opt.has_pos_weight ? static_cast<float>(pw) : 0.f;
  a.opt.label_smoothing = static_cast<float>(smoothing);
  const Asl::Consts c = Asl::consts(a);
  const float4 k = Asl::coef(c, c.pw, static_cast<float>(w));
  return eval<Asl>(plan, tk, a, c, static_cast<float>(x), static_cast<float>(t), k);
}

// One GHM-C element through the tables block_setup builds on the device.
static void ghmc(std::istringstream& in) {
  std::string plan;
  in >> plan;
  const int bins = static_cast<int>(num(in));
  const float lw = static_cast<float>(num(in));
  const float x = static_cast<float>(num(in)), t = static_cast<float>(num(in));
  LaunchArgs<GhmcOptions> a;
  a.opt.bins = bins;
  Ghmc::Consts c = Ghmc::consts(a);
  float2 edges[kGhmcMaxBins];
  float w[kGhmcSlots];
  for (int k = 0; k < kGhmcSlots; ++k) {
    if (k < bins) edges[k] = make_float2(c.edge[k], c.edge[k + 1]);
    w[k] = k < bins ? 1.f + 0.125f * static_cast<float>(k) : 0.f;
  }
  c.edges = edges;
  c.w = w;
  const float4 k = make_float4(lw, 0.f, 0.f, 0.f);
  const fast::Sig s = fast::sig(x);
  Element e;
  int slot;
  if (plan == "h") {
    e = Ghmc::hard<0>(c, x, t != 0.f, k);
    slot = Ghmc::slot_hard(c, s, x, t != 0.f, lw);
  } else {
    e = Ghmc::general(c, x, t, k);
    slot = Ghmc::slot(c, s, x, t, lw);
  }
  std::printf("%.9g %.9g %d\n", e.loss, e.grad, slot);
}

// Every element visited once, by the walk the kernel runs (run_chunks'
// chunk loop: pos_of / pos_add between a block's chunks, walk_chunk inside).
template <int V, int U>
static std::string walk(int64_t numel, int32_t cols, bool vector, int grid) {
  using namespace elementwise;
  Walk w;
  w.numel = numel;
  w.n_chunks = n_chunks(numel);
  w.cols = cols;
  w.vector = vector;
  std::vector<int> seen(static_cast<size_t>(numel), 0);
  const int32_t tile_c = (kBlock * V * U) % cols, sub_c = (kBlock * V) % cols;
  std::string err;
  auto check = [&](int64_t i, int64_t chunk, int32_t r, int32_t col, Pos start) {
    if (i < 0 || i >= numel || i != chunk * kChunk + r) { err = "index out of range"; return; }
    ++seen[static_cast<size_t>(i)];
    if (col < 0 || col % cols != i % cols) err = "column";
    const Pos p = pos_after(start, r, cols);
    if (p.row != i / cols || p.col != i % cols) err = "row/col";
  };
  for (int block = 0; block < grid; ++block) {
    Pos start = pos_of(static_cast<int64_t>(block) * kChunk, cols);
    const Pos step = pos_of(static_cast<int64_t>(grid) * kChunk, cols);
    for (int64_t chunk = block; chunk < w.n_chunks; chunk += grid) {
      for (int tid = 0; tid < kBlock; ++tid) {
        walk_chunk<V, U, true>(
            w, chunk, tid, start, tile_c, sub_c,
            [&](int64_t i0, int32_t r0, const int32_t (&cs)[U]) {
              for (int u = 0; u < U; ++u) {
                if (cs[u] >= cols) err = "sub-vector column >= C";
                for (int k = 0; k < V; ++k)
                  check(i0 + u * kBlock * V + k, chunk, r0 + u * kBlock * V + k, cs[u] + k, start);
              }
            },
            [&](int64_t i, int32_t r, int32_t col) {
              if (col >= cols) err = "tail column >= C";
              check(i, chunk, r, col, start);
            });
      }
      start = pos_add(start, step, cols);
    }
  }
  for (int64_t i = 0; i < numel && err.empty(); ++i)
    if (seen[static_cast<size_t>(i)] != 1) err = "element " + std::to_string(i) + " seen " +
                                                 std::to_string(seen[static_cast<size_t>(i)]);
  return err.empty() ? "ok" : "FAIL " + err;
}

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string what;
    in >> what;
    if (what == "walk") {
      int64_t numel;
      int32_t cols;
      int v, u, vector, grid;
      in >> numel >> cols >> v >> u >> vector >> grid;
      std::string r = v == 4 && u == 2   ? walk<4, 2>(numel, cols, vector, grid)
                      : v == 8 && u == 1 ? walk<8, 1>(numel, cols, vector, grid)
                      : v == 4 && u == 1 ? walk<4, 1>(numel, cols, vector, grid)
                                         : walk<1, 1>(numel, cols, vector, grid);
      std::printf("%s\n", r.c_str());
      continue;
    }
    if (what == "dice") {
      const float alpha = static_cast<float>(num(in)), x = static_cast<float>(num(in));
      const dice::Adjusted d = alpha == 0.f ? dice::adjusted<true>(x, 0.f)
                                            : dice::adjusted<false>(x, alpha);
      std::printf("%.9g %.9g\n", d.pt, d.dpt);
      continue;
    }
    if (what == "bin") {
      LaunchArgs<GhmcOptions> a;
      a.opt.bins = static_cast<int>(num(in));
      Ghmc::Consts c = Ghmc::consts(a);
      float2 edges[kGhmcMaxBins];
      for (int k = 0; k < a.opt.bins; ++k) edges[k] = make_float2(c.edge[k], c.edge[k + 1]);
      c.edges = edges;
      std::printf("%d\n", Ghmc::bin_of(c, static_cast<float>(num(in))));
      continue;
    }
    if (what == "ghmc") {
      ghmc(in);
      continue;
    }
    if (what == "binary") {  // binary_targets of kTile targets
      float ts[kTile];
      for (float& v : ts) v = static_cast<float>(num(in));
      std::printf("%d\n", elementwise::binary_targets(ts) ? 1 : 0);
      continue;
    }
    g_verdict = -1;
    const Element e = what == "focal" ? focal(in) : asl(in);
    if (g_verdict >= 0) {
      std::printf("%.9g %.9g %d\n", e.loss, e.grad, g_verdict);
    } else {
      std::printf("%.9g %.9g\n", e.loss, e.grad);
    }
  }
  return 0;
}

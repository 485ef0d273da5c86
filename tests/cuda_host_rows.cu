// Runs the per-row maths of the CUDA warp-row kernels (csrc/cuda/rows_math.cuh)
// on the CPU, the way csrc/cuda/rows_warp.cuh's warp_row uses it: built by
// tests/test_cuda_rows_math.py with nvcc, -DFUSED_LOSSES_HOST_ERR=±1 pushing
// every approximate instruction by its worst-case error (fast_math.cuh).
//
// stdin, one row per line; stdout one line per row, "loss g_0 .. g_{C-1}":
//   focal C y gamma eps A a_0 .. a_{C-1} x_0 .. x_{C-1}   (A = 1: per-class α given)
//   dsc C y alpha smooth x_0 .. x_{C-1}
// y must be in [0, C) (the kernels' NaN for other targets is a select).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/rows_math.cuh"

using namespace fused_losses;

static double num(std::istream& in) {  // operator>> cannot read "nan"
  std::string s;
  in >> s;
  return std::strtod(s.c_str(), nullptr);
}

static std::vector<float> nums(std::istream& in, int n) {
  std::vector<float> v(n);
  for (float& f : v) f = static_cast<float>(num(in));
  return v;
}

// The row statistics of warp_row: m, e'_j = exp(x_j - m)·[j ≠ y] (ex2 of the
// scaled difference, as on the device), s_other, s = s_other + e_y, and with
// `dot` Σ a_j·x_j and Σ a_j (a_j = 1 without α).
static rowmath::RowIn stats(const std::vector<float>& x, int y, const std::vector<float>& a,
                            bool dot, std::vector<float>& e) {
  const int C = static_cast<int>(x.size());
  float m = -INFINITY;
  for (float v : x) m = std::fmax(m, v);
  rowmath::RowIn in{};
  e.assign(C, 0.f);
  for (int j = 0; j < C; ++j) {
    const float ej = fast::ex2((x[j] - m) * fast::kLog2e);
    e[j] = j == y ? 0.f : ej;
    in.s_other += e[j];
    if (dot) {
      in.ax += (a.empty() ? 1.f : a[j]) * x[j];
      in.a_sum += a.empty() ? 1.f : a[j];
    }
  }
  in.m = m;
  in.s = in.s_other + fast::ex2((x[y] - m) * fast::kLog2e);
  in.x_y = x[y];
  in.n_cls = static_cast<float>(C);
  return in;
}

// g_j = e'_j·k1 - c_a·a_j, then g_y = c_y - c_a·a_y (store_row and the fix-up store).
static void print_row(const rowmath::RowOut& o, const rowmath::RowIn& in,
                      const std::vector<float>& e, const std::vector<float>& a, int y) {
  const float k1 = rowmath::row_k1(o, in);
  std::printf("%.9g", o.loss);
  for (int j = 0; j < static_cast<int>(e.size()); ++j) {
    const float a_j = a.empty() ? 1.f : a[j];
    const float g = j == y ? o.c_y - o.c_a * a_j : e[j] * k1 - o.c_a * a_j;
    std::printf(" %.9g", g);
  }
  std::printf("\n");
}

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string kind;
    in >> kind;
    const int C = static_cast<int>(num(in));
    const int y = static_cast<int>(num(in));
    std::vector<float> e;
    if (kind == "focal") {
      const float gamma = static_cast<float>(num(in)), eps = static_cast<float>(num(in));
      const bool has_a = num(in) != 0.0;
      const std::vector<float> a = has_a ? nums(in, C) : std::vector<float>();
      const std::vector<float> x = nums(in, C);
      const rowmath::RowIn r = stats(x, y, a, eps != 0.f, e);
      const rowmath::RowOut o = rowmath::focal_row(r, has_a ? a[y] : 1.f, gamma, eps);
      print_row(o, r, e, eps != 0.f ? a : std::vector<float>(), y);
    } else if (kind == "dsc") {
      const float alpha = static_cast<float>(num(in)), smooth = static_cast<float>(num(in));
      const std::vector<float> x = nums(in, C);
      const rowmath::RowIn r = stats(x, y, {}, false, e);
      print_row(rowmath::dsc_row(r, alpha, smooth), r, e, {}, y);
    } else {
      std::printf("unknown %s\n", kind.c_str());
    }
  }
  return 0;
}

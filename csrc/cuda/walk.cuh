// The index walk of the elementwise skeleton (elementwise.cuh): which elements
// a thread visits, in which vectors, and their class columns. Host-callable,
// so tests/test_cuda_host_math.py checks it on a CPU (coverage, tail, columns).
//
// Partition (depends on numel only, never on the grid or the SM count):
//   chunk c = elements [c·kChunk, min((c+1)·kChunk, numel)), one loss partial each;
//   a chunk is whole tiles then a tail; in a tile, thread `tid` takes U
//   sub-vectors of V consecutive elements, sub-vector u at u·kBlock·V + tid·V.
//   Blocks take chunks blockIdx.x, + gridDim.x, ...; the tail (and a whole
//   chunk when a pointer is misaligned for vectors) goes element by element.
// Columns (class index, for per-class operands): col(i) = i mod C, tracked
// incrementally in int32 with one compare-and-subtract per step (C < 2^30).
#pragma once
#include <cstdint>

#include "fast_math.cuh"

namespace fused_losses {
namespace elementwise {

constexpr int kBlock = 256;
constexpr int64_t kChunk = 8192;  // elements per loss partial: 32 per thread
constexpr int64_t kMaxTableCols = int64_t{1} << 20;  // largest C of a per-class table

// v + step - C when that is >= 0, for v, step < C: the next column.
FL_HD int32_t wrap_add(int32_t v, int32_t step, int32_t cols) {
  const int32_t s = v + step;
  return s >= cols ? s - cols : s;
}

// (row, col) of a flat index in the [R, C] view, advanced by a fixed step.
struct Pos {
  int64_t row = 0;
  int32_t col = 0;
};
FL_HD Pos pos_of(int64_t i, int32_t cols) {
  if (cols <= 0) return Pos{};
  Pos p;
  p.row = i / cols;
  p.col = static_cast<int32_t>(i - p.row * cols);
  return p;
}
FL_HD Pos pos_add(Pos p, Pos step, int32_t cols) {
  p.row += step.row;
  p.col += step.col;
  if (p.col >= cols) {
    p.col -= cols;
    ++p.row;
  }
  return p;
}

// The position of the element r after `start` (r < kChunk): one 32-bit divide.
FL_HD Pos pos_after(Pos start, int32_t r, int32_t cols) {
  const uint32_t sum = static_cast<uint32_t>(start.col) + static_cast<uint32_t>(r);
  const uint32_t q = sum / static_cast<uint32_t>(cols);
  return Pos{start.row + q, static_cast<int32_t>(sum - q * static_cast<uint32_t>(cols))};
}

// What a launch walks: numel, the chunk count, C (0 when no column is
// tracked) and whether every pointer allows the vector path.
struct Walk {
  int64_t numel = 0;
  int64_t n_chunks = 0;
  int32_t cols = 0;
  bool vector = false;
};

FL_HD int64_t n_chunks(int64_t numel) { return numel <= 0 ? 0 : (numel + kChunk - 1) / kChunk; }

// Visits one chunk as thread `tid`:
//   tile(i0, r0, cols[U])  per whole tile: sub-vector u holds elements
//                          i0 + u·kBlock·V + k (k < V), r0 = i0 - chunk start,
//                          cols[u] the column of its first element;
//   one(i, r, col)         per tail element.
// `start` is the chunk's first element's position; `tile_c` = (kBlock·V·U) mod C
// and `sub_c` = (kBlock·V) mod C (0 when columns are not tracked).
template <int V, int U, bool kCols, class Tile, class One>
FL_HD void walk_chunk(const Walk& w, int64_t chunk, int tid, Pos start, int32_t tile_c,
                      int32_t sub_c, Tile&& tile, One&& one) {
  constexpr int64_t kTile = int64_t{kBlock} * V * U;
  static_assert(kChunk % kTile == 0, "a chunk is whole tiles");
  const int64_t begin = chunk * kChunk;
  const int64_t len = (w.numel - begin < kChunk) ? w.numel - begin : kChunk;
  const int whole = w.vector ? static_cast<int>(len / kTile) : 0;
  int32_t col = 0;
  if (kCols) col = static_cast<int32_t>((static_cast<uint32_t>(start.col) + tid * V) %
                                        static_cast<uint32_t>(w.cols));
  for (int j = 0; j < whole; ++j) {
    const int32_t r0 = static_cast<int32_t>(j * kTile) + tid * V;
    int32_t cs[U];
    cs[0] = col;
#pragma unroll
    for (int u = 1; u < U; ++u) cs[u] = kCols ? wrap_add(cs[u - 1], sub_c, w.cols) : 0;
    tile(begin + r0, r0, cs);
    if (kCols) col = wrap_add(col, tile_c, w.cols);
  }
  for (int32_t r = static_cast<int32_t>(whole * kTile) + tid; r < len; r += kBlock) {
    const int32_t c = kCols ? static_cast<int32_t>((static_cast<uint32_t>(start.col) + r) %
                                                   static_cast<uint32_t>(w.cols))
                            : 0;
    one(begin + r, r, c);
  }
}

}  // namespace elementwise
}  // namespace fused_losses

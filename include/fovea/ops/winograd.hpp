#pragma once
// Winograd F(4x4, 3x3) for conv2d's 3x3, stride-1, dilation-1, ungrouped layers (any zero padding):
// 36 multiplications per 4x4 output tile and input channel instead of 144 (Lavin & Gray 2016, with the
// interpolation points 0, +-1, +-2, infinity):
//
//   Y = A^T [ (G g G^T) (.) (B^T d B) ] A    d: 6x6 input tile (tiles overlap by 2), g: 3x3 kernel.
//
// Summed over input channels, the element-wise product becomes 36 independent matrix products, one per
// position xi of the transformed 6x6 tile:  M[xi] (O x T) = U[xi] (O x C) * V[xi] (C x T), T tiles, which
// run through gemm_serial. The weight transform U = G g G^T depends on the weights only, so modules keep it
// (WinogradWeights); the functional conv2d computes it per call.
//
// Work is cut into blocks of consecutive tiles (tile t = (n * TH + ty) * TW + tx over the whole batch). A
// block is one work item: transform its input tiles (V, 36 x C x tiles), the 36 products (M, 36 x O x tiles),
// then the output transform with the conv epilogue (bias, residual, ReLU) straight into NCHW. With fewer
// blocks than threads (a single small image) the input transform is split over channels first, and then
// the output channels are split for the products and the output transform.
//
// Accuracy: the transforms multiply by up to 8 (A) and divide by 24 (G), so float rounding is several times
// that of a direct sum: against PyTorch's float64 conv (tests/ops/test_winograd.cpp) the largest error is
// 2e-6 .. 6.3e-6 of the largest output, 4x .. 23x im2col's (the ratio depends on the GEMM kernel), inside
// conv2d's float tolerance of 1e-5; in double it matches to ~1e-14. Non-finite inputs spread to the whole
// 4x4 output tile(s) whose input tile holds them, not only to the 3x3 neighbourhood.
#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/gemm.hpp"
#include "fovea/core/scratch.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {
namespace detail {

// Sizes of one Winograd conv: input (N, C, H, W), output (N, O, OH, OW), OH = H + 2 ph - 2.
struct WinogradShape {
  Index N, C, H, W, O, ph, pw, OH, OW;
  Index TH() const { return (OH + 3) / 4; }  // tile rows per image
  Index TW() const { return (OW + 3) / 4; }  // tiles per tile row
  Index tiles() const { return N * TH() * TW(); }
};

// How the tiles are cut (see the top of this file).
struct WinogradPlan {
  Index block = 1;     // tiles per block
  Index o_blocks = 1;  // > 1: output channels of a block split into that many parts
};

// Winograd's thread-reused scratch (core/scratch.hpp), one per thread and purpose.
struct WinogradScratch;
template <class T, int Slot>
T* winograd_scratch(std::size_t n) {
  return thread_scratch<T, WinogradScratch, Slot>(n);
}

// Leading dimension for n values whose 36 rows are walked together: an odd number of 64-byte lines, so
// the rows fall into different cache sets (a power-of-two stride put all 36 in one set and thrashed L1).
inline Index winograd_ld(Index n) {
  Index lines = (n + 15) / 16;
  if (lines % 2 == 0) ++lines;
  return lines * 16;
}

// weight (O, C, 3, 3) -> U (36, O, C): U[i * 6 + j][o][c] = (G g G^T)[i][j]. In double, rounded once.
template <class T>
void winograd_transform_weight(const T* weight, Index O, Index C, T* u, const Context& ctx) {
  static constexpr double G[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};
  const Index plane = O * C;
  constexpr Index kChunk = 64;  // input channels per step: each of the 36 output rows gets whole lines
  ctx.parallel_range(O, std::max<Index>(1, 2048 / C), [&](Index o0, Index o1) {
    double g[9][kChunk], gg[6][3][kChunk];  // the kernels of a chunk of channels, and G g
    for (Index o = o0; o < o1; ++o)
      for (Index c0 = 0; c0 < C; c0 += kChunk) {
        const Index nc = std::min(kChunk, C - c0);
        const T* w = weight + (o * C + c0) * 9;
        for (Index c = 0; c < nc; ++c)
          for (int k = 0; k < 9; ++k) g[k][c] = double(w[c * 9 + k]);
        for (int i = 0; i < 6; ++i)
          for (int k = 0; k < 3; ++k)
            for (Index c = 0; c < nc; ++c)
              gg[i][k][c] = G[i][0] * g[k][c] + G[i][1] * g[3 + k][c] + G[i][2] * g[6 + k][c];
        for (int i = 0; i < 6; ++i)
          for (int j = 0; j < 6; ++j) {
            T* dst = u + (i * 6 + j) * plane + o * C + c0;
            for (Index c = 0; c < nc; ++c)
              dst[c] = T(gg[i][0][c] * G[j][0] + gg[i][1][c] * G[j][1] + gg[i][2][c] * G[j][2]);
          }
      }
  });
}

// Scratch winograd_input needs for a block of `block` tiles: one padded input row, and the rows under
// the block's tiles in one image.
inline Index winograd_pad_size(const WinogradShape& s, Index block) {
  const Index tile_rows = std::min(s.TH(), (block + s.TW() - 1) / s.TW() + 1);
  return (4 * tile_rows + 3) * 4 * (s.TW() + 1) + 16;
}

// out[m * os + q] = in[4 q + m], m < 4, q < n: a row split into its four column phases.
template <class T>
void winograd_deinterleave4(const T* __restrict in, T* __restrict out, Index os, Index n) {
  T *p0 = out, *p1 = out + os, *p2 = out + 2 * os, *p3 = out + 3 * os;
  for (Index q = 0; q < n; ++q) {
    p0[q] = in[4 * q];
    p1[q] = in[4 * q + 1];
    p2[q] = in[4 * q + 2];
    p3[q] = in[4 * q + 3];
  }
}

// B^T applied to n 6-vectors at once, y_q[j] = sum_k B^T[q][k] x_k[j]. Every stream is its own restrict
// parameter: derived from one restrict pointer, GCC assumed the outputs might overlap and stayed scalar.
template <class T>
void winograd_bt_streams(const T* __restrict x0, const T* __restrict x1, const T* __restrict x2,
                         const T* __restrict x3, const T* __restrict x4, const T* __restrict x5, T* __restrict y0,
                         T* __restrict y1, T* __restrict y2, T* __restrict y3, T* __restrict y4, T* __restrict y5,
                         Index n) {
  for (Index j = 0; j < n; ++j) {
    const T d0 = x0[j], d1 = x1[j], d2 = x2[j], d3 = x3[j], d4 = x4[j], d5 = x5[j];
    y0[j] = T(4) * d0 - T(5) * d2 + d4;
    y1[j] = (d3 + d4) - T(4) * (d1 + d2);
    y2[j] = (d4 - d3) + T(4) * (d1 - d2);
    y3[j] = (d4 - d2) + T(2) * (d3 - d1);
    y4[j] = (d4 - d2) - T(2) * (d3 - d1);
    y5[j] = T(4) * d1 - T(5) * d3 + d5;
  }
}

// out[q * os + j] = sum_k B^T[q][k] in[k * is + j], j < n.
template <class T>
void winograd_bt(const T* in, Index is, T* out, Index os, Index n) {
  winograd_bt_streams(in, in + is, in + 2 * is, in + 3 * is, in + 4 * is, in + 5 * is, out, out + os, out + 2 * os,
                      out + 3 * os, out + 4 * os, out + 5 * os, n);
}

// A^T applied to n 6-vectors at once, y_q[j] = sum_k A^T[q][k] x_k[j], q < 4.
template <class T>
void winograd_at_streams(const T* __restrict x0, const T* __restrict x1, const T* __restrict x2,
                         const T* __restrict x3, const T* __restrict x4, const T* __restrict x5, T* __restrict y0,
                         T* __restrict y1, T* __restrict y2, T* __restrict y3, Index n) {
  for (Index j = 0; j < n; ++j) {
    const T a = x1[j] + x2[j], b = x1[j] - x2[j], c = x3[j] + x4[j], e = x3[j] - x4[j];
    y0[j] = x0[j] + a + c;
    y1[j] = b + T(2) * e;
    y2[j] = a + T(4) * c;
    y3[j] = b + T(8) * e + x5[j];
  }
}

// out[q * os + j] = sum_k A^T[q][k] in[k * is + j], q < 4, j < n.
template <class T>
void winograd_at(const T* in, Index is, T* out, Index os, Index n) {
  winograd_at_streams(in, in + is, in + 2 * is, in + 3 * is, in + 4 * is, in + 5 * is, out, out + os, out + 2 * os,
                      out + 3 * os, n);
}

// Input tiles [t0, t1) of channels [c0, c1) -> V: V[xi * vs + c * ldv + (t - t0)] = (B^T d B)[xi], where
// d is the tile's 6x6 input window (zero outside the image). ldv >= t1 - t0 + 16; `d` is scratch for
// 72 * ldv values, `pad` for winograd_pad_size(s, t1 - t0).
template <class T>
void winograd_input(const WinogradShape& s, const T* in, Index t0, Index t1, Index c0, Index c1, T* v, Index ldv,
                    Index vs, T* d, T* pad) {
  const Index nt = t1 - t0, HW = s.H * s.W, TW = s.TW(), TH = s.TH(), Wp = 4 * (TW + 1);
  T* e = d + 36 * ldv;
  T* line = pad;  // one zero-bordered input row
  T* ph = pad + Wp;
  for (Index c = c0; c < c1; ++c) {
    // Image by image, the input rows under this block's tiles are copied with their zero border and split
    // into the four column phases, ph[(r * 4 + m) * (TW + 1) + q] = row r, column 4 q + m (padded
    // coordinates). Element (i, k) of the windows of a run of tiles in one tile row is then a contiguous
    // piece of one phase, copied into row i * 6 + k of d.
    for (Index t = t0; t < t1;) {
      const Index n = t / (TH * TW), tb = std::min(t1, (n + 1) * TH * TW);
      const Index ty_a = (t / TW) % TH, ty_b = ((tb - 1) / TW) % TH + 1;
      const Index rows = 4 * (ty_b - ty_a) + 2, y_first = 4 * ty_a - s.ph;
      const T* src = in + (n * s.C + c) * HW;
      const Index a = std::min(Wp, s.pw), b = std::min(Wp, s.pw + s.W);  // line[x] = input column x - pw
      for (Index r = 0; r < rows; ++r) {
        const Index y = y_first + r;
        if (y < 0 || y >= s.H) {
          std::fill(line, line + Wp, T(0));
        } else {
          std::fill(line, line + a, T(0));
          std::copy(src + y * s.W + (a - s.pw), src + y * s.W + (b - s.pw), line + a);
          std::fill(line + std::max(a, b), line + Wp, T(0));
        }
        winograd_deinterleave4(line, ph + r * 4 * (TW + 1), TW + 1, TW + 1);
      }
      while (t < tb) {
        const Index ty = (t / TW) % TH, tx = t % TW, len = std::min(tb - t, TW - tx), j0 = t - t0;
        for (int i = 0; i < 6; ++i)
          for (int k = 0; k < 6; ++k) {
            const T* from = ph + ((4 * (ty - ty_a) + i) * 4 + (k & 3)) * (TW + 1) + tx + (k >> 2);
            T* to = d + (i * 6 + k) * ldv + j0;
            // Whole chunks of 16, past len: the excess lands where the next run (or the row's padding,
            // ldv >= nt + 16) is written after, and reads stay inside pad's slack. Runs are short (TW
            // tiles), and a remainder loop cost more than the copy.
            for (Index q = 0; q < len; q += 16)
              for (int u = 0; u < 16; ++u) to[q + u] = from[q + u];
          }
        t += len;
      }
    }
    // B^T d (down each column k), then (B^T d) B (along each row r), for every tile at once.
    for (int k = 0; k < 6; ++k) winograd_bt(d + k * ldv, 6 * ldv, e + k * ldv, 6 * ldv, nt);
    for (int r = 0; r < 6; ++r) winograd_bt(e + r * 6 * ldv, ldv, v + r * 6 * vs + c * ldv, vs, nt);
  }
}

// out[4 q + b] = in[b * is + q], b < 4, q < n: four rows of tile values side by side as an image row.
template <class T>
void winograd_interleave4(const T* __restrict in, Index is, T* __restrict out, Index n) {
  const T *y0 = in, *y1 = in + is, *y2 = in + 2 * is, *y3 = in + 3 * is;
  for (Index q = 0; q < n; ++q) {
    out[4 * q] = y0[q];
    out[4 * q + 1] = y1[q];
    out[4 * q + 2] = y2[q];
    out[4 * q + 3] = y3[q];
  }
}

// dst[x] = relu?(row[x] + bias + residual[x]), x < n; residual is null or may be dst itself.
template <class T>
void winograd_epilogue(const T* __restrict row, T* dst, const T* residual, Index n, T bias, bool relu) {
  // Written so NaN passes through, as torch.relu does.
  if (residual) {
    for (Index x = 0; x < n; ++x) {
      const T val = row[x] + bias + residual[x];
      dst[x] = relu && val < T(0) ? T(0) : val;
    }
  } else if (relu) {
    for (Index x = 0; x < n; ++x) {
      const T val = row[x] + bias;
      dst[x] = val < T(0) ? T(0) : val;
    }
  } else {
    for (Index x = 0; x < n; ++x) dst[x] = row[x] + bias;
  }
}

// M (36 x rows x tiles: M[xi * ms + r * ldm + (t - t0)]) for output channels [o0, o0 + rows) and tiles
// [t0, t1) -> out (N, O, OH, OW): relu?(A^T M A + bias + residual), the part of each 4x4 tile inside the
// image. `y` is scratch for 40 * ldm + 4 * s.TW() values.
template <class T>
void winograd_output(const WinogradShape& s, const T* m, Index ldm, Index ms, Index t0, Index t1, Index o0,
                     Index rows, const T* bias, const T* residual, bool relu, T* out, T* y) {
  const Index nt = t1 - t0;
  T* z = y + 16 * ldm;
  T* row = z + 24 * ldm;
  for (Index r = 0; r < rows; ++r) {
    const Index o = o0 + r;
    // M A (along each row i: z[i * 4 + q]), then A^T (M A) (down each column q: y[a * 4 + q]).
    for (int i = 0; i < 6; ++i) winograd_at(m + i * 6 * ms + r * ldm, ms, z + i * 4 * ldm, ldm, nt);
    for (int q = 0; q < 4; ++q) winograd_at(z + q * ldm, 4 * ldm, y + q * ldm, 4 * ldm, nt);
    const T bo = bias ? bias[o] : T(0);
    // Tile row by tile row: each output row a of the run's tiles is interleaved into `row` (the 4x4 tiles
    // side by side), then written with the epilogue in one contiguous pass.
    for (Index t = t0; t < t1;) {
      const Index n = t / (s.TH() * s.TW()), ty = (t / s.TW()) % s.TH(), tx0 = t % s.TW();
      const Index len = std::min(t1 - t, s.TW() - tx0), j0 = t - t0;
      const Index x0 = 4 * tx0, w = std::min(4 * len, s.OW - x0), h = std::min<Index>(4, s.OH - 4 * ty);
      for (Index a = 0; a < h; ++a) {
        winograd_interleave4(y + (a * 4) * ldm + j0, ldm, row, len);
        const Index at = ((n * s.O + o) * s.OH + 4 * ty + a) * s.OW + x0;
        winograd_epilogue(row, out + at, residual ? residual + at : nullptr, w, bo, relu);
      }
      t += len;
    }
  }
}

inline WinogradPlan winograd_plan(const WinogradShape& s, int threads) {
  // About 100 tiles per block: measured (one thread's total time on ResNet layers at batch 1 and 8), fewer
  // cost more in packing U, which Eigen repacks for every product (36 per block), and more spill V and M
  // (36 x (C + O) x block values) out of L2 for little gain.
  const Index T = s.tiles(), goal = 96;
  Index blocks = std::max<Index>(1, (T + goal / 2) / goal);
  WinogradPlan p;
  if (threads > 1 && blocks < 2 * threads) {
    // Too few blocks to share out evenly: the output channels are split instead, so that each thread packs
    // only its share of U (cutting the tiles finer cost up to 25% more work at 28x28 and 7x7, batch 8).
    p.block = (T + blocks - 1) / blocks;
    p.o_blocks = std::max<Index>(1, std::min<Index>(threads, s.O / 16));
    return p;
  }
  // A multiple of the threads when there are few blocks, so that none idles at the end.
  if (blocks < 8 * threads && blocks % threads != 0) blocks = (blocks + threads - 1) / threads * threads;
  p.block = (T + blocks - 1) / blocks;
  return p;
}

// input (N, C, H, W), U (36, O, C) from winograd_transform_weight, bias (O) or null -> out (N, O, OH, OW) =
// relu?(conv2d(input, weight, padding (ph, pw)) + bias + residual). residual may alias out; input may not.
template <class T>
void conv2d_winograd(const WinogradShape& s, const T* in, const T* u, const T* bias, T* out, bool relu,
                     const T* residual, const Context& ctx, const WinogradPlan* forced = nullptr) {
  const WinogradPlan plan = forced ? *forced : winograd_plan(s, ctx.num_threads());
  const Index T_all = s.tiles(), bt = std::max<Index>(1, std::min(plan.block, T_all));
  const Index blocks = (T_all + bt - 1) / bt, OC = s.O * s.C;
  // Strides of a block's buffers: ld between rows of one product, vs / ms between the 36 products.
  const Index ld = winograd_ld(bt + 16), vs = winograd_ld(s.C * ld);
  // The 36 products of output channels [o0, o0 + rows) for a block of nt tiles; M's products ms apart.
  auto products = [&](const T* v, Index nt, Index o0, Index rows, T* m, Index ms) {
    for (int xi = 0; xi < 36; ++xi)
      gemm_serial<T>(false, false, rows, nt, s.C, T(1), u + xi * OC + o0 * s.C, s.C, v + xi * vs, ld, T(0),
                     m + xi * ms, ld);
  };
  if (plan.o_blocks <= 1) {
    const Index ms = winograd_ld(s.O * ld);
    ctx.parallel_for(blocks, [&](Index b) {
      const Index t0 = b * bt, t1 = std::min(T_all, t0 + bt), nt = t1 - t0;
      T* v = winograd_scratch<T, 0>(std::size_t(36 * vs));
      T* m = winograd_scratch<T, 1>(std::size_t(36 * ms));
      T* d = winograd_scratch<T, 2>(std::size_t(72 * ld + 4 * s.TW()));
      T* pad = winograd_scratch<T, 4>(std::size_t(winograd_pad_size(s, bt)));
      winograd_input(s, in, t0, t1, 0, s.C, v, ld, vs, d, pad);
      products(v, nt, 0, s.O, m, ms);
      winograd_output(s, m, ld, ms, t0, t1, 0, s.O, bias, residual, relu, out, d);
    });
    return;
  }
  // Few tiles: every block's V first (split over channels), then output-channel parts of each block.
  const Index ob = plan.o_blocks, per = (s.O + ob - 1) / ob, ms = winograd_ld(per * ld);
  T* v_all = winograd_scratch<T, 3>(std::size_t(blocks * 36 * vs));
  const Index cparts = std::max<Index>(1, std::min<Index>(s.C, 4 * ctx.num_threads() / std::max<Index>(1, blocks)));
  const Index cper = (s.C + cparts - 1) / cparts;
  ctx.parallel_for(blocks * cparts, [&](Index i) {
    const Index b = i / cparts, c0 = std::min(s.C, (i % cparts) * cper), c1 = std::min(s.C, c0 + cper);
    const Index t0 = b * bt, t1 = std::min(T_all, t0 + bt);
    if (c0 >= c1) return;
    T* d = winograd_scratch<T, 2>(std::size_t(72 * ld));
    T* pad = winograd_scratch<T, 4>(std::size_t(winograd_pad_size(s, bt)));
    winograd_input(s, in, t0, t1, c0, c1, v_all + b * 36 * vs, ld, vs, d, pad);
  });
  ctx.parallel_for(blocks * ob, [&](Index i) {
    const Index b = i / ob, o0 = std::min(s.O, (i % ob) * per), rows = std::min(s.O, o0 + per) - o0;
    const Index t0 = b * bt, t1 = std::min(T_all, t0 + bt), nt = t1 - t0;
    if (rows <= 0) return;
    T* m = winograd_scratch<T, 1>(std::size_t(36 * ms));
    T* y = winograd_scratch<T, 2>(std::size_t(72 * ld + 4 * s.TW()));
    products(v_all + b * 36 * vs, nt, o0, rows, m, ms);
    winograd_output(s, m, ld, ms, t0, t1, o0, rows, bias, residual, relu, out, y);
  });
}

// The transformed weights of one conv layer (36, O, C), made on first use and reused by later calls, for
// modules that own a conv's weights. With `verify`, every call first compares the weights with the copy
// the transform was made from and redoes it when they differ, so a weight edited in place (a loader, a
// user) is never run stale; that costs one pass over two copies of the weights per call, about a quarter
// of the transform's memory traffic. Without, the weights must not change while this object is in use (a
// ResNet's folded convs, rebuilt with a fresh cache whenever the model's parameters change). Thread-safe;
// a copy starts with the same transform (it was made from equal weights).
template <class T>
class WinogradWeights {
 public:
  WinogradWeights() = default;
  explicit WinogradWeights(bool verify) : verify_(verify) {}
  WinogradWeights(const WinogradWeights& o) : verify_(o.verify_), entry_(o.current()) {}
  WinogradWeights& operator=(const WinogradWeights& o) {
    if (this != &o) {
      auto e = o.current();
      std::lock_guard<std::mutex> lock(mutex_);
      verify_ = o.verify_;
      entry_ = std::move(e);
    }
    return *this;
  }

  // weight (O, C, 3, 3) -> U (36, O, C), kept alive by the returned pointer even if another thread
  // replaces it meanwhile.
  std::shared_ptr<const std::vector<T>> get(const T* weight, Index O, Index C, const Context& ctx) const {
    const std::size_t n = std::size_t(O * C * 9);
    std::lock_guard<std::mutex> lock(mutex_);
    if (entry_ && entry_->O == O && entry_->C == C &&
        (!verify_ || std::memcmp(entry_->source.data(), weight, n * sizeof(T)) == 0))
      return std::shared_ptr<const std::vector<T>>(entry_, &entry_->u);
    auto e = std::make_shared<Entry>();
    e->O = O, e->C = C;
    if (verify_) e->source.assign(weight, weight + n);
    e->u.resize(std::size_t(36 * O * C));
    winograd_transform_weight(weight, O, C, e->u.data(), ctx);
    entry_ = e;
    return std::shared_ptr<const std::vector<T>>(entry_, &entry_->u);
  }

 private:
  struct Entry {
    Index O = 0, C = 0;
    std::vector<T> source;  // the weights transformed, when verifying
    std::vector<T> u;
  };
  std::shared_ptr<const Entry> current() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return entry_;
  }

  bool verify_ = false;
  mutable std::mutex mutex_;
  mutable std::shared_ptr<const Entry> entry_;
};

}  // namespace detail
}  // namespace fovea

#pragma once
// Streamed CLIP loss (cross-entropy over the rows and the columns of the B x B logits), and what both streamed
// losses share: LossOptions, LossResult, the argument checks and the tile sweep. The logits are never stored:
// they are walked in cache-sized tiles, each computed by a single-threaded GEMM.
#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <type_traits>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/gemm.hpp"
#include "fovea/core/tensor.hpp"

namespace fovea {

// How the streamed losses walk the B x B logits. LossOptions().tile(256) uses 256 x 256 tiles (the last row and
// column of tiles may be smaller); 0 chooses from B alone, never from the thread count, so a result is
// bit-identical for any number of threads. gradients(false) computes the loss only; grad_image and grad_text
// then come back empty and grad_scale, grad_bias as 0.
class LossOptions {
 public:
  LossOptions& tile(Index t) {
    tile_ = t;
    return *this;
  }
  Index tile() const { return tile_; }
  LossOptions& gradients(bool g) {
    gradients_ = g;
    return *this;
  }
  bool gradients() const { return gradients_; }

 private:
  Index tile_ = 0;
  bool gradients_ = true;
};

// What clip_loss and siglip_loss return: the loss and its gradient with respect to every input.
template <class T>
struct LossResult {
  T loss = 0;
  Tensor<T, 2> grad_image, grad_text;  // d loss / d image, d loss / d text: (B, D)
  T grad_scale = 0, grad_bias = 0;     // d loss / d scale, d loss / d bias (0 for clip)
};

namespace detail {

// Blocks template deduction, so clip_loss(x, y, 100) takes T from the tensors alone.
template <class T>
struct same {
  using type = T;
};
template <class T>
using same_t = typename same<T>::type;

template <class T>
using ArrayRow = Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>;
template <class T>
using ConstArrayRow = Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>;

// Tiles of 256 x 256 logits (256 KiB in float) keep Eigen's kernel near its peak with the packed operands in
// L2; a smaller batch gets smaller tiles so that there are 8 row blocks to share among threads.
inline Index auto_loss_tile(Index B) {
  Index t = 256;
  while (t > 32 && B < 8 * t) t /= 2;
  return std::min(t, B);
}

// Everything the sweep needs once the arguments have passed their checks.
struct LossPlan {
  Index B = 0, D = 0, tile = 0, blocks = 0;
};

template <class T>
std::string loss_shapes(const Tensor<T, 2>& image, const Tensor<T, 2>& text) {
  return cat("image ", shape_str(image), ", text ", shape_str(text));
}

// Largest row norm of x (B, D), or throws naming the first row that holds a non-finite value. Norms are taken
// as m * |x / m|, m = max|x|, so that no square overflows whatever the magnitude.
template <class T>
double max_row_norm(const char* op, const char* name, const Tensor<T, 2>& x, const std::string& shapes,
                    const Context& ctx) {
  const Index B = x.dimension(0), D = x.dimension(1);
  const Index chunk = 512, chunks = (B + chunk - 1) / chunk;
  if (chunks == 0) return 0.0;
  std::vector<double> norm(chunks, 0.0);
  std::vector<Index> bad(chunks, B);
  ctx.parallel_for(chunks, [&](Index c) {
    for (Index i = c * chunk; i < std::min(B, (c + 1) * chunk); ++i) {
      ConstArrayRow<T> row(x.data() + i * D, D);
      if (!row.allFinite()) {
        bad[c] = i;
        return;
      }
      const T m = D ? row.abs().maxCoeff() : T(0);
      if (m > T(0)) norm[c] = std::max(norm[c], double(m) * std::sqrt(double((row / m).square().sum())));
    }
  });
  const Index first = *std::min_element(bad.begin(), bad.end());
  if (first < B) {
    Index col = 0;
    while (std::isfinite(x.data()[first * D + col])) ++col;
    throw_shape(op, ": ", name, " row ", first, " holds a non-finite value (", x.data()[first * D + col],
                " at column ", col, "); ", shapes);
  }
  return *std::max_element(norm.begin(), norm.end());
}

// Every check runs here, before any compute: shapes, scale (and bias), tile, finite inputs, and a bound on the
// logits (and so on the loss and the gradients) that T can hold.
template <class T>
LossPlan plan_loss(const char* op, const Tensor<T, 2>& image, const Tensor<T, 2>& text, T scale, const T* bias,
                   const LossOptions& options, const Context& ctx) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "losses: float or double");
  const std::string shapes = loss_shapes(image, text);
  if (image.dimension(0) != text.dimension(0))
    throw_shape(op, ": expected image.size(0) == text.size(0) (one text per image), but got ", image.dimension(0),
                " and ", text.dimension(0), "; ", shapes);
  if (image.dimension(1) != text.dimension(1))
    throw_shape(op, ": expected image.size(1) == text.size(1) (one embedding width), but got ", image.dimension(1),
                " and ", text.dimension(1), "; ", shapes);
  if (image.dimension(0) == 0) throw_shape(op, ": expected a non-empty batch, but got B = 0; ", shapes);
  if (!(std::isfinite(scale) && scale > T(0)))
    throw_shape(op, ": expected a finite scale > 0, but got ", scale, "; ", shapes);
  if (bias && !std::isfinite(*bias)) throw_shape(op, ": expected a finite bias, but got ", *bias, "; ", shapes);
  if (options.tile() < 0)
    throw_shape(op, ": expected options.tile() >= 0 (0 = automatic), but got ", options.tile(), "; ", shapes);
  LossPlan p;
  p.B = image.dimension(0);
  p.D = image.dimension(1);
  const double nx = max_row_norm(op, "image", image, shapes, ctx);
  const double ny = max_row_norm(op, "text", text, shapes, ctx);
  // |logit| <= scale |x| |y| + |bias|; the SigLIP loss sums B of them per row, and the gradients carry scale |y|.
  const double s = double(scale), b = bias ? std::abs(double(*bias)) : 0.0;
  const double bound = std::max({nx * ny * std::max(s, 1.0) + b, s * nx, s * ny});
  const double limit = double(std::numeric_limits<T>::max()) / (16.0 * double(p.B));
  if (!(bound <= limit))
    throw_shape(op, ": the logits can reach ", bound, " (scale ", scale, " * max|image row| ", nx,
                " * max|text row| ", ny, bias ? cat(" + |bias| ", b) : std::string(), "), beyond the ", limit,
                " that ", std::is_same_v<T, float> ? "float" : "double", " holds safely for B = ", p.B,
                "; normalise the embeddings or compute in double; ", shapes);
  p.tile = options.tile() ? std::min(options.tile(), p.B) : auto_loss_tile(p.B);
  p.blocks = (p.B + p.tile - 1) / p.tile;
  return p;
}

// Scratch for one tile in flight: the tile and a few rows. A task borrows one and gives it back, so there are
// only as many as tasks running at once. Which one a tile gets cannot change its result: all are aligned to
// Eigen's packet size, since a vectorised sum adds its unaligned head apart and so depends on the address.
template <class T>
class TileScratch {
 public:
  struct Buffers {
    std::vector<T, Eigen::aligned_allocator<T>> tile, a, b, c;
  };

  TileScratch(Index count, Index tile) : all_(std::max<Index>(count, 1)) {
    for (auto& s : all_) {
      s.tile.resize(tile * tile);
      s.a.resize(tile);
      s.b.resize(tile);
      s.c.resize(tile);
      free_.push_back(&s);
    }
  }

  class Lease {
   public:
    explicit Lease(TileScratch& pool) : pool_(pool), buf_(pool.take()) {}
    ~Lease() { pool_.give(buf_); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Buffers* operator->() const { return buf_; }

   private:
    TileScratch& pool_;
    Buffers* buf_;
  };

 private:
  Buffers* take() {
    std::lock_guard<std::mutex> lock(mutex_);
    Buffers* b = free_.back();
    free_.pop_back();
    return b;
  }
  void give(Buffers* b) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.push_back(b);
  }

  std::vector<Buffers> all_;
  std::vector<Buffers*> free_;
  std::mutex mutex_;
};

// Visits every tile of the blocks x blocks grid in `blocks` steps: step k pairs row block I with column block
// (I + k) mod blocks. Within a step no two tiles share a row block or a column block, so every block's
// gradient rows and statistics have a single writer, and every block meets its partners in the same order
// whatever the thread count: all reductions happen in a fixed order. Step 0 holds the diagonal tiles, each
// block's first visit.
template <class F>
void sweep_tiles(Index blocks, const Context& ctx, F&& f) {
  for (Index k = 0; k < blocks; ++k) ctx.parallel_for(blocks, [&](Index I) { f(k, I, (I + k) % blocks); });
}

// The rows [i0, i0 + ti) and columns [j0, j0 + tj) of the logits that tile (I, J) covers.
struct TileSpan {
  Index i0, ti, j0, tj;
  bool diagonal;
};
inline TileSpan tile_span(const LossPlan& p, Index I, Index J) {
  const Index i0 = I * p.tile, j0 = J * p.tile;
  return {i0, std::min(p.tile, p.B - i0), j0, std::min(p.tile, p.B - j0), I == J};
}

// Folds a tile's log-sum-exp (max m, sum z of exp(x - m)) into a running one; starts from m = -inf, z = 0.
template <class T>
void merge_lse(T& m, T& z, T tile_m, T tile_z) {
  if (tile_m > m) {
    z = z * std::exp(m - tile_m) + tile_z;
    m = tile_m;
  } else {
    z += tile_z * std::exp(tile_m - m);
  }
}

// log(exp(d) + sum_{j != i} exp(x_j)) - d, from the running max m >= d and z = sum_{j != i} exp(x_j - m):
// log1p keeps the small cross-entropies of a well-separated batch exact where log(1 + tiny) would give 0.
inline double lse_excess(double m, double z, double d) {
  const double a = m - d;
  return a <= 30 ? std::log1p(z * std::exp(a)) : a + std::log(z + std::exp(-a));
}

// CLIP forward on one tile of logits L (ti, tj): folds its row and column statistics into the running ones,
// leaving the diagonal logit out of the sums and recording it instead. e, cm, cz: scratch rows of tj.
template <class T>
void clip_tile_forward(const T* L, const TileSpan& s, T* row_max, T* row_sum, T* col_max, T* col_sum, T* diag,
                       T* e, T* cm, T* cz) {
  const Index ti = s.ti, tj = s.tj;
  ArrayRow<T> E(e, tj), CM(cm, tj), CZ(cz, tj);
  CM.setConstant(-std::numeric_limits<T>::infinity());
  for (Index r = 0; r < ti; ++r) {
    ConstArrayRow<T> Lr(L + r * tj, tj);
    const T m = Lr.maxCoeff();
    E = (Lr - m).exp();
    if (s.diagonal) {
      diag[r] = Lr(r);
      E(r) = T(0);
    }
    merge_lse(row_max[r], row_sum[r], m, E.sum());
    CM = CM.max(Lr);
  }
  CZ.setZero();
  for (Index r = 0; r < ti; ++r) {
    ConstArrayRow<T> Lr(L + r * tj, tj);
    if (s.diagonal) {
      E = (Lr - CM).exp();
      E(r) = T(0);
      CZ += E;
    } else {
      CZ += (Lr - CM).exp();
    }
  }
  for (Index c = 0; c < tj; ++c) merge_lse(col_max[c], col_sum[c], CM(c), CZ(c));
}

// CLIP backward on one tile: overwrites L with G = (P + Q - 2I) / (2B), P = exp(L - lse_row) and
// Q = exp(L - lse_col) the row and column softmax, and returns sum(G * L). On the diagonal P - 1 = expm1(-excess)
// keeps G exact when the softmax saturates. e: a scratch row of tj.
template <class T>
double clip_tile_backward(T* L, const TileSpan& s, const T* lse_row, const T* lse_col, const T* ex_row,
                          const T* ex_col, T inv_2b, T* e) {
  const Index tj = s.tj;
  ArrayRow<T> E(e, tj);
  ConstArrayRow<T> lc(lse_col, tj);
  double g_dot_l = 0;
  for (Index r = 0; r < s.ti; ++r) {
    ArrayRow<T> Lr(L + r * tj, tj);
    E = ((Lr - lse_row[r]).exp() + (Lr - lc).exp()) * inv_2b;
    if (s.diagonal) E(r) = (std::expm1(-ex_row[r]) + std::expm1(-ex_col[r])) * inv_2b;
    g_dot_l += double((E * Lr).sum());
    Lr = E;
  }
  return g_dot_l;
}

}  // namespace detail

// image (B, D), text (B, D), scale -> loss, grad_image (B, D), grad_text (B, D), grad_scale (grad_bias = 0).
// loss = (mean_i CE(row i of L, i) + mean_j CE(column j of L, j)) / 2, L = scale * image * text^T, computed in
// tiles: one forward sweep gathers every row's and column's log-sum-exp at once, one backward sweep recomputes
// each tile and applies (P + Q - 2I) / (2B). Working memory O(B + threads * tile^2) beyond the gradients.
template <class T>
LossResult<T> clip_loss(const Tensor<T, 2>& image, const Tensor<T, 2>& text, detail::same_t<T> scale,
                        const LossOptions& options = {}, const Context& ctx = default_context()) {
  const detail::LossPlan p = detail::plan_loss<T>("clip_loss", image, text, scale, nullptr, options, ctx);
  const Index B = p.B, D = p.D;
  const T* X = image.data();
  const T* Y = text.data();
  const T inf = std::numeric_limits<T>::infinity();
  std::vector<T> row_max(B, -inf), row_sum(B, T(0)), col_max(B, -inf), col_sum(B, T(0)), diag(B);
  detail::TileScratch<T> scratch(std::min<Index>(ctx.num_threads(), p.blocks), p.tile);

  // Forward: L = scale * image * text^T, tile by tile; rows of block I and columns of block J gather stats.
  detail::sweep_tiles(p.blocks, ctx, [&](Index, Index I, Index J) {
    const detail::TileSpan s = detail::tile_span(p, I, J);
    typename detail::TileScratch<T>::Lease w(scratch);
    T* L = w->tile.data();
    detail::gemm_serial<T>(false, true, s.ti, s.tj, D, scale, X + s.i0 * D, D, Y + s.j0 * D, D, T(0), L, s.tj);
    detail::clip_tile_forward(L, s, &row_max[s.i0], &row_sum[s.i0], &col_max[s.j0], &col_sum[s.j0], &diag[s.i0],
                              w->a.data(), w->b.data(), w->c.data());
  });

  // CE(row i) = lse_i - L_ii: the loss; lse itself for the backward.
  std::vector<T> ex_row(B), ex_col(B), lse_row(B), lse_col(B);
  double total = 0;
  for (Index i = 0; i < B; ++i) {
    const double er = detail::lse_excess(row_max[i], row_sum[i], diag[i]);
    const double ec = detail::lse_excess(col_max[i], col_sum[i], diag[i]);
    ex_row[i] = T(er);
    ex_col[i] = T(ec);
    lse_row[i] = T(diag[i] + er);
    lse_col[i] = T(diag[i] + ec);
    total += er + ec;
  }
  LossResult<T> out;
  out.loss = T(total / (2.0 * double(B)));
  if (!options.gradients()) return out;

  // Backward: d loss / d L = G = (P + Q - 2I) / (2B); grad_image = scale * G * text, grad_text = scale * G^T *
  // image, grad_scale = sum(G * L) / scale. Step 0 writes each gradient block first (beta = 0).
  out.grad_image = Tensor<T, 2>(B, D);
  out.grad_text = Tensor<T, 2>(B, D);
  T* dX = out.grad_image.data();
  T* dY = out.grad_text.data();
  const T inv_2b = T(1) / T(2 * B);
  std::vector<double> g_dot_l(p.blocks, 0.0);
  detail::sweep_tiles(p.blocks, ctx, [&](Index k, Index I, Index J) {
    const detail::TileSpan s = detail::tile_span(p, I, J);
    typename detail::TileScratch<T>::Lease w(scratch);
    T* L = w->tile.data();
    detail::gemm_serial<T>(false, true, s.ti, s.tj, D, scale, X + s.i0 * D, D, Y + s.j0 * D, D, T(0), L, s.tj);
    g_dot_l[I] += detail::clip_tile_backward(L, s, &lse_row[s.i0], &lse_col[s.j0], &ex_row[s.i0], &ex_col[s.j0],
                                             inv_2b, w->a.data());
    const T beta = k == 0 ? T(0) : T(1);
    detail::gemm_serial<T>(false, false, s.ti, D, s.tj, scale, L, s.tj, Y + s.j0 * D, D, beta, dX + s.i0 * D, D);
    detail::gemm_serial<T>(true, false, s.tj, D, s.ti, scale, L, s.tj, X + s.i0 * D, D, beta, dY + s.j0 * D, D);
  });
  double gs = 0;
  for (double v : g_dot_l) gs += v;
  out.grad_scale = T(gs / double(scale));
  return out;
}

}  // namespace fovea

#pragma once
// scaled_dot_product_attention (torch.nn.functional.scaled_dot_product_attention, inference):
// softmax(q k^T * scale + mask) v for q (B, H, Nq, Dh), k (B, H, Nk, Dh), v (B, H, Nk, Dv).
//
// How it runs. Work items are (batch, head, block of query rows), spread over the Context. Each item walks
// the keys in blocks, flash-attention style: scores S = scale * Q K_blk^T (gemm_serial_stack), the mask,
// then an online softmax that keeps each row's running maximum m and sum l and rescales what the output row
// has accumulated when m grows; the output block accumulates P V_blk (gemm_serial_stack) in place and is
// divided by l at the end. Only one (query block x key block) score tile exists per thread, so memory stays O(N D)
// whatever N is. Short sequences (ViT's 197 tokens) fit one key block and pay no rescaling.
//
// Fully masked rows: a query row whose scores are all -inf (every key masked) gives an output row of
// zeros. PyTorch 1.13's formula gives NaN there; PyTorch >= 2.5 returns zeros (its _safe_softmax), and
// zeros keep padding rows of a packed sequence from turning into NaN that a later masked product would
// spread (0 * NaN = NaN). +inf or NaN in the scores still gives NaN, as in PyTorch.
//
// The kernel takes strided operands (detail::attention_forward), so a fused QKV projection (B, N, 3, H, Dh)
// is read in place and the output can be written straight into (B, N, H * Dv) for the output projection.
//
// This header also holds the two GEMM helpers the transformer ops and modules share (detail::
// gemm_serial_stack, detail::fused_linear); they belong in core/gemm.hpp and ops/linear.hpp once those
// take them.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/gemm.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/ops/activation.hpp"

namespace fovea {

// Which keys each query may attend to, for scaled_dot_product_attention and the attention modules. A view:
// the tensor it is made from must outlive the call (temporaries are refused at compile time). Every mask
// is (B | 1, H | 1, Nq | 1, Nk | 1), broadcast as PyTorch broadcasts attn_mask; a rank-2 mask is (Nq, Nk).
//   AttentionMask<T>()                  no mask
//   AttentionMask<T>::additive(m)       scores + m (m may hold -inf)
//   AttentionMask<T>::boolean(m)        true = may attend (PyTorch's convention for a bool attn_mask)
//   AttentionMask<T>::segments(ids)     ids (B, N), self-attention of packed sequences: query i attends key j
//                                       iff ids[i] == ids[j] >= 0; negative ids are padding. When each
//                                       segment's keys are one contiguous run (as packing lays them out),
//                                       each query run attends its key run alone: cost sum_i n_i^2, not N^2;
//                                       otherwise key blocks of other segments are skipped.
//   AttentionMask<T>::segments(q_ids, k_ids)  the same with (B, Nq) and (B, Nk) ids.
template <class T>
class AttentionMask {
 public:
  enum class Kind { none, additive, boolean, segments };

  AttentionMask() = default;

  static AttentionMask additive(const Tensor<T, 4>& m) { return AttentionMask(Kind::additive, m.data(), m.dimensions()); }
  static AttentionMask additive(const Tensor<T, 2>& m) {
    return AttentionMask(Kind::additive, m.data(), {1, 1, m.dimension(0), m.dimension(1)});
  }
  static AttentionMask boolean(const Tensor<bool, 4>& m) { return AttentionMask(Kind::boolean, m.data(), m.dimensions()); }
  static AttentionMask boolean(const Tensor<bool, 2>& m) {
    return AttentionMask(Kind::boolean, m.data(), {1, 1, m.dimension(0), m.dimension(1)});
  }
  static AttentionMask segments(const Tensor<Index, 2>& ids) { return segments(ids, ids); }
  static AttentionMask segments(const Tensor<Index, 2>& q_ids, const Tensor<Index, 2>& k_ids) {
    AttentionMask a(Kind::segments, nullptr, {q_ids.dimension(0), 1, q_ids.dimension(1), k_ids.dimension(1)});
    a.q_ids_ = q_ids.data();
    a.k_ids_ = k_ids.data();
    a.k_ids_batch_ = k_ids.dimension(0);
    return a;
  }
  // A view of a temporary would dangle as soon as the full expression ends.
  static AttentionMask additive(const Tensor<T, 4>&&) = delete;
  static AttentionMask additive(const Tensor<T, 2>&&) = delete;
  static AttentionMask boolean(const Tensor<bool, 4>&&) = delete;
  static AttentionMask boolean(const Tensor<bool, 2>&&) = delete;
  static AttentionMask segments(const Tensor<Index, 2>&&) = delete;
  static AttentionMask segments(const Tensor<Index, 2>&&, const Tensor<Index, 2>&) = delete;
  static AttentionMask segments(const Tensor<Index, 2>&, const Tensor<Index, 2>&&) = delete;

  Kind kind() const { return kind_; }
  bool empty() const { return kind_ == Kind::none; }
  // (B | 1, H | 1, Nq | 1, Nk | 1); for segments (B, 1, Nq, Nk).
  const std::array<Index, 4>& dims() const { return dims_; }
  const T* additive_data() const { return static_cast<const T*>(data_); }
  const bool* boolean_data() const { return static_cast<const bool*>(data_); }
  const Index* q_ids() const { return q_ids_; }
  const Index* k_ids() const { return k_ids_; }
  Index k_ids_batch() const { return k_ids_batch_; }

  // "additive (2, 1, 197, 197)", for messages.
  std::string str() const {
    switch (kind_) {
      case Kind::none: return "none";
      case Kind::additive: return detail::cat("additive ", detail::dims_str(dims_));
      case Kind::boolean: return detail::cat("boolean ", detail::dims_str(dims_));
      case Kind::segments:
        return detail::cat("segments q_ids (", dims_[0], ", ", dims_[2], "), k_ids (", k_ids_batch_, ", ", dims_[3], ")");
    }
    return {};
  }

 private:
  AttentionMask(Kind kind, const void* data, const std::array<Index, 4>& dims) : kind_(kind), data_(data), dims_(dims) {}

  Kind kind_ = Kind::none;
  const void* data_ = nullptr;
  std::array<Index, 4> dims_{0, 0, 0, 0};
  const Index* q_ids_ = nullptr;
  const Index* k_ids_ = nullptr;
  Index k_ids_batch_ = 0;
};

namespace detail {

// Whether gemm_serial runs an epilogue tile by tile (fovea's float kernel), while each tile is in L1, and
// packs into thread-reused buffers, not Eigen's stack-or-heap ones, so products need not be cut.
template <class T>
constexpr bool gemm_tiles_run_epilogue() {
#ifdef FOVEA_GEMM_KERNEL
  if constexpr (std::is_same_v<T, float>) return true;
#endif
  return false;
}

// gemm_serial cut into pieces of at most 256 x 256 outputs and 512 bytes of depth per row (128 floats, 64
// doubles). Eigen packs each product's operands into buffers of kc * mc and kc * nc elements, on the stack
// up to EIGEN_STACK_ALLOCATION_LIMIT (128 KiB) and from malloc above; the heap path costs a page-faulting
// allocation per call, because glibc returns large freed blocks to the system and takes them back on the
// next call (measured: a ViT-S block at batch 1 ran 2.4x slower). Pieces this size stay on the stack, and
// the extra passes over C (one per depth piece) hit a tile that is in L1/L2.
// The epilogue is gemm_serial's.
template <class T, class Epilogue = NoEpilogue>
void gemm_serial_stack(bool trans_a, bool trans_b, Index m, Index n, Index k, T alpha, const T* a, Index lda,
                       const T* b, Index ldb, T beta, T* c, Index ldc, const Epilogue& epilogue = Epilogue()) {
  constexpr Index kPiece = 256, kDepth = Index(512 / sizeof(T));
  if (gemm_tiles_run_epilogue<T>() || k <= 0)
    return gemm_serial<T>(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epilogue);
  for (Index i0 = 0; i0 < m; i0 += kPiece)
    for (Index j0 = 0; j0 < n; j0 += kPiece)
      for (Index k0 = 0; k0 < k; k0 += kDepth) {
        const T* ap = trans_a ? a + k0 * lda + i0 : a + i0 * lda + k0;
        const T* bp = trans_b ? b + j0 * ldb + k0 : b + k0 * ldb + j0;
        gemm_serial<T>(trans_a, trans_b, std::min(kPiece, m - i0), std::min(kPiece, n - j0), std::min(kDepth, k - k0),
                       alpha, ap, lda, bp, ldb, k0 == 0 ? beta : T(1), c + i0 * ldc + j0, ldc);
      }
  epilogue(c, ldc, m, n, Index(0), Index(0));
}

// How fused_linear (and patch_embed) cut an (M, N) output: at most max_rows rows a tile, spanning all rows
// when M <= max_rows so that each weight is packed once; about 256 columns a tile, more tiles when that
// gives a thread fewer than two, and a tile count that is a multiple of the thread count, so no thread
// idles at the end. Tiles are whole `align`-column panels (the GEMM kernel's tile width, gemm_col_align),
// spread as evenly as the panels allow: cutting 3072 columns into tiles of 256 had fovea's 48-column kernel
// compute 288 for every 256 (11% of a ViT's linear time).
struct GemmTiles {
  Index row_tiles, mt, col_tiles, panels, align, N;
  Index count() const { return row_tiles * col_tiles; }
  Index col_begin(Index c) const { return std::min(N, c * panels / col_tiles * align); }  // c in [0, col_tiles]
};
inline GemmTiles gemm_tiles(Index M, Index N, Index threads, Index align, Index max_rows = 256) {
  GemmTiles t;
  t.row_tiles = (M + max_rows - 1) / max_rows;
  t.mt = (M + t.row_tiles - 1) / t.row_tiles;
  t.align = align;
  t.N = N;
  t.panels = (N + align - 1) / align;
  Index cols = std::max((N + 255) / 256, (2 * threads + t.row_tiles - 1) / t.row_tiles);
  const Index total = (t.row_tiles * cols + threads - 1) / threads * threads;
  t.col_tiles = std::max<Index>(1, std::min((total + t.row_tiles - 1) / t.row_tiles, t.panels));
  // Tiles of equal width where a few more of them allow it: the 48 panels of a ViT-B qkv projection made 10
  // tiles of 4 or 5 panels, and a thread with two of 5 left the other idle for a panel's time at the end.
  for (Index c = t.col_tiles; c <= 2 * t.col_tiles && c <= t.panels; ++c)
    if (t.panels % c == 0 && (t.row_tiles * c) % threads == 0) {
      t.col_tiles = c;
      break;
    }
  return t;
}

// out (M, N) with row stride ldo = act(x (M, K) (row stride ldx) W^T + bias), W (N, K) contiguous, bias (N) or
// null; or, with accumulate, out += x W^T + bias (act must be identity): a linear layer with its epilogue.
// Each tile is one gemm_serial_stack whose epilogue adds the bias and applies the activation while the
// values are in cache, so neither costs a pass over memory. On fovea's float kernel that happens per 8 x 48
// tile of the kernel, so a tile may span every row and each weight is packed once whatever the batch (at
// ViT-B batch 8, tiles of 256 rows packed every weight 7 times); elsewhere tiles keep to 256 rows. The
// transformer modules run their projections through it.
template <class T>
void fused_linear(const T* x, Index ldx, Index M, Index K, const T* w, Index N, const T* bias, Activation act,
                  bool accumulate, T* out, Index ldo, const Context& ctx) {
  if (M <= 0 || N <= 0) return;
  const GemmTiles tiles =
      gemm_tiles(M, N, ctx.num_threads(), gemm_col_align<T>(), gemm_tiles_run_epilogue<T>() ? M : 256);
  ctx.parallel_for(tiles.count(), [&](Index t) {
    const Index i0 = (t / tiles.col_tiles) * tiles.mt, j0 = tiles.col_begin(t % tiles.col_tiles);
    const Index m = std::min(tiles.mt, M - i0), n = tiles.col_begin(t % tiles.col_tiles + 1) - j0;
    auto epilogue = [&](T* c, Index ldc, Index rows, Index cols, Index, Index j) {
      for (Index r = 0; r < rows; ++r) {
        T* row = c + r * ldc;
        if (bias) {
          const T* b = bias + j0 + j;
          for (Index q = 0; q < cols; ++q) row[q] += b[q];
        }
        apply_activation(act, row, cols);
      }
    };
    gemm_serial_stack<T>(false, true, m, n, K, T(1), x + i0 * ldx, ldx, w + j0 * K, K, accumulate ? T(1) : T(0),
                         out + i0 * ldo + j0, ldo, epilogue);
  });
}

// One operand of the attention kernel: element (b, h, row, col) is at data[b * batch + h * head + row * row_
// + col]; columns are contiguous. (B, H, N, D) contiguous and (B, N, H * D) are both such views.
template <class T>
struct AttnView {
  T* data;
  Index batch, head, row;
  T* at(Index b, Index h, Index r) const { return data + b * batch + h * head + r * row; }
};

// Sizes and operands of one attention call; scale multiplies q k^T.
template <class T>
struct AttentionArgs {
  Index B, H, Nq, Nk, Dh, Dv;
  AttnView<const T> q, k, v;
  AttnView<T> out;
  T scale;
};

// Blocking. A work item is up to 256 query rows of one (batch, head): each item packs its keys and values
// once, so fewer, taller items cost less (measured: ViT-B heads run 7% faster as one 197-row item than as
// four of 50; at 4096 tokens, 256-row items are 7% faster than 64-row ones). Sequences of up to 640 keys
// are one key block (no online rescaling: ViT's 197, 257 and 577 tokens); longer ones stream 256 keys at a
// time, keeping the score tile (256 x 256) and both packed operands in L2. Items are split further (down
// to 32 rows) only when (batch, head) pairs are fewer than 8; the split depends on the shapes alone, never
// on the thread count, so results do not change with threads.
constexpr Index kAttnMaxQueryBlock = 256;
constexpr Index kAttnMaxSingleKeyBlock = 640;
constexpr Index kAttnKeyBlock = 256;
constexpr Index kAttnMinItems = 8;

inline Index attention_key_block(Index nk) { return nk <= kAttnMaxSingleKeyBlock ? nk : kAttnKeyBlock; }

// The shape list every attention message ends with.
template <class T>
std::string attention_shapes(const std::array<Index, 4>& q, const std::array<Index, 4>& k, const std::array<Index, 4>& v,
                             const AttentionMask<T>& mask) {
  return cat("; query ", dims_str(q), ", key ", dims_str(k), ", value ", dims_str(v),
             mask.empty() ? std::string() : cat(", attn_mask ", mask.str()));
}

// Throws ShapeError unless mask broadcasts to (B, H, Nq, Nk); `shapes` ends the message.
template <class T>
void check_attention_mask(const char* op, const AttentionMask<T>& mask, Index B, Index H, Index Nq, Index Nk,
                          const std::string& shapes) {
  if (mask.empty()) return;
  const auto& d = mask.dims();
  const std::array<Index, 4> want{B, H, Nq, Nk};
  if (mask.kind() == AttentionMask<T>::Kind::segments) {
    if (d[0] != B || d[2] != Nq || mask.k_ids_batch() != B || d[3] != Nk)
      throw_shape(op, ": expected segment ids of shape (B, Nq) = (", B, ", ", Nq, ") for queries and (B, Nk) = (", B,
                  ", ", Nk, ") for keys", shapes);
    return;
  }
  for (int i = 0; i < 4; ++i)
    if (d[i] != want[i] && d[i] != 1)
      throw_shape(op, ": expected attn_mask broadcastable to (B, H, Nq, Nk) = ", dims_str(want), ", but got ",
                  dims_str(d), " (dimension ", i, " is ", d[i], ", not 1 or ", want[i], ")", shapes);
}

// Per-thread scratch of the kernel, grown on demand and kept between calls. Aligned for the widest vector,
// so that Eigen's vectorised row sums split a row the same way on every thread: results do not depend on
// which thread ran an item.
template <class T>
struct AttnScratch {
  std::vector<T, Eigen::aligned_allocator<T>> scores, row_max, row_sum;
  void reserve(Index mq, Index nk) {
    if (scores.size() < std::size_t(mq * nk)) scores.resize(std::size_t(mq * nk));
    if (row_max.size() < std::size_t(mq)) row_max.resize(std::size_t(mq)), row_sum.resize(std::size_t(mq));
  }
};
template <class T>
AttnScratch<T>& attn_scratch() {
  thread_local AttnScratch<T> s;
  return s;
}

// [min, max] of the non-negative ids in ids[0..n), or an empty range (min > max) if there are none.
inline std::pair<Index, Index> segment_range(const Index* ids, Index n) {
  Index lo = std::numeric_limits<Index>::max(), hi = -1;
  for (Index i = 0; i < n; ++i)
    if (ids[i] >= 0) lo = std::min(lo, ids[i]), hi = std::max(hi, ids[i]);
  return {lo, hi};
}

// One work item: query rows [i0, i0 + mq) of (b, h), all key blocks; writes the output rows.
template <class T>
void attention_block(const AttentionArgs<T>& a, const AttentionMask<T>& mask,
                     const std::vector<std::pair<Index, Index>>& key_ranges, Index b, Index h, Index i0, Index mq) {
  using Kind = typename AttentionMask<T>::Kind;
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const Index Nk = a.Nk, Dh = a.Dh, Dv = a.Dv;
  const Index kb = attention_key_block(Nk);
  AttnScratch<T>& sc = attn_scratch<T>();
  sc.reserve(mq, kb);
  T* S = sc.scores.data();
  T* m = sc.row_max.data();
  T* l = sc.row_sum.data();
  std::fill(m, m + mq, kNegInf);
  std::fill(l, l + mq, T(0));

  const T* Q = a.q.at(b, h, i0);
  T* O = a.out.at(b, h, i0);
  const Index ldo = a.out.row;

  // Mask element (i, j) of this (b, h) for query row i0 + r: base pointer per row and the key stride.
  const auto& md = mask.dims();
  const Index mb = md[0] == 1 ? 0 : b, mh = md[1] == 1 ? 0 : h;
  const Index m_row_stride = md[2] == 1 ? 0 : md[3], m_key_stride = md[3] == 1 ? 0 : 1;
  const Index m_offset = (mb * md[1] + mh) * md[2] * md[3];
  const Index* qid = nullptr;
  const Index* kid = nullptr;
  std::pair<Index, Index> q_range{0, -1};
  if (mask.kind() == Kind::segments) {
    qid = mask.q_ids() + b * a.Nq + i0;
    kid = mask.k_ids() + b * Nk;
    q_range = segment_range(qid, mq);
  }

  bool first = true;  // no product has been accumulated into O yet
  const Index key_blocks = (Nk + kb - 1) / kb;
  for (Index jb = 0; jb < key_blocks; ++jb) {
    const Index j0 = jb * kb, nk = std::min(kb, Nk - j0);
    if (qid) {
      const auto& kr = key_ranges[std::size_t(b * key_blocks + jb)];
      if (q_range.first > q_range.second || kr.first > kr.second || kr.second < q_range.first ||
          q_range.second < kr.first)
        continue;  // no query of this block shares a segment with a key of that block
    }
    // S (mq, nk) = scale * Q (mq, Dh) K_blk^T (Dh, nk)
    gemm_serial_stack<T>(false, true, mq, nk, Dh, a.scale, Q, a.q.row, a.k.at(b, h, j0), a.k.row, T(0), S, nk);

    for (Index r = 0; r < mq; ++r) {
      T* s = S + r * nk;
      switch (mask.kind()) {
        case Kind::none: break;
        case Kind::additive: {
          const T* mr = mask.additive_data() + m_offset + (i0 + r) * m_row_stride + j0 * m_key_stride;
          if (m_key_stride) {
            for (Index j = 0; j < nk; ++j) s[j] += mr[j];
          } else {
            for (Index j = 0; j < nk; ++j) s[j] += mr[0];
          }
          break;
        }
        case Kind::boolean: {
          const bool* mr = mask.boolean_data() + m_offset + (i0 + r) * m_row_stride + j0 * m_key_stride;
          for (Index j = 0; j < nk; ++j) s[j] = mr[j * m_key_stride] ? s[j] : kNegInf;
          break;
        }
        case Kind::segments: {
          const Index id = qid[r];
          const Index* kr = kid + j0;
          for (Index j = 0; j < nk; ++j) s[j] = (id >= 0 && kr[j] == id) ? s[j] : kNegInf;
          break;
        }
      }
      // Online softmax: m_new = max(m, max_j s_j); p = exp(s - m_new); l = l exp(m - m_new) + sum p; the
      // output row accumulated so far is rescaled by the same exp(m - m_new) before P V_blk is added.
      const T bm = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(s, nk).template maxCoeff<Eigen::PropagateNaN>();
      const T m_new = std::isnan(bm) ? bm : std::max(m[r], bm);
      if (m_new == kNegInf) {
        // Every key so far is masked: this block adds nothing; m stays -inf so that a later block starts
        // the row afresh.
        std::fill(s, s + nk, T(0));
        continue;
      }
      for (Index j = 0; j < nk; ++j) s[j] = vexp(s[j] - m_new);
      const T bsum = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>(s, nk).sum();
      if (m[r] == m_new) {
        l[r] += bsum;
      } else {
        const T alpha = vexp(m[r] - m_new);  // 0 when m was -inf
        l[r] = l[r] * alpha + bsum;
        if (!first) Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>(O + r * ldo, Dv) *= alpha;
      }
      m[r] = m_new;
    }
    // O (mq, Dv) += P (mq, nk) V_blk (nk, Dv); the first product overwrites, so O need not be zeroed.
    gemm_serial_stack<T>(false, false, mq, Dv, nk, T(1), S, nk, a.v.at(b, h, j0), a.v.row, first ? T(0) : T(1), O,
                         ldo);
    first = false;
  }
  for (Index r = 0; r < mq; ++r) {
    Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>> o(O + r * ldo, Dv);
    if (first || l[r] == T(0)) {
      o.setZero();  // fully masked row (see the file comment)
    } else {
      o *= T(1) / l[r];
    }
  }
}

// A run of queries [q0, q0 + nq) of batch b that attends exactly keys [k0, k0 + nk) (nk == 0: no key, the
// rows are zero).
struct SegmentRun {
  Index b, q0, nq, k0, nk;
};

// Packed sequences lay each segment out as one contiguous run of queries and one of keys. Then every query
// run attends one key run with no mask at all, which is the unmasked kernel on sub-views: the cost is
// sum_i n_i^2, not L^2, and a packed image computes exactly what it computes alone. Returns false (the
// caller falls back to masking key blocks) when some id's keys are not one contiguous run.
template <class T>
bool segment_runs(const AttentionArgs<T>& a, const AttentionMask<T>& mask, std::vector<SegmentRun>& runs) {
  std::vector<std::pair<Index, Index>> keys;  // (id, first key) of each key run, then sorted by id
  for (Index b = 0; b < a.B; ++b) {
    const Index* kid = mask.k_ids() + b * a.Nk;
    const Index* qid = mask.q_ids() + b * a.Nq;
    keys.clear();
    std::vector<Index> key_len;
    for (Index j = 0; j < a.Nk;) {
      Index e = j + 1;
      while (e < a.Nk && kid[e] == kid[j]) ++e;
      if (kid[j] >= 0) keys.emplace_back(kid[j], j), key_len.push_back(e - j);
      j = e;
    }
    std::vector<Index> order(keys.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = Index(i);
    std::sort(order.begin(), order.end(), [&](Index x, Index y) { return keys[std::size_t(x)].first < keys[std::size_t(y)].first; });
    for (std::size_t i = 1; i < order.size(); ++i)
      if (keys[std::size_t(order[i])].first == keys[std::size_t(order[i - 1])].first) return false;
    for (Index i = 0; i < a.Nq;) {
      Index e = i + 1;
      while (e < a.Nq && qid[e] == qid[i]) ++e;
      SegmentRun r{b, i, e - i, 0, 0};
      if (qid[i] >= 0) {
        const auto it = std::lower_bound(order.begin(), order.end(), qid[i],
                                         [&](Index x, Index id) { return keys[std::size_t(x)].first < id; });
        if (it != order.end() && keys[std::size_t(*it)].first == qid[i])
          r.k0 = keys[std::size_t(*it)].second, r.nk = key_len[std::size_t(*it)];
      }
      runs.push_back(r);
      i = e;
    }
  }
  return true;
}

// Segment masks whose segments are contiguous runs: every query run through the unmasked kernel on its own
// key run (see segment_runs). Query runs are cut into blocks as attention_forward cuts whole sequences.
template <class T>
void attention_forward_runs(const AttentionArgs<T>& a, const std::vector<SegmentRun>& runs, const Context& ctx) {
  struct Item {
    std::size_t run;
    Index i0, mq;  // query rows within the run
  };
  std::vector<Item> items;
  for (std::size_t r = 0; r < runs.size(); ++r) {
    const Index nq = runs[r].nq;
    const Index nqb = (nq + kAttnMaxQueryBlock - 1) / kAttnMaxQueryBlock, bq = (nq + nqb - 1) / nqb;
    for (Index i0 = 0; i0 < nq; i0 += bq) items.push_back({r, i0, std::min(bq, nq - i0)});
  }
  const AttentionMask<T> none;
  ctx.parallel_for(Index(items.size()) * a.H, [&](Index t) {
    const Item& it = items[std::size_t(t / a.H)];
    const SegmentRun& r = runs[it.run];
    const Index h = t % a.H;
    if (r.nk == 0) {
      for (Index i = 0; i < it.mq; ++i) std::fill_n(a.out.at(r.b, h, r.q0 + it.i0 + i), a.Dv, T(0));
      return;
    }
    AttentionArgs<T> sub = a;
    sub.Nq = r.nq, sub.Nk = r.nk;
    sub.q.data += r.q0 * a.q.row, sub.out.data += r.q0 * a.out.row;
    sub.k.data += r.k0 * a.k.row, sub.v.data += r.k0 * a.v.row;
    attention_block(sub, none, {}, r.b, h, it.i0, it.mq);
  });
}

// The kernel on strided operands; checks are the caller's. The mask must already be checked against
// (B, H, Nq, Nk).
template <class T>
void attention_forward(const AttentionArgs<T>& a, const AttentionMask<T>& mask, const Context& ctx) {
  static_assert(is_float_or_double_v<T>, "scaled_dot_product_attention: float or double");
  if (a.B == 0 || a.H == 0 || a.Nq == 0) return;
  if (mask.kind() == AttentionMask<T>::Kind::segments) {
    std::vector<SegmentRun> runs;
    if (segment_runs(a, mask, runs)) return attention_forward_runs(a, runs, ctx);
  }
  // Query blocks of equal size (300 rows -> 2 x 150, not 256 + 44), so items cost the same.
  Index nqb = (a.Nq + kAttnMaxQueryBlock - 1) / kAttnMaxQueryBlock;
  nqb = std::max(nqb, std::min((a.Nq + 31) / 32, (kAttnMinItems + a.B * a.H - 1) / (a.B * a.H)));
  const Index bq = (a.Nq + nqb - 1) / nqb;
  const Index nqb_eq = (a.Nq + bq - 1) / bq;
  // Segment id ranges of each (batch, key block), for skipping key blocks of other segments.
  std::vector<std::pair<Index, Index>> key_ranges;
  if (mask.kind() == AttentionMask<T>::Kind::segments) {
    const Index kb = attention_key_block(a.Nk), key_blocks = (a.Nk + kb - 1) / kb;
    key_ranges.resize(std::size_t(a.B * key_blocks));
    for (Index b = 0; b < a.B; ++b)
      for (Index jb = 0; jb < key_blocks; ++jb)
        key_ranges[std::size_t(b * key_blocks + jb)] =
            segment_range(mask.k_ids() + b * a.Nk + jb * kb, std::min(kb, a.Nk - jb * kb));
  }
  ctx.parallel_for(a.B * a.H * nqb_eq, [&](Index item) {
    const Index qb = item % nqb_eq, bh = item / nqb_eq;
    const Index i0 = qb * bq;
    attention_block(a, mask, key_ranges, bh / a.H, bh % a.H, i0, std::min(bq, a.Nq - i0));
  });
}

template <class T>
T default_attention_scale(Index head_dim) {
  return T(1.0 / std::sqrt(double(head_dim)));
}

}  // namespace detail

// q (B, H, Nq, Dh), k (B, H, Nk, Dh), v (B, H, Nk, Dv) -> (B, H, Nq, Dv): softmax(q k^T * scale + mask) v.
// scale defaults to 1 / sqrt(Dh). attn_mask broadcasts to (B, H, Nq, Nk) (see AttentionMask). A row with
// every key masked gives zeros (PyTorch >= 2.5; 1.13 gives NaN).
template <class T>
Tensor<T, 4> scaled_dot_product_attention(const Tensor<T, 4>& query, const Tensor<T, 4>& key, const Tensor<T, 4>& value,
                                          const AttentionMask<T>& attn_mask = {}, std::optional<double> scale = std::nullopt,
                                          const Context& ctx = default_context()) {
  const char* op = "scaled_dot_product_attention";
  const auto qd = query.dimensions(), kd = key.dimensions(), vd = value.dimensions();
  const std::string shapes = detail::attention_shapes<T>(qd, kd, vd, attn_mask);
  const char* names[] = {"batch", "heads"};
  for (int i = 0; i < 2; ++i) {
    if (kd[i] != qd[i])
      detail::throw_shape(op, ": expected key.size(", i, ") == query.size(", i, ") (", names[i], ", ", qd[i],
                          "), but got ", kd[i], shapes);
    if (vd[i] != qd[i])
      detail::throw_shape(op, ": expected value.size(", i, ") == query.size(", i, ") (", names[i], ", ", qd[i],
                          "), but got ", vd[i], shapes);
  }
  if (kd[3] != qd[3])
    detail::throw_shape(op, ": expected key.size(3) == query.size(3) (head dim ", qd[3], "), but got ", kd[3], shapes);
  if (vd[2] != kd[2])
    detail::throw_shape(op, ": expected value.size(2) == key.size(2) (keys ", kd[2], "), but got ", vd[2], shapes);
  for (const auto& d : {qd, kd, vd})
    for (int i = 0; i < 4; ++i)
      if (d[i] == 0) detail::throw_shape(op, ": expected non-empty tensors, but got a zero dimension", shapes);
  detail::check_attention_mask(op, attn_mask, qd[0], qd[1], qd[2], kd[2], shapes);

  const Index B = qd[0], H = qd[1], Nq = qd[2], Nk = kd[2], Dh = qd[3], Dv = vd[3];
  Tensor<T, 4> out(B, H, Nq, Dv);
  detail::AttentionArgs<T> a{B,
                             H,
                             Nq,
                             Nk,
                             Dh,
                             Dv,
                             {query.data(), H * Nq * Dh, Nq * Dh, Dh},
                             {key.data(), H * Nk * Dh, Nk * Dh, Dh},
                             {value.data(), H * Nk * Dv, Nk * Dv, Dv},
                             {out.data(), H * Nq * Dv, Nq * Dv, Dv},
                             scale ? T(*scale) : detail::default_attention_scale<T>(Dh)};
  detail::attention_forward(a, attn_mask, ctx);
  return out;
}

// The same without a mask, threads from ctx.
template <class T>
Tensor<T, 4> scaled_dot_product_attention(const Tensor<T, 4>& query, const Tensor<T, 4>& key, const Tensor<T, 4>& value,
                                          const Context& ctx) {
  return scaled_dot_product_attention(query, key, value, AttentionMask<T>(), std::nullopt, ctx);
}

}  // namespace fovea

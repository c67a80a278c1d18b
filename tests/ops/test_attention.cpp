// scaled_dot_product_attention against softmax(q k^T * scale + mask) v computed by PyTorch in float64
// (ref_attention.py), against naive long-double loops for sequences of several key blocks, and its checks.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "common/reference.hpp"
#include "fovea/ops/attention.hpp"

namespace test_attention {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const char* kFamily = "attention";

// Tolerances relative to max|expected| (the output is a convex combination of value rows, so max|v|).
// Float: each score is a float dot product (error ~ sqrt(Dh) ulp of |q||k|), and exp turns an absolute
// score error e into a relative probability error e: scores of order 1-10 give ~2e-7 (measured), under
// the design's 1e-5; the large-score case reaches |s| ~ 370, where one ulp is 3e-5, and measures 2e-6, so
// it gets 2e-5. Double: measured ~2e-16 everywhere; 1e-13 leaves room for summation order only.
template <class T>
double rtol(bool large = false) {
  if (std::is_same_v<T, float>) return large ? 2e-5 : 1e-5;
  return 1e-13;
}

template <class T, int R>
Tensor<T, R> random_tensor(std::mt19937& rng, const std::array<Index, R>& dims, double scale = 1.0) {
  Tensor<T, R> t(dims);
  std::normal_distribution<double> nd(0.0, scale);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(nd(rng));
  return t;
}

template <int R>
Tensor<bool, R> to_bool(const Tensor<float, R>& m) {
  Tensor<bool, R> b(m.dimensions());
  for (Index i = 0; i < m.size(); ++i) b.data()[i] = m.data()[i] != 0.f;
  return b;
}

enum class MaskKind { none, additive, boolean };

template <class T, int MR = 4>
void check_case(const std::string& name, MaskKind kind, std::optional<double> scale = std::nullopt, bool large = false) {
  SCOPED_TRACE(name + (std::is_same_v<T, float> ? " float" : " double"));
  const auto q = test::load_ref<T, 4>(kFamily, name + "_q");
  const auto k = test::load_ref<T, 4>(kFamily, name + "_k");
  const auto v = test::load_ref<T, 4>(kFamily, name + "_v");
  const auto expect = test::load_ref<double, 4>(kFamily, name + "_out");
  Tensor<T, MR> add;
  Tensor<bool, MR> keep;
  AttentionMask<T> mask;
  if (kind == MaskKind::additive) {
    add = test::load_ref<T, MR>(kFamily, name + "_mask");
    mask = AttentionMask<T>::additive(add);
  } else if (kind == MaskKind::boolean) {
    keep = to_bool(test::load_ref<float, MR>(kFamily, name + "_mask"));
    mask = AttentionMask<T>::boolean(keep);
  }
  for (int threads : {1, 2}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(scaled_dot_product_attention(q, k, v, mask, scale, ctx), expect, rtol<T>(large), 0))
        << threads << " threads";
  }
}

// softmax(q k^T * scale, masked) v per (b, h, i) in long double; keep(b, h, i, j) says which keys count.
template <class T, class Keep>
Tensor<double, 4> naive_attention(const Tensor<T, 4>& q, const Tensor<T, 4>& k, const Tensor<T, 4>& v, double scale,
                                  Keep keep) {
  const Index B = q.dimension(0), H = q.dimension(1), Nq = q.dimension(2), Nk = k.dimension(2), Dh = q.dimension(3),
              Dv = v.dimension(3);
  Tensor<double, 4> out(B, H, Nq, Dv);
  std::vector<long double> s(std::size_t(Nk), 0), acc(std::size_t(Dv), 0);
  for (Index b = 0; b < B; ++b)
    for (Index h = 0; h < H; ++h)
      for (Index i = 0; i < Nq; ++i) {
        long double mx = -INFINITY;
        for (Index j = 0; j < Nk; ++j) {
          long double d = 0;
          for (Index c = 0; c < Dh; ++c) d += (long double)q(b, h, i, c) * k(b, h, j, c);
          s[j] = keep(b, h, i, j) ? d * scale : -INFINITY;
          mx = std::max(mx, s[j]);
        }
        std::fill(acc.begin(), acc.end(), 0.0L);
        long double sum = 0;
        for (Index j = 0; j < Nk; ++j) {
          if (s[j] == -INFINITY) continue;
          const long double p = std::exp(s[j] - mx);
          sum += p;
          for (Index c = 0; c < Dv; ++c) acc[c] += p * v(b, h, j, c);
        }
        for (Index c = 0; c < Dv; ++c) out(b, h, i, c) = sum > 0 ? double(acc[c] / sum) : 0.0;
      }
  return out;
}

TEST(ScaledDotProductAttention, MatchesPyTorch) {
  check_case<float>("self_b2", MaskKind::none);
  check_case<double>("self_b2", MaskKind::none);
  check_case<float>("cross_scale", MaskKind::none, 0.3);
  check_case<double>("cross_scale", MaskKind::none, 0.3);
  check_case<float>("large_scores", MaskKind::none, std::nullopt, true);
  check_case<double>("large_scores", MaskKind::none, std::nullopt, true);
}

TEST(ScaledDotProductAttention, MasksMatchPyTorch) {
  // additive and boolean each hold a fully masked row, expected as zeros.
  for (const char* name : {"additive", "key_padding", "three_blocks"}) {
    check_case<float>(name, MaskKind::additive);
    check_case<double>(name, MaskKind::additive);
  }
  check_case<float>("boolean", MaskKind::boolean);
  check_case<double>("boolean", MaskKind::boolean);
  check_case<float, 2>("rank2", MaskKind::additive);
  check_case<double, 2>("rank2", MaskKind::additive);
}

// The fully masked rows of the reference cases are exactly zero (not merely small).
TEST(ScaledDotProductAttention, FullyMaskedRowIsZero) {
  const auto q = test::load_ref<float, 4>(kFamily, "additive_q");
  const auto k = test::load_ref<float, 4>(kFamily, "additive_k");
  const auto v = test::load_ref<float, 4>(kFamily, "additive_v");
  const auto m = test::load_ref<float, 4>(kFamily, "additive_mask");
  const auto out = scaled_dot_product_attention(q, k, v, AttentionMask<float>::additive(m));
  for (Index h = 0; h < q.dimension(1); ++h)
    for (Index c = 0; c < v.dimension(3); ++c) {
      EXPECT_EQ(out(1, h, 2, c), 0.f) << "head " << h << " col " << c;
      EXPECT_NE(out(0, h, 2, c), 0.f) << "head " << h << " col " << c;
    }
}

// Five key blocks (1100 keys) and several query blocks, boolean mask with random holes, against long
// double; threads must not change a single bit (each work item is computed the same way on any thread).
TEST(ScaledDotProductAttention, LongSequenceMatchesNaiveLoop) {
  std::mt19937 rng(5);
  const auto q = random_tensor<float, 4>(rng, {2, 2, 130, 16});
  const auto k = random_tensor<float, 4>(rng, {2, 2, 1100, 16});
  const auto v = random_tensor<float, 4>(rng, {2, 2, 1100, 12});
  Tensor<bool, 4> keep(2, 1, 130, 1100);
  std::bernoulli_distribution coin(0.7);
  for (Index i = 0; i < keep.size(); ++i) keep.data()[i] = coin(rng);
  for (Index j = 0; j < 1100; ++j) keep(1, 0, 7, j) = false;  // fully masked row
  for (Index j = 0; j < 1100; ++j) keep(0, 0, 9, j) = j > 1050;  // keys of the last block only
  const double scale = 0.25;
  const auto expect = naive_attention(q, k, v, scale, [&](Index b, Index, Index i, Index j) { return keep(b, 0, i, j); });
  Context one(1), two(2);
  const auto mask = AttentionMask<float>::boolean(keep);
  const auto out1 = scaled_dot_product_attention(q, k, v, mask, scale, one);
  const auto out2 = scaled_dot_product_attention(q, k, v, mask, scale, two);
  EXPECT_TRUE(test::all_close(out1, expect, 1e-5, 0));
  for (Index i = 0; i < out1.size(); ++i) ASSERT_EQ(out1.data()[i], out2.data()[i]) << "flat index " << i;
  // Without a mask, double: the online softmax across blocks is exact up to rounding.
  const Tensor<double, 4> qd = q.cast<double>(), kd = k.cast<double>(), vd = v.cast<double>();
  EXPECT_TRUE(test::all_close(scaled_dot_product_attention(qd, kd, vd, {}, scale, two),
                              naive_attention(qd, kd, vd, scale, [](Index, Index, Index, Index) { return true; }),
                              1e-13, 0));
}

// Ids whose keys are not one contiguous run per segment (interleaved, as a user may pass them) take the
// masked-block path; it must agree with the boolean mask too, padded queries giving zeros.
TEST(ScaledDotProductAttention, InterleavedSegmentsEqualBooleanMask) {
  std::mt19937 rng(10);
  const Index B = 1, H = 2, N = 700, D = 8;
  Tensor<Index, 2> ids(B, N);
  for (Index i = 0; i < N; ++i) ids(0, i) = i >= 650 ? -1 : (i / 7) % 3;
  Tensor<bool, 4> keep(B, 1, N, N);
  for (Index i = 0; i < N; ++i)
    for (Index j = 0; j < N; ++j) keep(0, 0, i, j) = ids(0, i) >= 0 && ids(0, i) == ids(0, j);
  const auto q = random_tensor<double, 4>(rng, {B, H, N, D});
  const auto k = random_tensor<double, 4>(rng, {B, H, N, D});
  const auto v = random_tensor<double, 4>(rng, {B, H, N, D});
  Context two(2);
  const auto seg = scaled_dot_product_attention(q, k, v, AttentionMask<double>::segments(ids), {}, two);
  const auto ref = scaled_dot_product_attention(q, k, v, AttentionMask<double>::boolean(keep), {}, two);
  EXPECT_TRUE(test::all_close(seg, ref, 1e-15, 0));
  for (Index i = 650; i < N; ++i) EXPECT_EQ(seg(0, 1, i, 3), 0.0) << "padded query " << i;
}

// Segment ids: packed sequences of several lengths (one spanning a key-block boundary) and padding (-1);
// equal to the boolean mask the ids describe, and padded queries give zeros.
TEST(ScaledDotProductAttention, SegmentsEqualBooleanMask) {
  std::mt19937 rng(9);
  const Index B = 2, H = 3, N = 1200, D = 8;
  Tensor<Index, 2> ids(B, N);
  const Index lengths[] = {197, 50, 400, 320, 33};
  for (Index b = 0; b < B; ++b) {
    Index pos = 0, seg = 0;
    for (Index len : lengths) {
      for (Index i = 0; i < len && pos < N; ++i) ids(b, pos++) = seg + b;  // batch 1's ids are shifted by one
      ++seg;
    }
    while (pos < N) ids(b, pos++) = -1;
  }
  Tensor<bool, 4> keep(B, 1, N, N);
  for (Index b = 0; b < B; ++b)
    for (Index i = 0; i < N; ++i)
      for (Index j = 0; j < N; ++j) keep(b, 0, i, j) = ids(b, i) >= 0 && ids(b, i) == ids(b, j);
  for (auto* T : {"float", "double"}) {
    SCOPED_TRACE(T);
    const auto q = random_tensor<double, 4>(rng, {B, H, N, D});
    const auto k = random_tensor<double, 4>(rng, {B, H, N, D});
    const auto v = random_tensor<double, 4>(rng, {B, H, N, D});
    Context two(2);
    if (std::string(T) == "float") {
      const Tensor<float, 4> qf = q.cast<float>(), kf = k.cast<float>(), vf = v.cast<float>();
      const auto seg = scaled_dot_product_attention(qf, kf, vf, AttentionMask<float>::segments(ids), {}, two);
      const auto ref = scaled_dot_product_attention(qf, kf, vf, AttentionMask<float>::boolean(keep), {}, two);
      // Each run is computed alone (other key blocks and query-block boundaries differ from the masked
      // path), so sums run in another order: float rounding, a few ulps of outputs of size ~1.
      EXPECT_TRUE(test::all_close(seg, ref, 1e-6, 1e-6));
    } else {
      const auto seg = scaled_dot_product_attention(q, k, v, AttentionMask<double>::segments(ids), {}, two);
      const auto ref = scaled_dot_product_attention(q, k, v, AttentionMask<double>::boolean(keep), {}, two);
      EXPECT_TRUE(test::all_close(seg, ref, 1e-15, 0));
      for (Index i = 1000; i < N; ++i) EXPECT_EQ(seg(0, 1, i, 3), 0.0) << "padded query " << i;
    }
  }
}

// A NaN in the scores or +inf in the mask makes its row NaN, as in PyTorch; other rows are untouched.
TEST(ScaledDotProductAttention, NonFiniteScoresPropagate) {
  std::mt19937 rng(2);
  auto q = random_tensor<float, 4>(rng, {1, 1, 4, 4});
  const auto k = random_tensor<float, 4>(rng, {1, 1, 5, 4});
  const auto v = random_tensor<float, 4>(rng, {1, 1, 5, 3});
  q(0, 0, 1, 2) = std::numeric_limits<float>::quiet_NaN();
  Tensor<float, 2> add(4, 5);
  add.setZero();
  add(3, 0) = std::numeric_limits<float>::infinity();
  const auto out = scaled_dot_product_attention(q, k, v, AttentionMask<float>::additive(add));
  for (Index c = 0; c < 3; ++c) {
    EXPECT_TRUE(std::isnan(out(0, 0, 1, c)));
    EXPECT_TRUE(std::isnan(out(0, 0, 3, c)));
    EXPECT_TRUE(std::isfinite(out(0, 0, 0, c)));
    EXPECT_TRUE(std::isfinite(out(0, 0, 2, c)));
  }
}

// detail::fused_linear, which every transformer projection runs through: out = act(x W^T + bias), or
// out += x W^T + bias, against a long-double loop. Rows past 256 make several row tiles where the epilogue
// runs after each tile's product (double) and one tile of every row where it runs inside the kernel's tiles
// (float with fovea's kernel); thread counts change the column tiles.
template <class T>
void check_fused_linear(Index M, Index K, Index N, detail::Activation act, bool with_bias, bool accumulate, int threads) {
  std::mt19937 rng(unsigned(M * 31 + K * 7 + N));
  auto x = random_tensor<T, 2>(rng, {M, K + 2});  // row stride K + 2: x is read with its own stride
  auto w = random_tensor<T, 2>(rng, {N, K});
  auto bias = random_tensor<T, 1>(rng, {N});
  auto out = random_tensor<T, 2>(rng, {M, N + 1});
  Tensor<T, 2> before = out;
  detail::fused_linear<T>(x.data(), K + 2, M, K, w.data(), N, with_bias ? bias.data() : nullptr, act, accumulate,
                          out.data(), N + 1, Context(threads));
  const double tol = (std::is_same_v<T, float> ? 2e-5 : 1e-12) * std::sqrt(double(K));
  for (Index i = 0; i < M; ++i) {
    for (Index j = 0; j < N; ++j) {
      long double s = with_bias ? bias(j) : 0;
      for (Index p = 0; p < K; ++p) s += (long double)x(i, p) * w(j, p);
      double want = double(s);
      if (act == detail::Activation::gelu) want = 0.5 * want * (1 + std::erf(want / std::sqrt(2.0)));
      if (act == detail::Activation::relu) want = std::max(want, 0.0);
      if (accumulate) want += double(before(i, j));
      ASSERT_NEAR(double(out(i, j)), want, tol * (1 + std::abs(want)))
          << "M=" << M << " N=" << N << " threads=" << threads << " at " << i << "," << j;
    }
    ASSERT_EQ(out(i, N), before(i, N)) << "the padding column past N was written";
  }
}

TEST(FusedLinear, MatchesNaiveLoopForEveryTiling) {
  for (int threads : {1, 2, 3})
    for (auto [M, K, N] : {std::array<Index, 3>{5, 33, 40}, {197, 64, 2304}, {600, 300, 100}}) {
      check_fused_linear<float>(M, K, N, detail::Activation::gelu, true, false, threads);
      check_fused_linear<float>(M, K, N, detail::Activation::identity, true, true, threads);
      check_fused_linear<double>(M, K, N, detail::Activation::relu, false, false, threads);
      check_fused_linear<double>(M, K, N, detail::Activation::identity, true, true, threads);
    }
}

TEST(ScaledDotProductAttention, RejectsBadShapes) {
  Tensor<float, 4> q(2, 3, 5, 8), k(2, 3, 7, 8), v(2, 3, 7, 6);
  q.setZero(), k.setZero(), v.setZero();
  using test::throws_with;
  const char* op = "scaled_dot_product_attention: ";
  EXPECT_TRUE(throws_with<ShapeError>([&] { scaled_dot_product_attention(q, Tensor<float, 4>(2, 3, 7, 4), v); },
                                      {op, "expected key.size(3) == query.size(3) (head dim 8), but got 4",
                                       "query (2, 3, 5, 8), key (2, 3, 7, 4), value (2, 3, 7, 6)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { scaled_dot_product_attention(q, Tensor<float, 4>(1, 3, 7, 8), v); },
                                      {op, "expected key.size(0) == query.size(0) (batch, 2), but got 1"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { scaled_dot_product_attention(q, k, Tensor<float, 4>(2, 4, 7, 6)); },
                                      {op, "expected value.size(1) == query.size(1) (heads, 3), but got 4"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { scaled_dot_product_attention(q, k, Tensor<float, 4>(2, 3, 6, 6)); },
                                      {op, "expected value.size(2) == key.size(2) (keys 7), but got 6",
                                       "value (2, 3, 6, 6)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { scaled_dot_product_attention(Tensor<float, 4>(2, 3, 0, 8), k, v); },
                                      {op, "expected non-empty tensors, but got a zero dimension", "query (2, 3, 0, 8)"}));
  Tensor<float, 4> bad_mask(2, 2, 5, 7);
  bad_mask.setZero();
  EXPECT_TRUE(throws_with<ShapeError>(
      [&] { scaled_dot_product_attention(q, k, v, AttentionMask<float>::additive(bad_mask)); },
      {op, "expected attn_mask broadcastable to (B, H, Nq, Nk) = (2, 3, 5, 7), but got (2, 2, 5, 7)",
       "dimension 1 is 2, not 1 or 3", "attn_mask additive (2, 2, 5, 7)"}));
  Tensor<bool, 2> bad_bool(5, 6);
  bad_bool.setConstant(true);
  EXPECT_TRUE(throws_with<ShapeError>(
      [&] { scaled_dot_product_attention(q, k, v, AttentionMask<float>::boolean(bad_bool)); },
      {op, "but got (1, 1, 5, 6)", "attn_mask boolean (1, 1, 5, 6)"}));
  Tensor<Index, 2> ids(2, 5), kids(2, 6);
  ids.setZero(), kids.setZero();
  EXPECT_TRUE(throws_with<ShapeError>(
      [&] { scaled_dot_product_attention(q, k, v, AttentionMask<float>::segments(ids, kids)); },
      {op, "expected segment ids of shape (B, Nq) = (2, 5) for queries and (B, Nk) = (2, 7) for keys",
       "segments q_ids (2, 5), k_ids (2, 6)"}));
}

}  // namespace test_attention

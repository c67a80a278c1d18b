// Streamed clip_loss against PyTorch autograd, finite differences, the B x B reference, a long-double evaluation
// at extreme values, and its argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/reference.hpp"
#include "fovea/loss.hpp"

namespace test_clip_loss {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

template <class T>
Tensor<T, 2> random_embeddings(Index B, Index D, unsigned seed, double norm) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  Tensor<T, 2> x(B, D);
  for (Index i = 0; i < B; ++i) {
    double n = 0;
    for (Index d = 0; d < D; ++d) n += std::pow(x(i, d) = T(nd(rng)), 2);
    for (Index d = 0; d < D; ++d) x(i, d) = T(x(i, d) * norm / std::sqrt(n));
  }
  return x;
}

// Unit rows near the basis vectors e_i (D >= B), with noise: image and text of pair i nearly coincide and are
// nearly orthogonal to every other row, so at scale 100 every cross-entropy is ~ B e^-100.
template <class T>
Tensor<T, 2> near_basis(Index B, Index D, unsigned seed) {
  auto x = random_embeddings<T>(B, D, seed, 0.01);
  for (Index i = 0; i < B; ++i) x(i, i) += T(1);
  return x;
}

// Loss and gradients by the definition in long double, each cross-entropy as log1p of the off-diagonal terms
// when the diagonal leads, so that a loss of 1e-30 is still resolved.
struct Truth {
  double loss, grad_scale;
  Tensor<double, 2> grad_image, grad_text;
};

template <class T>
Truth clip_truth(const Tensor<T, 2>& X, const Tensor<T, 2>& Y, long double s) {
  const Index B = X.dimension(0), D = X.dimension(1);
  std::vector<long double> L(B * B);
  for (Index i = 0; i < B; ++i)
    for (Index j = 0; j < B; ++j) {
      long double dot = 0;
      for (Index d = 0; d < D; ++d) dot += (long double)X(i, d) * Y(j, d);
      L[i * B + j] = s * dot;
    }
  // ce(i) = lse_k(L(i, k)) - L(i, i) for rows (by_row) or columns.
  auto excess = [&](Index i, bool by_row) {
    auto at = [&](Index k) { return by_row ? L[i * B + k] : L[k * B + i]; };
    long double m = at(0);
    for (Index k = 1; k < B; ++k) m = std::max(m, at(k));
    const long double d = L[i * B + i];
    long double z = 0;
    for (Index k = 0; k < B; ++k)
      if (k != i) z += std::exp(at(k) - m);
    return m == d ? std::log1p(z) : (m - d) + std::log(z + std::exp(d - m));
  };
  std::vector<long double> er(B), ec(B);
  long double loss = 0;
  for (Index i = 0; i < B; ++i) loss += (er[i] = excess(i, true)) + (ec[i] = excess(i, false));
  std::vector<long double> G(B * B);
  long double gs = 0;
  for (Index i = 0; i < B; ++i)
    for (Index j = 0; j < B; ++j) {
      const long double l = L[i * B + j];
      G[i * B + j] = i == j ? (std::expm1(-er[i]) + std::expm1(-ec[i])) / (2 * B)
                            : (std::exp(l - L[i * B + i] - er[i]) + std::exp(l - L[j * B + j] - ec[j])) / (2 * B);
      gs += G[i * B + j] * l / s;
    }
  Truth t{double(loss / (2 * B)), double(gs), Tensor<double, 2>(B, D), Tensor<double, 2>(B, D)};
  for (Index i = 0; i < B; ++i)
    for (Index d = 0; d < D; ++d) {
      long double gi = 0, gt = 0;
      for (Index k = 0; k < B; ++k) {
        gi += G[i * B + k] * Y(k, d);
        gt += G[k * B + i] * X(k, d);
      }
      t.grad_image(i, d) = double(s * gi);
      t.grad_text(i, d) = double(s * gt);
    }
  return t;
}

template <class T>
bool bit_identical(const LossResult<T>& a, const LossResult<T>& b) {
  return std::memcmp(&a.loss, &b.loss, sizeof(T)) == 0 && std::memcmp(&a.grad_scale, &b.grad_scale, sizeof(T)) == 0 &&
         a.grad_image.size() == b.grad_image.size() && a.grad_text.size() == b.grad_text.size() &&
         std::memcmp(a.grad_image.data(), b.grad_image.data(), sizeof(T) * a.grad_image.size()) == 0 &&
         std::memcmp(a.grad_text.data(), b.grad_text.data(), sizeof(T) * a.grad_text.size()) == 0;
}

template <class T>
Tensor<double, 2> as_double(const Tensor<T, 2>& t) {
  return t.template cast<double>();
}

template <class T>
void check_against_pytorch(const std::string& name, Index tile, int threads, double rtol) {
  const auto image = test::load_ref<T, 2>("loss", name + "_image");
  const auto text = test::load_ref<T, 2>("loss", name + "_text");
  const T scale = T(test::ref_scalar("loss", name + "_scale"));
  Context ctx(threads);
  const auto r = clip_loss(image, text, scale, LossOptions().tile(tile), ctx);
  const double loss = test::ref_scalar("loss", name + "_loss");
  const double gs = test::ref_scalar("loss", name + "_grad_scale");
  SCOPED_TRACE(name + " tile " + std::to_string(tile) + " threads " + std::to_string(threads));
  EXPECT_NEAR(r.loss, loss, rtol * (1 + std::abs(loss)));
  EXPECT_NEAR(r.grad_scale, gs, rtol * (1 + std::abs(gs)));
  EXPECT_TRUE(test::all_close(r.grad_image, test::load_ref<double, 2>("loss", name + "_grad_image"), rtol, 0));
  EXPECT_TRUE(test::all_close(r.grad_text, test::load_ref<double, 2>("loss", name + "_grad_text"), rtol, 0));
}

const char* const kCases[] = {"clip_b1", "clip_b5_d3", "clip_b7_d16", "clip_b33_d12", "clip_b64_d24"};

// float: every logit carries about 2^-24 * scale * |x| |y| of rounding from the float products (scale 100 on
// unit vectors: ~1e-5), and loss and gradients inherit it; double: the same at 2^-53.
TEST(ClipLoss, MatchesPyTorchAutograd) {
  for (const char* name : kCases)
    for (Index tile : {0, 1, 3})
      for (int threads : {1, 2}) {
        check_against_pytorch<float>(name, tile, threads, 2e-5);
        check_against_pytorch<double>(name, tile, threads, 1e-12);
      }
}

// Central differences in double: error O(h^2) ~ 1e-10 against gradients of size ~0.1.
TEST(ClipLoss, MatchesFiniteDifferences) {
  auto image = random_embeddings<double>(6, 5, 7, 1.3);
  auto text = random_embeddings<double>(6, 5, 8, 0.7);
  const double scale = 3.5, h = 1e-5;
  const auto r = clip_loss(image, text, scale, LossOptions().tile(4));
  auto loss_at = [&](const Tensor<double, 2>& x, const Tensor<double, 2>& y, double s) {
    return clip_loss(x, y, s, LossOptions().tile(4).gradients(false)).loss;
  };
  for (Index i = 0; i < image.size(); ++i) {
    auto plus = image, minus = image;
    plus.data()[i] += h;
    minus.data()[i] -= h;
    EXPECT_NEAR(r.grad_image.data()[i], (loss_at(plus, text, scale) - loss_at(minus, text, scale)) / (2 * h), 1e-8);
    plus = text, minus = text;
    plus.data()[i] += h;
    minus.data()[i] -= h;
    EXPECT_NEAR(r.grad_text.data()[i], (loss_at(image, plus, scale) - loss_at(image, minus, scale)) / (2 * h), 1e-8);
  }
  EXPECT_NEAR(r.grad_scale, (loss_at(image, text, scale + h) - loss_at(image, text, scale - h)) / (2 * h), 1e-8);
  EXPECT_EQ(r.grad_bias, 0.0);
}

// Tiles of every kind (1, odd, ragged last block, one block, larger than B, automatic) give the B x B result,
// and the same bits on 1, 2 or 3 threads. float: rounding differs with the tile order by a few 2^-24.
TEST(ClipLoss, StreamedEqualsReferenceForAnyTileAndThreads) {
  for (Index B : {50, 300}) {
    const auto image = random_embeddings<float>(B, 20, 1, 1.0), text = random_embeddings<float>(B, 20, 2, 1.0);
    const auto ref = reference::clip_loss(image, text, 20.f);
    for (Index tile : {1, 2, 7, 16, 49, 64, 512, 0}) {
      if (B == 300 && tile < 7) continue;  // B = 50 covers them; keeps the test fast
      const auto one = clip_loss(image, text, 20.f, LossOptions().tile(tile), Context(1));
      SCOPED_TRACE("B " + std::to_string(B) + " tile " + std::to_string(tile));
      EXPECT_NEAR(one.loss, ref.loss, 1e-5 * ref.loss);
      EXPECT_NEAR(one.grad_scale, ref.grad_scale, 1e-5);
      EXPECT_TRUE(test::all_close(one.grad_image, ref.grad_image, 1e-5, 0));
      EXPECT_TRUE(test::all_close(one.grad_text, ref.grad_text, 1e-5, 0));
      for (int threads : {2, 3})
        EXPECT_TRUE(bit_identical(one, clip_loss(image, text, 20.f, LossOptions().tile(tile), Context(threads))))
            << threads << " threads";
    }
  }
}

// Scale 100 on pairs that nearly coincide (loss ~1e-42: the softmax saturates), and un-normalised embeddings
// (|x| = 40: logits up to 1.6e5, where exp overflows any float): finite, and equal to the long-double truth.
// double: the loss and gradients to 1e-12 relative, grad_scale to 1e-10 (it sums G * L, terms of |L| / B ~ 1e4
// that cancel to ~1e3). float: the logits' own rounding, 2^-24 * scale * |x| |y|, sets the scale of the error.
TEST(ClipLoss, ExtremeValuesStayFiniteAndMatchLongDouble) {
  struct Case {
    double norm, scale;
    bool aligned;
  };
  for (Case c : {Case{1.0, 100.0, true}, Case{40.0, 100.0, false}, Case{1.0, 100.0, false}})
    for (Index tile : {0, 5}) {
      const Index B = 17, D = c.aligned ? 24 : 9;
      auto image = c.aligned ? near_basis<double>(B, D, 3) : random_embeddings<double>(B, D, 3, c.norm);
      auto text = c.aligned ? near_basis<double>(B, D, 4) : random_embeddings<double>(B, D, 4, c.norm);
      const auto truth = clip_truth(image, text, c.scale);
      SCOPED_TRACE("norm " + std::to_string(c.norm) + (c.aligned ? " aligned" : " random"));
      const auto rd = clip_loss(image, text, c.scale, LossOptions().tile(tile));
      EXPECT_NEAR(rd.loss, truth.loss, 1e-12 * std::abs(truth.loss));
      EXPECT_NEAR(rd.grad_scale, truth.grad_scale, 1e-10 * std::abs(truth.grad_scale));
      EXPECT_TRUE(test::all_close(rd.grad_image, truth.grad_image, 1e-10, 0));
      EXPECT_TRUE(test::all_close(rd.grad_text, truth.grad_text, 1e-10, 0));
      const Tensor<float, 2> fi = image.cast<float>(), ft = text.cast<float>();
      const auto truth_f = clip_truth(fi, ft, c.scale);
      const auto rf = clip_loss(fi, ft, float(c.scale), LossOptions().tile(tile));
      const double logit_err = 2e-7 * c.scale * c.norm * c.norm;
      EXPECT_TRUE(std::isfinite(rf.loss) && std::isfinite(rf.grad_scale));
      EXPECT_NEAR(rf.loss, truth_f.loss, 2 * logit_err + 1e-5 * truth_f.loss);
      EXPECT_NEAR(rf.grad_scale, truth_f.grad_scale, 1e-3 * (1 + std::abs(truth_f.grad_scale)));
      EXPECT_TRUE(test::all_close(rf.grad_image, truth_f.grad_image, 1e-3, 1e-30));
      EXPECT_TRUE(test::all_close(rf.grad_text, truth_f.grad_text, 1e-3, 1e-30));
      if (c.aligned) {
        EXPECT_LT(truth.loss, 1e-30);  // and rd.loss matched it to 1e-12 relative, not 0
      }
    }
}

TEST(ClipLoss, LossOnlyGivesTheSameLoss) {
  const auto image = random_embeddings<float>(40, 8, 5, 1.0), text = random_embeddings<float>(40, 8, 6, 1.0);
  const auto full = clip_loss(image, text, 30.f, LossOptions().tile(16));
  const auto only = clip_loss(image, text, 30.f, LossOptions().tile(16).gradients(false));
  EXPECT_EQ(only.loss, full.loss);
  EXPECT_EQ(only.grad_image.size(), 0);
  EXPECT_EQ(only.grad_text.size(), 0);
  EXPECT_EQ(only.grad_scale, 0.f);
}

TEST(ClipLoss, RejectsBadArgumentsWithTheShapes) {
  Tensor<float, 2> a(4, 8), b(5, 8), c(4, 7), e(0, 8);
  a.setConstant(0.1f);
  b.setConstant(0.1f);
  c.setConstant(0.1f);
  using test::throws_with;
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_loss(a, b, 10.f); },
                                      {"clip_loss", "image.size(0) == text.size(0)", "4 and 5", "image (4, 8), text (5, 8)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_loss(a, c, 10.f); },
                                      {"clip_loss", "image.size(1) == text.size(1)", "8 and 7", "text (4, 7)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_loss(e, e, 10.f); }, {"non-empty batch", "image (0, 8)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_loss(a, a, 0.f); }, {"scale > 0", "got 0", "image (4, 8)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_loss(a, a, -1.f); }, {"scale > 0", "got -1"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_loss(a, a, NAN); }, {"finite scale"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_loss(a, a, 1.f, LossOptions().tile(-2)); }, {"tile() >= 0", "-2"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { reference::clip_loss(a, b, 10.f); }, {"clip_loss", "4 and 5"}));
  auto bad = a;
  bad(2, 5) = NAN;
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_loss(bad, a, 10.f); },
                                      {"clip_loss", "image row 2", "non-finite", "column 5", "image (4, 8)"}));
  bad = a;
  bad(3, 0) = -INFINITY;
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_loss(a, bad, 10.f); }, {"text row 3", "-inf", "column 0"}));
  auto huge = a;
  huge.setConstant(1e19f);  // |x| |y| ~ 8e38: the logits overflow float
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_loss(huge, huge, 1.f); }, {"clip_loss", "logits can reach", "float"}));
  const Tensor<double, 2> huge_d = huge.cast<double>();
  EXPECT_NO_THROW(clip_loss(huge_d, huge_d, 1.0));
}

}  // namespace test_clip_loss

// Streamed siglip_loss against PyTorch autograd, finite differences, the B x B reference, a long-double evaluation
// at extreme scales and biases, and its argument checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/reference.hpp"
#include "fovea/loss.hpp"

namespace test_siglip_loss {  // one per test file: a directory's tests build as one translation unit

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

// Pairs near the basis vector e_i (D >= B): at scale 150 and bias -75 every term is ~e^-72.
template <class T>
Tensor<T, 2> near_basis(Index B, Index D, unsigned seed) {
  auto x = random_embeddings<T>(B, D, seed, 0.01);
  for (Index i = 0; i < B; ++i) x(i, i) += T(1);
  return x;
}

struct Truth {
  double loss, grad_scale, grad_bias;
  Tensor<double, 2> grad_image, grad_text;
};

// The definition in long double with stable softplus and sigmoid.
template <class T>
Truth siglip_truth(const Tensor<T, 2>& X, const Tensor<T, 2>& Y, long double s, long double b) {
  const Index B = X.dimension(0), D = X.dimension(1);
  auto softplus = [](long double x) { return std::max(x, 0.0L) + std::log1p(std::exp(-std::abs(x))); };
  auto sigmoid = [](long double x) {
    const long double e = std::exp(-std::abs(x));
    return x >= 0 ? 1 / (1 + e) : e / (1 + e);
  };
  std::vector<long double> G(B * B);
  long double loss = 0, gs = 0, gb = 0;
  for (Index i = 0; i < B; ++i)
    for (Index j = 0; j < B; ++j) {
      long double dot = 0;
      for (Index d = 0; d < D; ++d) dot += (long double)X(i, d) * Y(j, d);
      const long double l = s * dot + b;
      loss += i == j ? softplus(-l) : softplus(l);
      const long double g = (i == j ? -sigmoid(-l) : sigmoid(l)) / B;
      G[i * B + j] = g;
      gs += g * dot;
      gb += g;
    }
  Truth t{double(loss / B), double(gs), double(gb), Tensor<double, 2>(B, D), Tensor<double, 2>(B, D)};
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
  auto same = [](const T& x, const T& y) { return std::memcmp(&x, &y, sizeof(T)) == 0; };
  return same(a.loss, b.loss) && same(a.grad_scale, b.grad_scale) && same(a.grad_bias, b.grad_bias) &&
         a.grad_image.size() == b.grad_image.size() && a.grad_text.size() == b.grad_text.size() &&
         std::memcmp(a.grad_image.data(), b.grad_image.data(), sizeof(T) * a.grad_image.size()) == 0 &&
         std::memcmp(a.grad_text.data(), b.grad_text.data(), sizeof(T) * a.grad_text.size()) == 0;
}

template <class T>
void check_against_pytorch(const std::string& name, Index tile, int threads, double rtol) {
  const auto image = test::load_ref<T, 2>("loss", name + "_image");
  const auto text = test::load_ref<T, 2>("loss", name + "_text");
  const T scale = T(test::ref_scalar("loss", name + "_scale"));
  const T bias = T(test::ref_scalar("loss", name + "_bias"));
  Context ctx(threads);
  const auto r = siglip_loss(image, text, scale, bias, LossOptions().tile(tile), ctx);
  const double loss = test::ref_scalar("loss", name + "_loss");
  const double gs = test::ref_scalar("loss", name + "_grad_scale");
  const double gb = test::ref_scalar("loss", name + "_grad_bias");
  SCOPED_TRACE(name + " tile " + std::to_string(tile) + " threads " + std::to_string(threads));
  EXPECT_NEAR(r.loss, loss, rtol * (1 + std::abs(loss)));
  EXPECT_NEAR(r.grad_scale, gs, rtol * (1 + std::abs(gs)));
  EXPECT_NEAR(r.grad_bias, gb, rtol * (1 + std::abs(gb)));
  EXPECT_TRUE(test::all_close(r.grad_image, test::load_ref<double, 2>("loss", name + "_grad_image"), rtol, 0));
  EXPECT_TRUE(test::all_close(r.grad_text, test::load_ref<double, 2>("loss", name + "_grad_text"), rtol, 0));
}

const char* const kCases[] = {"siglip_b1", "siglip_b5_d3", "siglip_b7_d16", "siglip_b33_d12", "siglip_b64_d24"};

// float: each logit carries ~2^-24 (scale |x| |y| + |bias|) of rounding (scale 100, bias -5: ~1e-5), and the
// loss and gradients inherit it; double: the same at 2^-53.
TEST(SiglipLoss, MatchesPyTorchAutograd) {
  for (const char* name : kCases)
    for (Index tile : {0, 1, 3})
      for (int threads : {1, 2}) {
        check_against_pytorch<float>(name, tile, threads, 2e-5);
        check_against_pytorch<double>(name, tile, threads, 1e-12);
      }
}

// Central differences in double: error O(h^2) ~ 1e-10 against gradients of size ~0.1.
TEST(SiglipLoss, MatchesFiniteDifferences) {
  auto image = random_embeddings<double>(6, 5, 7, 1.3);
  auto text = random_embeddings<double>(6, 5, 8, 0.7);
  const double scale = 3.5, bias = -1.5, h = 1e-5;
  const auto r = siglip_loss(image, text, scale, bias, LossOptions().tile(4));
  auto loss_at = [&](const Tensor<double, 2>& x, const Tensor<double, 2>& y, double s, double b) {
    return siglip_loss(x, y, s, b, LossOptions().tile(4).gradients(false)).loss;
  };
  for (Index i = 0; i < image.size(); ++i) {
    auto plus = image, minus = image;
    plus.data()[i] += h;
    minus.data()[i] -= h;
    EXPECT_NEAR(r.grad_image.data()[i],
                (loss_at(plus, text, scale, bias) - loss_at(minus, text, scale, bias)) / (2 * h), 1e-8);
    plus = text, minus = text;
    plus.data()[i] += h;
    minus.data()[i] -= h;
    EXPECT_NEAR(r.grad_text.data()[i],
                (loss_at(image, plus, scale, bias) - loss_at(image, minus, scale, bias)) / (2 * h), 1e-8);
  }
  EXPECT_NEAR(r.grad_scale, (loss_at(image, text, scale + h, bias) - loss_at(image, text, scale - h, bias)) / (2 * h),
              1e-8);
  EXPECT_NEAR(r.grad_bias, (loss_at(image, text, scale, bias + h) - loss_at(image, text, scale, bias - h)) / (2 * h),
              1e-8);
}

// Tiles of every kind (1, odd, ragged last block, one block, larger than B, automatic) give the B x B result,
// and the same bits on 1, 2 or 3 threads. float: rounding differs with the tile order by a few 2^-24.
TEST(SiglipLoss, StreamedEqualsReferenceForAnyTileAndThreads) {
  for (Index B : {50, 300}) {
    const auto image = random_embeddings<float>(B, 20, 1, 1.0), text = random_embeddings<float>(B, 20, 2, 1.0);
    const auto ref = reference::siglip_loss(image, text, 10.f, -4.f);
    for (Index tile : {1, 2, 7, 16, 49, 64, 512, 0}) {
      if (B == 300 && tile < 7) continue;  // B = 50 covers them; keeps the test fast
      const auto one = siglip_loss(image, text, 10.f, -4.f, LossOptions().tile(tile), Context(1));
      SCOPED_TRACE("B " + std::to_string(B) + " tile " + std::to_string(tile));
      EXPECT_NEAR(one.loss, ref.loss, 1e-5 * ref.loss);
      EXPECT_NEAR(one.grad_scale, ref.grad_scale, 1e-5 * (1 + std::abs(ref.grad_scale)));
      EXPECT_NEAR(one.grad_bias, ref.grad_bias, 1e-5 * (1 + std::abs(ref.grad_bias)));
      EXPECT_TRUE(test::all_close(one.grad_image, ref.grad_image, 1e-5, 0));
      EXPECT_TRUE(test::all_close(one.grad_text, ref.grad_text, 1e-5, 0));
      for (int threads : {2, 3})
        EXPECT_TRUE(bit_identical(one, siglip_loss(image, text, 10.f, -4.f, LossOptions().tile(tile), Context(threads))))
            << threads << " threads";
    }
  }
}

// Scale 100 with bias +-1000 (every pair's sigmoid saturates one way or the other), un-normalised embeddings
// (|x| = 40: logits up to 1.6e5), and pairs so well separated that the loss is ~1e-30: finite, and equal to the
// long-double truth. double: 1e-12 relative (grad_scale 1e-10: it sums G * S with cancellation). float: the
// logits' own rounding, 2^-24 (scale |x| |y| + |bias|), sets the scale of the error.
TEST(SiglipLoss, ExtremeValuesStayFiniteAndMatchLongDouble) {
  struct Case {
    double norm, scale, bias;
    bool aligned;
  };
  for (Case c : {Case{1.0, 100.0, 1000.0, false}, Case{1.0, 100.0, -1000.0, false}, Case{40.0, 100.0, 0.0, false},
                 Case{1.0, 150.0, -75.0, true}})
    for (Index tile : {0, 5}) {
      const Index B = 17, D = c.aligned ? 24 : 9;
      auto image = c.aligned ? near_basis<double>(B, D, 3) : random_embeddings<double>(B, D, 3, c.norm);
      auto text = c.aligned ? near_basis<double>(B, D, 4) : random_embeddings<double>(B, D, 4, c.norm);
      const auto truth = siglip_truth(image, text, c.scale, c.bias);
      SCOPED_TRACE("norm " + std::to_string(c.norm) + " bias " + std::to_string(c.bias) +
                   (c.aligned ? " aligned" : " random"));
      const auto rd = siglip_loss(image, text, c.scale, c.bias, LossOptions().tile(tile));
      EXPECT_NEAR(rd.loss, truth.loss, 1e-12 * std::abs(truth.loss));
      EXPECT_NEAR(rd.grad_scale, truth.grad_scale, 1e-10 * std::abs(truth.grad_scale));
      EXPECT_NEAR(rd.grad_bias, truth.grad_bias, 1e-12 * std::abs(truth.grad_bias));
      EXPECT_TRUE(test::all_close(rd.grad_image, truth.grad_image, 1e-12, 0));
      EXPECT_TRUE(test::all_close(rd.grad_text, truth.grad_text, 1e-12, 0));
      const Tensor<float, 2> fi = image.cast<float>(), ft = text.cast<float>();
      const auto truth_f = siglip_truth(fi, ft, c.scale, c.bias);
      const auto rf = siglip_loss(fi, ft, float(c.scale), float(c.bias), LossOptions().tile(tile));
      const double logit_err = 2e-7 * (c.scale * c.norm * c.norm + std::abs(c.bias));
      EXPECT_TRUE(std::isfinite(rf.loss) && std::isfinite(rf.grad_scale) && std::isfinite(rf.grad_bias));
      EXPECT_NEAR(rf.loss, truth_f.loss, B * logit_err + 1e-6 * truth_f.loss);
      EXPECT_NEAR(rf.grad_scale, truth_f.grad_scale, 1e-3 * (1 + std::abs(truth_f.grad_scale)));
      EXPECT_NEAR(rf.grad_bias, truth_f.grad_bias, 1e-4 * (1 + std::abs(truth_f.grad_bias)));
      EXPECT_TRUE(test::all_close(rf.grad_image, truth_f.grad_image, 1e-4, 1e-30));
      EXPECT_TRUE(test::all_close(rf.grad_text, truth_f.grad_text, 1e-4, 1e-30));
      if (c.aligned) {
        EXPECT_LT(truth.loss, 1e-25);  // and rd.loss matched it to 1e-12 relative, not 0
      }
    }
}

TEST(SiglipLoss, LossOnlyGivesTheSameLoss) {
  const auto image = random_embeddings<float>(40, 8, 5, 1.0), text = random_embeddings<float>(40, 8, 6, 1.0);
  const auto full = siglip_loss(image, text, 30.f, -3.f, LossOptions().tile(16));
  const auto only = siglip_loss(image, text, 30.f, -3.f, LossOptions().tile(16).gradients(false));
  EXPECT_EQ(only.loss, full.loss);
  EXPECT_EQ(only.grad_image.size(), 0);
  EXPECT_EQ(only.grad_text.size(), 0);
  EXPECT_EQ(only.grad_scale, 0.f);
  EXPECT_EQ(only.grad_bias, 0.f);
}

TEST(SiglipLoss, RejectsBadArgumentsWithTheShapes) {
  Tensor<double, 2> a(4, 8), b(5, 8), c(4, 7), e(0, 8);
  a.setConstant(0.1);
  b.setConstant(0.1);
  c.setConstant(0.1);
  using test::throws_with;
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_loss(a, b, 10, -10); },
                                      {"siglip_loss", "image.size(0) == text.size(0)", "4 and 5", "image (4, 8), text (5, 8)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_loss(a, c, 10, -10); },
                                      {"siglip_loss", "image.size(1) == text.size(1)", "8 and 7", "text (4, 7)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_loss(e, e, 10, -10); }, {"non-empty batch", "image (0, 8)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_loss(a, a, -3, 0); }, {"scale > 0", "got -3", "image (4, 8)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_loss(a, a, 1, INFINITY); }, {"finite bias", "inf"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_loss(a, a, 1, 0, LossOptions().tile(-1)); }, {"tile() >= 0"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { reference::siglip_loss(a, c, 1, 0); }, {"siglip_loss", "8 and 7"}));
  auto bad = a;
  bad(1, 7) = NAN;
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_loss(bad, a, 10, 0); },
                                      {"siglip_loss", "image row 1", "non-finite", "column 7", "image (4, 8)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_loss(a, bad, 10, 0); }, {"text row 1"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_loss(a, a, 1, 1e307); }, {"logits can reach", "|bias|", "double"}));
}

}  // namespace test_siglip_loss

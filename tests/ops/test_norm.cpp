#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "common/reference.hpp"
#include "fovea/ops/norm.hpp"

namespace test_norm {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const char* kFamily = "norm";

template <class T>
constexpr bool is_float = std::is_same_v<T, float>;

template <class T, int R>
Tensor<T, R> random_tensor(std::mt19937& rng, const std::array<Index, R>& dims, double scale = 1, double offset = 0) {
  Tensor<T, R> t(dims);
  std::normal_distribution<double> nd;
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(offset + scale * nd(rng));
  return t;
}

template <class T, int R>
Tensor<T, R> zeros(const std::array<Index, R>& dims) {
  Tensor<T, R> t(dims);
  t.setZero();
  return t;
}

// batch_norm tolerance relative to max|expected|: one centring, one multiply and one add per element,
// each rounded once (plus the scale's own rounding), so a few float ulps; double is exact to ~1e-15.
template <class T>
double bn_rtol() {
  return is_float<T> ? 2e-6 : 1e-13;
}

template <class T, int R>
void check_batch_norm(const std::string& name, double eps) {
  SCOPED_TRACE(name + (is_float<T> ? " float" : " double"));
  const auto x = test::load_ref<T, R>(kFamily, name + "_x");
  const auto mean = test::load_ref<T, 1>(kFamily, name + "_mean");
  const auto var = test::load_ref<T, 1>(kFamily, name + "_var");
  const auto w = test::load_ref<T, 1>(kFamily, name + "_w");
  const auto b = test::load_ref<T, 1>(kFamily, name + "_b");
  const auto expect = test::load_ref<double, R>(kFamily, name + "_out");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(batch_norm(x, mean, var, w, b, eps, ctx), expect, bn_rtol<T>(), 0))
        << threads << " threads";
  }
}

// layer_norm tolerances, absolute, on outputs and gradients of size ~1-5. Float: the row statistics are
// sums of D <= 768 float terms (error ~ sqrt(D) * 6e-8 relative) and every output a few roundings more,
// so 1e-5 holds with a wide margin, also with a +1000 offset because rows are centred on their exact
// float deviations (see layer_norm_forward); a plain x - mean would be off by half an ulp of 1000 times
// rstd * weight, ~6e-5, and fail here. Double: 1e-12, except with the offset, where PyTorch's own
// float64 output is 4.9e-13 away from a long-double evaluation (its mean is good to a few ulps of 1000,
// 1.1e-13 each, times rstd * weight): 2e-12.
template <class T>
double ln_atol(bool offset) {
  return is_float<T> ? 1e-5 : (offset ? 2e-12 : 1e-12);
}

template <class T, int R>
void check_layer_norm(const std::string& name, double eps, bool offset, bool grads) {
  SCOPED_TRACE(name + (is_float<T> ? " float" : " double"));
  const auto x = test::load_ref<T, R>(kFamily, name + "_x");
  const auto w = test::load_ref<T, 1>(kFamily, name + "_w");
  const auto b = test::load_ref<T, 1>(kFamily, name + "_b");
  const auto expect = test::load_ref<double, R>(kFamily, name + "_out");
  const double atol = ln_atol<T>(offset);
  for (int threads : {1, 2}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(layer_norm(x, w, b, eps, ctx), expect, 0, atol)) << threads << " threads";
    if (!grads) continue;
    Tensor<T, R> out;
    Tensor<T, 1> mean, rstd;
    detail::layer_norm_forward(x, w, b, eps, out, mean, rstd, ctx);
    EXPECT_TRUE(test::all_close(out, expect, 0, atol)) << "forward out";
    // mean is compared relative to its size (it holds the offset), rstd (~1.25) absolutely.
    EXPECT_TRUE(test::all_close(mean, test::load_ref<double, 1>(kFamily, name + "_mean"), is_float<T> ? 1e-6 : 1e-14, 0));
    EXPECT_TRUE(test::all_close(rstd, test::load_ref<double, 1>(kFamily, name + "_rstd"), 0, ln_atol<T>(false)));
    const auto dout = test::load_ref<T, R>(kFamily, name + "_dout");
    Tensor<T, R> dx(x.dimensions());
    Tensor<T, 1> dw(w.dimensions()), db(w.dimensions());
    dx.setZero();
    dw.setZero();
    db.setZero();
    detail::layer_norm_backward(dout, x, w, mean, rstd, dx, dw, db, ctx);
    // dx per element carries the same error as the output. dweight and dbias sum M rows whose errors
    // have random signs (with an offset, each row's mean rounding), so their bound grows like sqrt(M).
    const double rows_factor = std::sqrt(double(mean.size()));
    EXPECT_TRUE(test::all_close(dx, test::load_ref<double, R>(kFamily, name + "_dx"), 0, atol)) << "dx";
    EXPECT_TRUE(test::all_close(dw, test::load_ref<double, 1>(kFamily, name + "_dw"), 0, atol * rows_factor)) << "dw";
    EXPECT_TRUE(test::all_close(db, test::load_ref<double, 1>(kFamily, name + "_db"), 0, ln_atol<T>(false) * rows_factor))
        << "db";
  }
}

template <class T>
void batch_norm_all() {
  check_batch_norm<T, 4>("bn_4d", 1e-5);
  check_batch_norm<T, 4>("bn_4d_b1", 1e-3);
  check_batch_norm<T, 3>("bn_3d", 1e-5);
  check_batch_norm<T, 2>("bn_2d", 1e-5);
  check_batch_norm<T, 4>("bn_offset", 1e-5);
}

template <class T>
void layer_norm_all() {
  check_layer_norm<T, 1>("ln_r1", 1e-5, false, true);
  check_layer_norm<T, 3>("ln_b1_n1", 1e-5, false, false);
  check_layer_norm<T, 3>("ln_b3_n7", 1e-5, false, true);
  check_layer_norm<T, 3>("ln_b1_n197", 1e-6, false, false);
  check_layer_norm<T, 2>("ln_r2_768", 1e-6, false, true);
  check_layer_norm<T, 3>("ln_offset_b3_n7", 1e-6, true, true);
  check_layer_norm<T, 3>("ln_offset_b1_n197", 1e-5, true, false);
}

// Naive double convolution, stride 1, padding 1: just enough to check folding against the real thing.
Tensor<double, 4> naive_conv(const Tensor<double, 4>& x, const Tensor<double, 4>& w, const Tensor<double, 1>* b) {
  const Index n = x.dimension(0), c = x.dimension(1), h = x.dimension(2), wd = x.dimension(3);
  const Index o = w.dimension(0), kh = w.dimension(2), kw = w.dimension(3);
  Tensor<double, 4> y(n, o, h, wd);
  for (Index i = 0; i < n; ++i)
    for (Index oc = 0; oc < o; ++oc)
      for (Index r = 0; r < h; ++r)
        for (Index s = 0; s < wd; ++s) {
          double acc = b && b->size() > 0 ? (*b)(oc) : 0.0;
          for (Index ic = 0; ic < c; ++ic)
            for (Index p = 0; p < kh; ++p)
              for (Index q = 0; q < kw; ++q) {
                const Index rr = r + p - 1, ss = s + q - 1;
                if (rr >= 0 && rr < h && ss >= 0 && ss < wd) acc += x(i, ic, rr, ss) * w(oc, ic, p, q);
              }
          y(i, oc, r, s) = acc;
        }
  return y;
}

TEST(BatchNorm, MatchesPyTorch) {
  batch_norm_all<float>();
  batch_norm_all<double>();
}

// Big enough to split over threads (and over channel planes mid-sample), against a long-double loop.
TEST(BatchNorm, ThreadedMatchesNaiveLoop) {
  std::mt19937 rng(5);
  const auto x = random_tensor<float, 4>(rng, {3, 7, 33, 35}, 2, 0.5);
  const auto mean = random_tensor<float, 1>(rng, {7});
  auto var = random_tensor<float, 1>(rng, {7});
  for (Index k = 0; k < 7; ++k) var(k) = var(k) * var(k) + 0.1f;
  const auto w = random_tensor<float, 1>(rng, {7});
  const auto b = random_tensor<float, 1>(rng, {7});
  Tensor<double, 4> expect(x.dimensions());
  for (Index i = 0; i < x.size(); ++i) {
    const Index k = (i / (33 * 35)) % 7;
    expect.data()[i] =
        double((x.data()[i] - (long double)mean(k)) / std::sqrt((long double)var(k) + 1e-5L) * w(k) + b(k));
  }
  for (int threads : {1, 2, 3}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(batch_norm(x, mean, var, w, b, 1e-5, ctx), expect, bn_rtol<float>(), 0))
        << threads << " threads";
  }
}

TEST(BatchNorm, RejectsBadArguments) {
  Tensor<float, 4> x = zeros<float, 4>({2, 3, 4, 5});
  Tensor<float, 1> c3 = zeros<float, 1>({3}), c4 = zeros<float, 1>({4});
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { batch_norm(x, c4, c3, c3, c3); },
      {"batch_norm: expected running_mean.size(0) == input channels (3), but got 4; input (2, 3, 4, 5), "
       "running_mean (4), running_var (3), weight (3), bias (3)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { batch_norm(x, c3, c4, c3, c3); },
                                            {"batch_norm: expected running_var.size(0) == input channels (3), but got 4"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { batch_norm(x, c3, c3, c4, c3); },
                                            {"batch_norm: expected weight.size(0) == input channels (3), but got 4"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { batch_norm(x, c3, c3, c3, c4); },
                                            {"batch_norm: expected bias.size(0) == input channels (3), but got 4"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { batch_norm(x, c3, c3, c3, c3, -1e-5); },
                                            {"batch_norm: expected eps >= 0, but got -1e-05", "input (2, 3, 4, 5)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { batch_norm(x, c3, c3, c3, c3, std::numeric_limits<float>::quiet_NaN()); },
      {"batch_norm: expected eps >= 0, but got nan"}));
  Tensor<float, 1> x1 = zeros<float, 1>({3});
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { batch_norm(x1, c3, c3, c3, c3); },
                                            {"batch_norm: expected input of rank >= 2 (N, C, ...), but got rank 1",
                                             "input (3)"}));
  Tensor<float, 4> empty(0, 3, 4, 5);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { batch_norm(empty, c3, c3, c3, c3); },
                                            {"batch_norm: expected a non-empty input", "input (0, 3, 4, 5)"}));
  // eps = 0 is allowed, as in PyTorch.
  Tensor<float, 1> ones(3);
  ones.setConstant(1);
  EXPECT_NO_THROW(batch_norm(x, c3, ones, c3, c3, 0.0f));
}

TEST(LayerNorm, MatchesPyTorchForwardAndAutograd) {
  layer_norm_all<float>();
  layer_norm_all<double>();
}

// Rows are independent, so any thread count gives bit-identical forward results; backward's dweight and
// dbias are summed over rows in a fixed order, so they are identical too.
TEST(LayerNorm, ThreadCountDoesNotChangeResults) {
  std::mt19937 rng(9);
  const auto x = random_tensor<float, 3>(rng, {4, 50, 768}, 1.5, 3);
  const auto w = random_tensor<float, 1>(rng, {768});
  const auto b = random_tensor<float, 1>(rng, {768});
  const auto dout = random_tensor<float, 3>(rng, {4, 50, 768});
  Tensor<float, 3> out[2], dx[2];
  Tensor<float, 1> mean[2], rstd[2], dw[2], db[2];
  for (int t = 0; t < 2; ++t) {
    Context ctx(t + 1);
    detail::layer_norm_forward(x, w, b, 1e-6f, out[t], mean[t], rstd[t], ctx);
    dx[t] = zeros<float, 3>({4, 50, 768});
    dw[t] = zeros<float, 1>({768});
    db[t] = zeros<float, 1>({768});
    detail::layer_norm_backward(dout, x, w, mean[t], rstd[t], dx[t], dw[t], db[t], ctx);
  }
  EXPECT_TRUE(test::all_close(out[1], out[0], 0, 0));
  EXPECT_TRUE(test::all_close(dx[1], dx[0], 0, 0));
  EXPECT_TRUE(test::all_close(dw[1], dw[0], 0, 0));
  EXPECT_TRUE(test::all_close(db[1], db[0], 0, 0));
  // And the public op is the forward's output.
  EXPECT_TRUE(test::all_close(layer_norm(x, w, b, 1e-6f), out[0], 0, 0));
}

// Central differences of L = sum(layer_norm(x, w, b) * G) in double. Truncation error is O(h^2) times
// third derivatives of order rstd^3 ~ 1, rounding ~1e-16 * |L| / h; with h = 1e-5 both are < 1e-8.
TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(4);
  auto x = random_tensor<double, 3>(rng, {2, 3, 7}, 1.2, 0.3);
  auto w = random_tensor<double, 1>(rng, {7}, 0.3, 1);
  auto b = random_tensor<double, 1>(rng, {7}, 0.3);
  const auto g = random_tensor<double, 3>(rng, {2, 3, 7});
  const double eps = 1e-5;
  auto loss = [&] {
    const Tensor<double, 0> s = (layer_norm(x, w, b, eps) * g).sum();
    return s();
  };
  Tensor<double, 3> out;
  Tensor<double, 1> mean, rstd;
  detail::layer_norm_forward(x, w, b, eps, out, mean, rstd);
  // Start the gradients from non-zero values: backward must add into them.
  auto dx0 = random_tensor<double, 3>(rng, {2, 3, 7});
  auto dw0 = random_tensor<double, 1>(rng, {7});
  auto db0 = random_tensor<double, 1>(rng, {7});
  Tensor<double, 3> dx = dx0;
  Tensor<double, 1> dw = dw0, db = db0;
  detail::layer_norm_backward(g, x, w, mean, rstd, dx, dw, db);
  const double h = 1e-5;
  auto numeric = [&](double* p) {
    const double v = *p;
    *p = v + h;
    const double up = loss();
    *p = v - h;
    const double down = loss();
    *p = v;
    return (up - down) / (2 * h);
  };
  for (Index i = 0; i < x.size(); ++i)
    EXPECT_NEAR(dx.data()[i] - dx0.data()[i], numeric(x.data() + i), 1e-7) << "dx " << i;
  for (Index i = 0; i < w.size(); ++i)
    EXPECT_NEAR(dw.data()[i] - dw0.data()[i], numeric(w.data() + i), 1e-7) << "dw " << i;
  for (Index i = 0; i < b.size(); ++i)
    EXPECT_NEAR(db.data()[i] - db0.data()[i], numeric(b.data() + i), 1e-7) << "db " << i;
}

TEST(LayerNorm, RejectsBadArguments) {
  Tensor<float, 3> x = zeros<float, 3>({2, 5, 8});
  Tensor<float, 1> d8 = zeros<float, 1>({8}), d7 = zeros<float, 1>({7});
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { layer_norm(x, d7, d8); },
      {"layer_norm: expected weight.size(0) == input.size(-1) (8), but got 7; input (2, 5, 8), weight (7), bias (8)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { layer_norm(x, d8, d7); },
      {"layer_norm: expected bias.size(0) == input.size(-1) (8), but got 7; input (2, 5, 8), weight (8), bias (7)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { layer_norm(x, d8, d8, -1.0f); },
                                            {"layer_norm: expected eps >= 0, but got -1", "input (2, 5, 8)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { layer_norm(x, d8, d8, std::nanf("")); },
                                            {"layer_norm: expected eps >= 0, but got nan"}));
  Tensor<float, 0> scalar;
  scalar.setZero();
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { layer_norm(scalar, d8, d8); },
                                            {"layer_norm: expected input of rank >= 1", "input ()"}));
  Tensor<float, 3> empty(2, 0, 8);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { layer_norm(empty, d8, d8); },
                                            {"layer_norm: expected a non-empty input", "input (2, 0, 8)"}));
  Tensor<float, 1> d0(0);
  Tensor<float, 2> zero_width(3, 0);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { layer_norm(zero_width, d0, d0); }, {"non-empty", "input (3, 0)"}));
  // eps = 0 is allowed, as in PyTorch (a constant row then gives NaN, as there).
  Tensor<float, 2> row(1, 8);
  for (Index i = 0; i < 8; ++i) row(0, i) = float(i);
  EXPECT_NO_THROW(layer_norm(row, d8, d8, 0.0f));
}

TEST(LayerNorm, BackwardRejectsBadArguments) {
  Tensor<float, 3> x = zeros<float, 3>({2, 5, 8}), dout = x, dx = x;
  Tensor<float, 1> w = zeros<float, 1>({8}), dw = w, db = w, mean = zeros<float, 1>({10}), rstd = mean;
  Tensor<float, 3> bad3 = zeros<float, 3>({2, 5, 7});
  Tensor<float, 1> bad1 = zeros<float, 1>({9});
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::layer_norm_backward(bad3, x, w, mean, rstd, dx, dw, db); },
      {"layer_norm_backward: expected dout of the input's shape (2, 5, 8), but got (2, 5, 7); dout (2, 5, 7), "
       "input (2, 5, 8), weight (8), mean (10), rstd (10), dinput (2, 5, 8), dweight (8), dbias (8)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { detail::layer_norm_backward(dout, x, bad1, mean, rstd, dx, dw, db); },
                                            {"layer_norm_backward: expected weight.size(0) == input.size(-1) (8), but got 9"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::layer_norm_backward(dout, x, w, bad1, rstd, dx, dw, db); },
      {"layer_norm_backward: expected mean and rstd of size input.numel() / input.size(-1) (10), but got 9 and 10"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { detail::layer_norm_backward(dout, x, w, mean, rstd, bad3, dw, db); },
                                            {"layer_norm_backward: expected dinput of the input's shape (2, 5, 8)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::layer_norm_backward(dout, x, w, mean, rstd, dx, dw, bad1); },
      {"layer_norm_backward: expected dweight and dbias of size input.size(-1) (8), but got 8 and 9"}));
  Tensor<float, 3> out;
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { detail::layer_norm_forward(x, bad1, w, 1e-5f, out, mean, rstd); },
                                            {"layer_norm: expected weight.size(0) == input.size(-1) (8), but got 9"}));
}

// conv then batch_norm == conv with the folded weight and bias, with and without a conv bias.
TEST(FoldBatchNorm, ConvThenBatchNormEqualsFoldedConv) {
  std::mt19937 rng(21);
  const auto x = random_tensor<double, 4>(rng, {2, 3, 6, 5});
  const auto w = random_tensor<double, 4>(rng, {4, 3, 3, 3});
  const auto cb = random_tensor<double, 1>(rng, {4});
  const auto mean = random_tensor<double, 1>(rng, {4}, 1, 0.5);
  auto var = random_tensor<double, 1>(rng, {4});
  for (Index k = 0; k < 4; ++k) var(k) = var(k) * var(k) + 0.2;
  const auto gamma = random_tensor<double, 1>(rng, {4});
  const auto beta = random_tensor<double, 1>(rng, {4});
  const double eps = 1e-3;
  const Tensor<double, 1> none(0);
  for (const Tensor<double, 1>* bias : {&cb, static_cast<const Tensor<double, 1>*>(nullptr), &none}) {
    const auto expect = batch_norm(naive_conv(x, w, bias), mean, var, gamma, beta, eps);
    const auto folded = detail::fold_batch_norm(w, bias, mean, var, gamma, beta, eps);
    EXPECT_TRUE(test::all_close(naive_conv(x, folded.weight, &folded.bias), expect, 1e-13, 0))
        << (bias == &cb ? "conv bias" : bias ? "empty conv bias" : "no conv bias");
  }
}

// The algebra per output channel in float: weight scaled by gamma / sqrt(var + eps), bias shifted.
TEST(FoldBatchNorm, FloatAlgebraPerChannel) {
  std::mt19937 rng(22);
  const auto w = random_tensor<float, 4>(rng, {5, 2, 3, 3});
  const auto cb = random_tensor<float, 1>(rng, {5});
  const auto mean = random_tensor<float, 1>(rng, {5});
  auto var = random_tensor<float, 1>(rng, {5});
  for (Index k = 0; k < 5; ++k) var(k) = var(k) * var(k) + 0.1f;
  const auto gamma = random_tensor<float, 1>(rng, {5});
  const auto beta = random_tensor<float, 1>(rng, {5});
  const auto f = detail::fold_batch_norm(w, &cb, mean, var, gamma, beta, 1e-5);
  Tensor<double, 4> ew(w.dimensions());
  Tensor<double, 1> eb(5);
  for (Index o = 0; o < 5; ++o) {
    const double s = gamma(o) / std::sqrt(double(var(o)) + 1e-5);
    for (Index i = 0; i < 18; ++i) ew.data()[o * 18 + i] = w.data()[o * 18 + i] * s;
    eb(o) = (double(cb(o)) - mean(o)) * s + beta(o);
  }
  // One rounding to float of a double result: half an ulp, 6e-8 relative.
  EXPECT_TRUE(test::all_close(f.weight, ew, 1e-7, 0));
  EXPECT_TRUE(test::all_close(f.bias, eb, 1e-7, 0));
}

TEST(FoldBatchNorm, RejectsBadArguments) {
  const auto w = zeros<float, 4>({4, 3, 3, 3});
  const auto c4 = zeros<float, 1>({4}), c5 = zeros<float, 1>({5});
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::fold_batch_norm(w, &c5, c4, c4, c4, c4); },
      {"fold_batch_norm: expected conv_bias.size(0) == conv_weight.size(0) (4), but got 5; conv_weight (4, 3, 3, 3), "
       "conv_bias (5), mean (4), var (4), gamma (4), beta (4)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { detail::fold_batch_norm(w, nullptr, c4, c5, c4, c4); },
                                            {"fold_batch_norm: expected var.size(0) == conv_weight.size(0) (4), but got 5"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { detail::fold_batch_norm(w, nullptr, c4, c4, c4, c4, -1.0f); },
                                            {"fold_batch_norm: expected eps >= 0"}));
}

}  // namespace test_norm

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "common/reference.hpp"
#include "fovea/ops/softmax.hpp"

namespace test_softmax {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

// Tolerances, per element, with m the row maximum and c = 1 + |x - m|:
//   softmax:      |actual - expected| <= atol + rtol * c * |expected|
//   log_softmax:  |actual - expected| <= atol + rtol * c
// x - m is rounded in T (the reference is exact), and exp amplifies that absolute error |x - m| * eps into
// the same relative error of the output, so c is the condition number; log-probabilities carry it as an
// absolute error. rtol: 1e-6 in float (8 ulp; the exp, the sum over the row and the final scaling each add
// about one), 5e-15 in double. atol: float's and double's subnormal range, where only absolute accuracy exists.
template <class T>
constexpr double kRtol = std::is_same_v<T, float> ? 1e-6 : 5e-15;
template <class T>
constexpr double kAtol = std::is_same_v<T, float> ? 1e-38 : 1e-307;

// Row maxima of x along dim, broadcast back to x's shape.
template <int R>
Tensor<double, R> row_max(const Tensor<double, R>& x, int dim) {
  Index outer = 1, d = x.dimension(dim), inner = 1;
  for (int k = 0; k < dim; ++k) outer *= x.dimension(k);
  for (int k = dim + 1; k < R; ++k) inner *= x.dimension(k);
  Tensor<double, R> m(x.dimensions());
  for (Index o = 0; o < outer; ++o)
    for (Index c = 0; c < inner; ++c) {
      double v = -std::numeric_limits<double>::infinity();
      for (Index k = 0; k < d; ++k) v = std::max(v, x.data()[(o * d + k) * inner + c]);
      for (Index k = 0; k < d; ++k) m.data()[(o * d + k) * inner + c] = v;
    }
  return m;
}

// NaN must meet NaN and an infinity the same infinity; everything else within the tolerance above.
template <class T, int R>
::testing::AssertionResult close_each(const Tensor<T, R>& actual, const Tensor<double, R>& expected,
                                      const Tensor<double, R>& x, int dim, bool log) {
  if (actual.dimensions() != expected.dimensions()) return ::testing::AssertionFailure() << "shape differs";
  const auto m = row_max(x, dim);
  double worst = 0;
  for (Index i = 0; i < actual.size(); ++i) {
    const double a = actual.data()[i], e = expected.data()[i];
    if (a == e) continue;  // exact, including the zeros of -inf entries (where c is infinite)
    if (std::isnan(e) || std::isinf(e)) {
      if ((std::isnan(e) && std::isnan(a)) || a == e) continue;
      return ::testing::AssertionFailure() << "at " << i << ": " << a << ", expected " << e;
    }
    const double c = 1 + std::abs(x.data()[i] - m.data()[i]);
    const double tol = kAtol<T> + kRtol<T> * c * (log ? 1 : std::abs(e));
    const double d = std::abs(a - e);
    if (!(d <= tol))
      return ::testing::AssertionFailure() << "at " << i << " (x = " << x.data()[i] << "): " << a << ", expected "
                                           << e << ", diff " << d << " > tol " << tol;
    worst = std::max(worst, d / tol);
  }
  return ::testing::AssertionSuccess() << "worst diff / tol " << worst;
}

// softmax and log_softmax of one reference input along every dim, given as d and as d - R, on 1 and 2 threads.
template <class T, int R>
void check_case(const std::string& name) {
  const auto x = test::load_ref<T, R>("softmax", name + "_x");
  const auto x64 = test::load_ref<double, R>("softmax", name + "_x");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    for (int d = 0; d < R; ++d) {
      SCOPED_TRACE(name + " dim " + std::to_string(d) + " threads " + std::to_string(threads));
      const auto sm = test::load_ref<double, R>("softmax", name + "_softmax_d" + std::to_string(d));
      const auto lsm = test::load_ref<double, R>("softmax", name + "_log_softmax_d" + std::to_string(d));
      for (int dim : {d, d - R}) {
        EXPECT_TRUE(close_each(softmax(x, dim, ctx), sm, x64, d, false));
        EXPECT_TRUE(close_each(log_softmax(x, dim, ctx), lsm, x64, d, true));
      }
    }
  }
}

template <class T>
void check_all_cases() {
  check_case<T, 3>("r3");
  check_case<T, 4>("r4");
  check_case<T, 3>("r3_huge");
  check_case<T, 3>("r3_masked");
}

TEST(Softmax, MatchesPyTorchFloat) { check_all_cases<float>(); }
TEST(Softmax, MatchesPyTorchDouble) { check_all_cases<double>(); }

// Sizes that use every path: contiguous rows split over threads (dim 2), column blocks narrower than a
// block (dim 1: 77 columns) and many blocks with a partial last one (dim 0: 300 * 77 columns). The truth is
// a naive long double loop.
TEST(Softmax, ThreadedPathsMatchNaiveLoop) {
  Tensor<double, 3> x(5, 300, 77);
  std::mt19937 rng(11);
  std::normal_distribution<double> nd(0, 5);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = double(float(nd(rng)));
  Tensor<float, 3> xf = x.cast<float>();
  for (int dim = 0; dim < 3; ++dim) {
    Tensor<double, 3> sm(x.dimensions()), lsm(x.dimensions());
    const auto m = row_max(x, dim);
    Index outer = 1, d = x.dimension(dim), inner = 1;
    for (int k = 0; k < dim; ++k) outer *= x.dimension(k);
    for (int k = dim + 1; k < 3; ++k) inner *= x.dimension(k);
    for (Index o = 0; o < outer; ++o)
      for (Index c = 0; c < inner; ++c) {
        long double s = 0;
        for (Index k = 0; k < d; ++k) {
          const Index i = (o * d + k) * inner + c;
          s += std::exp((long double)x.data()[i] - m.data()[i]);
        }
        for (Index k = 0; k < d; ++k) {
          const Index i = (o * d + k) * inner + c;
          sm.data()[i] = double(std::exp((long double)x.data()[i] - m.data()[i]) / s);
          lsm.data()[i] = double((long double)x.data()[i] - m.data()[i] - std::log(s));
        }
      }
    for (int threads : {1, 2}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + " threads " + std::to_string(threads));
      Context ctx(threads);
      EXPECT_TRUE(close_each(softmax(x, dim, ctx), sm, x, dim, false));
      EXPECT_TRUE(close_each(log_softmax(x, dim, ctx), lsm, x, dim, true));
      EXPECT_TRUE(close_each(softmax(xf, dim, ctx), sm, x, dim, false));
      EXPECT_TRUE(close_each(log_softmax(xf, dim, ctx), lsm, x, dim, true));
    }
  }
}

// Where exp(x) alone overflows (float at 89, double at 710): the max is subtracted first.
TEST(Softmax, HugeRowsStayFinite) {
  Tensor<float, 2> x(1, 3);
  x.setValues({{1e4f, 1e4f - 1, -1e4f}});
  const auto y = softmax(x, -1);
  const auto ly = log_softmax(x, -1);
  const double s = 1 + std::exp(-1.0);
  EXPECT_NEAR(y(0, 0), 1 / s, 1e-7);
  EXPECT_NEAR(y(0, 1), std::exp(-1.0) / s, 1e-7);
  EXPECT_EQ(y(0, 2), 0.f);
  EXPECT_NEAR(ly(0, 0), -std::log(s), 1e-6);
  EXPECT_NEAR(ly(0, 1), -1 - std::log(s), 1e-6);
  EXPECT_NEAR(ly(0, 2), -2e4 - std::log(s), 2e-3);  // 2e4 in float: ulp 2e-3
}

// A 0-d tensor is a row of one (PyTorch accepts dim -1 and 0), and empty tensors give empty results.
TEST(Softmax, ScalarAndEmptyTensors) {
  Tensor<double, 0> s;
  s() = 3.5;
  EXPECT_EQ(softmax(s, 0)(), 1.0);
  EXPECT_EQ(log_softmax(s, -1)(), 0.0);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { softmax(s, 1); }, {"softmax:", "[-1, 0]", "rank-0", "got 1"}));
  Tensor<float, 3> e(2, 0, 3);
  for (int dim = 0; dim < 3; ++dim) {
    EXPECT_EQ(softmax(e, dim).dimensions(), e.dimensions());
    EXPECT_EQ(log_softmax(e, dim).dimensions(), e.dimensions());
  }
}

TEST(Softmax, RejectsDimOutOfRange) {
  Tensor<float, 3> x(2, 3, 4);
  x.setZero();
  Tensor<double, 4> x4(2, 3, 4, 5);
  x4.setZero();
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { softmax(x, 3); },
                                            {"softmax:", "expected dim in [-3, 2]", "rank-3", "got 3", "(2, 3, 4)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { softmax(x, -4); }, {"softmax:", "[-3, 2]", "got -4", "(2, 3, 4)"}));
  EXPECT_TRUE(
      test::throws_with<ShapeError>([&] { log_softmax(x, 7); }, {"log_softmax:", "[-3, 2]", "got 7", "(2, 3, 4)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { log_softmax(x4, -5); },
                                            {"log_softmax:", "[-4, 3]", "got -5", "(2, 3, 4, 5)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { softmax(x4, 4); }, {"softmax:", "[-4, 3]", "got 4"}));
}

}  // namespace test_softmax

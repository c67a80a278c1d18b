#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/reference.hpp"
#include "fovea/ops/activation.hpp"

namespace test_activation {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

// Tolerances, per element: |actual - expected| <= atol + rtol * cond * |expected| (relative to each value,
// not to the tensor's maximum, so the far tails are checked too).
// rtol: 1e-6 in float (~8 ulp) and 5e-15 in double (~20 ulp). The kernels measure at most ~6 ulp against
// long double (KernelsWithinUlpsOfLongDouble); on these inputs the largest error is 2.6e-7 (float) and
// 5.5e-16 (double) relative, against a reference that is exact in float64.
// cond: 1, except for gelu_tanh and quick_gelu, whose sigmoid argument s (1.702 x, or 2u) is itself rounded
// in T; that rounding moves the result by |s| (1 - sigmoid(s)) times its relative size, the condition
// number of x -> log sigmoid(s(x)), which reaches ~100 in the negative tail (PyTorch's float kernels
// return 0 there).
// atol: 1e-35 in float, 1e-300 in double: tails that small come through subnormal intermediates and carry
// only absolute accuracy (float's smallest normal is 1.2e-38).
template <class T>
constexpr double kRtol = std::is_same_v<T, float> ? 1e-6 : 5e-15;
template <class T>
constexpr double kAtol = std::is_same_v<T, float> ? 1e-35 : 1e-300;

double sigmoid_ld(double s) { return double(1 / (1 + std::exp(-(long double)s))); }

// The condition factor above for each op, from the input value.
double cond(const std::string& op, double x) {
  double s = 0;
  if (op == "quick_gelu") s = 1.702 * x;
  else if (op == "gelu_tanh") s = 2 * std::sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x);
  else return 1;
  return std::isfinite(s) ? 1 + std::abs(s) * (1 - sigmoid_ld(s)) : 1;
}

// NaN must meet NaN and an infinity the same infinity; everything else within the tolerance above.
template <class T, int R>
::testing::AssertionResult close_each(const Tensor<T, R>& actual, const Tensor<double, R>& expected,
                                      const Tensor<double, R>& input, const std::string& op,
                                      const std::string& label) {
  if (actual.dimensions() != expected.dimensions()) return ::testing::AssertionFailure() << "shape differs";
  double worst = 0;  // largest |diff| / tolerance
  for (Index i = 0; i < actual.size(); ++i) {
    const double a = actual.data()[i], e = expected.data()[i];
    if (std::isnan(e) || std::isinf(e)) {
      if ((std::isnan(e) && std::isnan(a)) || a == e) continue;
      return ::testing::AssertionFailure() << label << " at " << i << " (x = " << input.data()[i] << "): " << a
                                           << ", expected " << e;
    }
    const double tol = kAtol<T> + kRtol<T> * cond(op, input.data()[i]) * std::abs(e);
    const double d = std::abs(a - e);
    if (!(d <= tol))
      return ::testing::AssertionFailure() << label << " at " << i << " (x = " << input.data()[i] << "): " << a
                                           << ", expected " << e << ", diff " << d << " > tol " << tol;
    worst = std::max(worst, d / tol);
  }
  return ::testing::AssertionSuccess() << label << ": worst diff / tol " << worst;
}

template <class T, int R>
using OutOfPlace = std::function<Tensor<T, R>(const Tensor<T, R>&, const Context&)>;
template <class T, int R>
using InPlace = std::function<void(Tensor<T, R>&, const Context&)>;

template <class T, int R>
struct Op {
  std::string name;
  OutOfPlace<T, R> out;
  InPlace<T, R> in;
};

template <class T, int R>
std::vector<Op<T, R>> all_ops() {
  using Tn = Tensor<T, R>;
  return {
      {"relu", [](const Tn& x, const Context& c) { return relu(x, c); }, [](Tn& x, const Context& c) { relu_(x, c); }},
      {"gelu", [](const Tn& x, const Context& c) { return gelu(x, "none", c); },
       [](Tn& x, const Context& c) { gelu_(x, "none", c); }},
      {"gelu_tanh", [](const Tn& x, const Context& c) { return gelu(x, "tanh", c); },
       [](Tn& x, const Context& c) { gelu_(x, "tanh", c); }},
      {"quick_gelu", [](const Tn& x, const Context& c) { return quick_gelu(x, c); },
       [](Tn& x, const Context& c) { quick_gelu_(x, c); }},
      {"silu", [](const Tn& x, const Context& c) { return silu(x, c); }, [](Tn& x, const Context& c) { silu_(x, c); }},
      {"sigmoid", [](const Tn& x, const Context& c) { return sigmoid(x, c); },
       [](Tn& x, const Context& c) { sigmoid_(x, c); }},
  };
}

// Every op on one reference input, out of place and in place, on 1 and 2 threads.
template <class T, int R>
void check_case(const std::string& name) {
  SCOPED_TRACE(name);
  const auto x = test::load_ref<T, R>("activation", name + "_x");
  const auto x64 = test::load_ref<double, R>("activation", name + "_x");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    for (const auto& op : all_ops<T, R>()) {
      const auto expected = test::load_ref<double, R>("activation", name + "_" + op.name);
      EXPECT_TRUE(close_each(op.out(x, ctx), expected, x64, op.name, op.name));
      Tensor<T, R> y = x;
      op.in(y, ctx);
      EXPECT_TRUE(close_each(y, expected, x64, op.name, op.name + "_"));
    }
  }
}

template <class T>
void check_all_cases() {
  check_case<T, 1>("sweep");
  check_case<T, 3>("r3_b3");
  check_case<T, 4>("r4_b2");
  check_case<T, 2>("r2_wide");
  check_case<T, 3>("r3_huge");
}

TEST(Activation, MatchesPyTorchFloat) { check_all_cases<float>(); }
TEST(Activation, MatchesPyTorchDouble) { check_all_cases<double>(); }

// Distance from the long double truth in units of T's ulp at the truth (truths here are normal numbers).
template <class T>
double ulps(T got, long double truth) {
  int e;
  std::frexp(double(truth), &e);
  const long double ulp = std::ldexp(1.0L, e - std::numeric_limits<T>::digits);
  return double(std::abs((long double)got - truth) / ulp);
}

long double sigmoid_l(long double x) { return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x)); }
long double phi_l(long double x) { return 0.5L * std::erfc(-x / std::sqrt(2.0L)); }

template <class T, class F, class G>
double max_ulps(F f, G truth, double lo, double hi) {
  const int n = 40000;
  double worst = 0;
  for (int i = 0; i <= n; ++i) {
    const T x = T(lo + (hi - lo) * i / n);
    worst = std::max(worst, ulps<T>(f(x), truth((long double)x)));
  }
  return worst;
}

template <class T>
void check_ulps() {
  const bool f = std::is_same_v<T, float>;
  // Ranges stop where the result leaves T's normal range: exp(-87) and Phi(-13) in float.
  const double lo = f ? -87 : -708, hi = f ? 88 : 709, cdf_lo = f ? -13 : -37;
  // Bounds: the measured maxima (exp 0.9, sigmoid 2.6, normal_cdf 6.0, gelu 6.5, silu 3.4 ulp at -O3 with
  // FMA) plus room for builds that contract differently (exp reaches 1.1 at -O1).
  EXPECT_LE(max_ulps<T>([](T x) { return detail::vexp(x); }, [](long double x) { return std::exp(x); }, lo, hi), 1.5);
  EXPECT_LE(max_ulps<T>([](T x) { return detail::vexp(x); }, [](long double x) { return std::exp(x); }, -1, 1), 1.5);
  EXPECT_LE(max_ulps<T>([](T x) { return detail::sigmoid(x); }, sigmoid_l, lo, 30), 4.0);
  EXPECT_LE(max_ulps<T>([](T x) { return detail::normal_cdf(x); }, phi_l, cdf_lo, 8), 8.0);
  EXPECT_LE(max_ulps<T>([](T x) { return detail::normal_cdf(x); }, phi_l, -0.5, 0.5), 8.0);
  EXPECT_LE(max_ulps<T>([](T x) { return detail::gelu_erf(x); }, [](long double x) { return x * phi_l(x); }, cdf_lo, 8),
            8.0);
  EXPECT_LE(max_ulps<T>([](T x) { return detail::silu(x); }, [](long double x) { return x * sigmoid_l(x); },
                        f ? -80 : -700, 30),
            5.0);
}

TEST(Activation, KernelsWithinUlpsOfLongDouble) {
  check_ulps<float>();
  check_ulps<double>();
}

template <class T>
void check_special() {
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  const T big = std::is_same_v<T, float> ? T(3e38) : T(1e308);  // x^3 overflows inside gelu_tanh
  Tensor<T, 1> x(8);
  x.setValues({-inf, T(-1e4), T(-0.0), T(0), T(1e4), inf, nan, big});
  // Expected, in the order of x. PyTorch gives NaN at -inf for gelu, quick_gelu and silu (-inf * 0);
  // fovea gives the limit -0. Everything else is PyTorch's value.
  const std::vector<std::pair<std::string, std::vector<T>>> cases = {
      {"relu", {0, 0, 0, 0, T(1e4), inf, nan, big}},
      {"gelu", {0, 0, 0, 0, T(1e4), inf, nan, big}},
      {"gelu_tanh", {0, 0, 0, 0, T(1e4), inf, nan, big}},
      {"quick_gelu", {0, 0, 0, 0, T(1e4), inf, nan, big}},
      {"silu", {0, 0, 0, 0, T(1e4), inf, nan, big}},
      {"sigmoid", {0, 0, T(0.5), T(0.5), 1, 1, nan, 1}},
  };
  const auto ops = all_ops<T, 1>();
  for (std::size_t k = 0; k < ops.size(); ++k) {
    ASSERT_EQ(ops[k].name, cases[k].first);
    const auto y = ops[k].out(x, default_context());
    for (Index i = 0; i < x.size(); ++i) {
      const T e = cases[k].second[std::size_t(i)];
      if (std::isnan(e)) EXPECT_TRUE(std::isnan(y(i))) << ops[k].name << "(" << x(i) << ") = " << y(i);
      else EXPECT_EQ(y(i), e) << ops[k].name << "(" << x(i) << ")";
    }
  }
  // The exposed kernels agree at the ends of their ranges.
  EXPECT_EQ(detail::vexp(-inf), T(0));
  EXPECT_EQ(detail::vexp(inf), inf);
  EXPECT_EQ(detail::vexp(T(1e4)), inf);
  EXPECT_TRUE(std::isnan(detail::vexp(nan)));
  EXPECT_EQ(detail::normal_cdf(-inf), T(0));
  EXPECT_EQ(detail::normal_cdf(inf), T(1));
  EXPECT_TRUE(std::isnan(detail::normal_cdf(nan)));
  EXPECT_TRUE(std::isnan(detail::sigmoid(nan)));
}

TEST(Activation, InfinitiesNaNAndHugeValues) {
  check_special<float>();
  check_special<double>();
}

// Past the serial threshold the work is split into chunks across threads: every element must come out
// exactly as the scalar kernel gives it, whatever the chunking (odd total size, 1 and 2 threads).
TEST(Activation, ThreadedChunksMatchScalarKernel) {
  Tensor<float, 3> x(3, 101, 1001);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 10.f);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = nd(rng);
  const std::vector<std::function<float(float)>> kernels = {
      [](float v) { return detail::relu(v); },       [](float v) { return detail::gelu_erf(v); },
      [](float v) { return detail::gelu_tanh(v); },  [](float v) { return detail::quick_gelu(v); },
      [](float v) { return detail::silu(v); },       [](float v) { return detail::sigmoid(v); }};
  for (int threads : {1, 2}) {
    Context ctx(threads);
    const auto ops = all_ops<float, 3>();
    for (std::size_t k = 0; k < ops.size(); ++k) {
      const auto y = ops[k].out(x, ctx);
      Tensor<float, 3> z = x;
      ops[k].in(z, ctx);
      Index bad = 0;
      for (Index i = 0; i < x.size(); ++i) {
        const float e = kernels[k](x.data()[i]);
        bad += (y.data()[i] != e) + (z.data()[i] != e);
      }
      EXPECT_EQ(bad, 0) << ops[k].name << " on " << threads << " threads";
    }
  }
}

// The runtime-selected epilogue form gives what the named ops give.
TEST(Activation, ApplyActivationMatchesOps) {
  Tensor<double, 2> x(7, 13);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = double(i % 29) - 14.5 + 0.01 * double(i);
  using A = detail::Activation;
  const std::vector<std::pair<A, std::string>> acts = {{A::relu, "relu"}, {A::gelu, "gelu"},
                                                       {A::gelu_tanh, "gelu_tanh"}, {A::quick_gelu, "quick_gelu"},
                                                       {A::silu, "silu"},       {A::sigmoid, "sigmoid"}};
  const auto ops = all_ops<double, 2>();
  for (std::size_t k = 0; k < acts.size(); ++k) {
    ASSERT_EQ(ops[k].name, acts[k].second);
    Tensor<double, 2> y = x;
    detail::apply_activation(acts[k].first, y.data(), y.size());
    EXPECT_TRUE(test::all_close(y, ops[k].out(x, default_context()), 0, 0)) << acts[k].second;
  }
  Tensor<double, 2> y = x;
  detail::apply_activation(A::identity, y.data(), y.size());
  EXPECT_TRUE(test::all_close(y, x, 0, 0));
}

TEST(Activation, RejectsUnknownApproximate) {
  Tensor<float, 2> x(2, 3);
  x.setConstant(-1.f);
  for (const char* bad : {"Tanh", "", "exact", "none "}) {
    const std::string quoted = std::string("'") + bad + "'";
    EXPECT_TRUE(test::throws_with<ShapeError>([&] { gelu(x, bad); },
                                              {"gelu:", "'none' or 'tanh'", quoted.c_str(), "(2, 3)"}));
    EXPECT_TRUE(test::throws_with<ShapeError>([&] { gelu_(x, bad); },
                                              {"gelu_:", "'none' or 'tanh'", quoted.c_str(), "(2, 3)"}));
  }
  // The check runs before any compute: the in-place input is untouched.
  for (Index i = 0; i < x.size(); ++i) EXPECT_EQ(x.data()[i], -1.f);
}

}  // namespace test_activation

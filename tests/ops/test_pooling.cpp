#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <string>

#include "common/reference.hpp"
#include "fovea/ops/pooling.hpp"

namespace test_pooling {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const char* const kFamily = "pooling";

// Two threads, so that every reference case also runs the split path when its size allows.
const Context& two_threads() {
  static const Context ctx(2);
  return ctx;
}
const Context& one_thread() {
  static const Context ctx(1);
  return ctx;
}

// The same cases, with the same arguments, as tests/reference/ref_pooling.py; stride nullopt = the default.
struct MaxCase {
  const char* name;
  Size2 kernel;
  std::optional<Size2> stride;
  Size2 padding, dilation;
  bool ceil_mode;
};
const MaxCase kMaxCases[] = {
    {"max_resnet", 3, 2, 1, 1, false},
    {"max_odd_floor", 3, 2, 1, 1, false},
    {"max_odd_ceil", 3, 2, 0, 1, true},
    {"max_ceil_drop", {2, 3}, Size2{3, 2}, {1, 1}, 1, true},
    {"max_asym", {3, 2}, Size2{1, 3}, {1, 0}, 1, false},
    {"max_default_stride", {2, 3}, std::nullopt, 0, 1, false},
    {"max_dilated", 3, 2, 1, 2, false},
    {"max_dilated_asym_ceil", {2, 3}, 1, {1, 1}, {2, 3}, true},
    {"max_dilated_ceil", 3, 3, 1, {3, 2}, true},
    {"max_kernel_past_input", 3, 2, 0, 1, true},
    {"max_dilated_all_padding", {4, 2}, 1, 1, {2, 3}, false},
};

struct AvgCase {
  const char* name;
  Size2 kernel;
  std::optional<Size2> stride;
  Size2 padding;
  bool ceil_mode, count_include_pad;
};
const AvgCase kAvgCases[] = {
    {"avg_2x2", 2, std::nullopt, 0, false, true},
    {"avg_odd_floor_pad", 3, 2, 1, false, true},
    {"avg_odd_floor_nopad", 3, 2, 1, false, false},
    {"avg_ceil_pad", 3, 2, 1, true, true},
    {"avg_ceil_nopad", 3, 2, 1, true, false},
    {"avg_asym_ceil_pad", {3, 2}, Size2{2, 1}, {1, 1}, true, true},
    {"avg_asym_ceil_nopad", {3, 2}, Size2{2, 1}, {1, 1}, true, false},
    {"avg_big_window_ceil", {5, 4}, 3, 2, true, true},
    {"avg_big_window_ceil_nopad", {5, 4}, 3, 2, true, false},
    {"avg_stride1", 3, 1, 1, false, true},
    {"avg_kernel_past_input", 3, 2, 0, true, true},
};

struct AdaptiveCase {
  const char* name;
  std::array<Index, 2> output_size;
};
const AdaptiveCase kAdaptiveCases[] = {
    {"adaptive_1x1", {1, 1}}, {"adaptive_7x7", {7, 7}},      {"adaptive_7x7_same", {7, 7}},
    {"adaptive_3x5", {3, 5}}, {"adaptive_3x5_even", {3, 5}}, {"adaptive_upsample", {7, 7}},
};

Pool2dOptions max_options(const MaxCase& c) {
  Pool2dOptions o(c.kernel);
  if (c.stride) o.stride(*c.stride);
  return o.padding(c.padding).dilation(c.dilation).ceil_mode(c.ceil_mode);
}
Pool2dOptions avg_options(const AvgCase& c) {
  Pool2dOptions o(c.kernel);
  if (c.stride) o.stride(*c.stride);
  return o.padding(c.padding).ceil_mode(c.ceil_mode).count_include_pad(c.count_include_pad);
}

// Averages in float: a window sum of k floats carries about k/2 ulp of rounding, k <= 20 here; 1e-6 of
// the largest output leaves room over the ~2e-7 seen. In double the same error is ~1e-15.
template <class T>
constexpr double avg_rtol() {
  return std::is_same_v<T, float> ? 1e-6 : 1e-13;
}

// Equal element for element, where NaN equals NaN, infinities count (all_close's differences cannot) and
// so does the sign of a zero.
template <class T>
::testing::AssertionResult identical(const Tensor<T, 4>& actual, const Tensor<T, 4>& expected) {
  if (actual.dimensions() != expected.dimensions())
    return ::testing::AssertionFailure() << "shape " << detail::shape_str(actual) << " != expected "
                                         << detail::shape_str(expected);
  for (Index i = 0; i < actual.size(); ++i) {
    const T a = actual.data()[i], e = expected.data()[i];
    if (!((a == e && std::signbit(a) == std::signbit(e)) || (std::isnan(a) && std::isnan(e))))
      return ::testing::AssertionFailure() << "flat index " << i << ": actual " << a << ", expected " << e;
  }
  return ::testing::AssertionSuccess();
}

template <class T>
void check_max_references() {
  for (const MaxCase& c : kMaxCases) {
    const auto x = test::load_ref<T, 4>(kFamily, std::string(c.name) + "_x");
    const auto y = test::load_ref<T, 4>(kFamily, std::string(c.name) + "_y");
    // Exact: max only selects inputs, and the float64 truth holds the same float32-representable values.
    EXPECT_TRUE(identical(max_pool2d(x, max_options(c), two_threads()), y)) << c.name;
  }
}

template <class T>
void check_avg_references() {
  for (const AvgCase& c : kAvgCases) {
    const auto x = test::load_ref<T, 4>(kFamily, std::string(c.name) + "_x");
    const auto y = test::load_ref<T, 4>(kFamily, std::string(c.name) + "_y");
    EXPECT_TRUE(test::all_close(avg_pool2d(x, avg_options(c), two_threads()), y, avg_rtol<T>(), 0)) << c.name;
  }
}

template <class T>
void check_adaptive_references() {
  for (const AdaptiveCase& c : kAdaptiveCases) {
    const auto x = test::load_ref<T, 4>(kFamily, std::string(c.name) + "_x");
    const auto y = test::load_ref<T, 4>(kFamily, std::string(c.name) + "_y");
    // Bins here hold up to 49 values (1x1 of 7x7), summed in a different order than PyTorch's mean.
    EXPECT_TRUE(test::all_close(adaptive_avg_pool2d(x, c.output_size, two_threads()), y, avg_rtol<T>(), 0)) << c.name;
  }
}

// Random values in [-2, 2), a quarter of them repeated and some +0 and -0, so that ties are common and the
// order of comparisons shows in the sign of zeros.
template <class T>
Tensor<T, 4> random_input(Index n, Index c, Index h, Index w, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-2, 2);
  Tensor<T, 4> x(n, c, h, w);
  for (Index i = 0; i < x.size(); ++i) {
    const double v = u(rng);
    x.data()[i] = (i % 4 == 3) ? x.data()[i - 1] : std::abs(v) > 1.5 ? std::copysign(T(0), T(v)) : T(v);
  }
  return x;
}

// "input (1, 2, 5, 7), kernel_size (3, 3), ..." for the sweep's failure messages.
template <class T>
std::string describe(const Tensor<T, 4>& x, const Pool2dOptions& o) {
  return "input " + detail::shape_str(x) + ", " + detail::pool2d_args_str(o, false);
}

// Output count by walking the windows one at a time. floor: window o fits inside the padded input.
// ceil: the previous window stopped short of the padded end, and o starts inside the input or its left
// padding (PyTorch's rule for the last window).
Index brute_output_size(Index in, Index k, Index p, Index s, Index d, bool ceil) {
  const Index reach = d * (k - 1) + 1, room = in + 2 * p - reach;
  Index count = 0;
  for (Index o = 0;; ++o) {
    const bool exists = ceil ? ((o - 1) * s < room && o * s - p < in) : (o * s <= room);
    if (!exists) return count;
    ++count;
  }
}

// Pooling straight from the definition, one output at a time over the whole kernel: taps outside the
// input are skipped; the average divides by the taps inside input + padding (count_include_pad) or
// inside the input. Same update order as PyTorch, so the op must agree to the bit.
template <class T>
Tensor<T, 4> naive_pool(const Tensor<T, 4>& x, const Pool2dOptions& o, bool is_max) {
  const Index N = x.dimension(0), C = x.dimension(1), H = x.dimension(2), W = x.dimension(3);
  const Index OH = brute_output_size(H, o.kernel_.h, o.padding_.h, o.stride_.h, o.dilation_.h, o.ceil_mode_);
  const Index OW = brute_output_size(W, o.kernel_.w, o.padding_.w, o.stride_.w, o.dilation_.w, o.ceil_mode_);
  Tensor<T, 4> y(N, C, OH, OW);
  for (Index n = 0; n < N; ++n)
    for (Index c = 0; c < C; ++c)
      for (Index oh = 0; oh < OH; ++oh)
        for (Index ow = 0; ow < OW; ++ow) {
          T acc = is_max ? -std::numeric_limits<T>::infinity() : T(0);
          Index inside = 0, padded = 0;
          for (Index kh = 0; kh < o.kernel_.h; ++kh)
            for (Index kw = 0; kw < o.kernel_.w; ++kw) {
              const Index ih = oh * o.stride_.h - o.padding_.h + kh * o.dilation_.h;
              const Index iw = ow * o.stride_.w - o.padding_.w + kw * o.dilation_.w;
              padded += ih < H + o.padding_.h && iw < W + o.padding_.w;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              ++inside;
              const T v = x(n, c, ih, iw);
              if (!is_max)
                acc += v;
              else if (v > acc || std::isnan(v))
                acc = v;
            }
          y(n, c, oh, ow) = is_max ? acc : acc / T(o.count_include_pad_ ? padded : inside);
        }
  return y;
}

template <class T>
void check_random_sweep() {
  std::mt19937 rng(7);
  const auto pick = [&](Index lo, Index hi) { return std::uniform_int_distribution<Index>(lo, hi)(rng); };
  int ran = 0, rejected = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const bool is_max = trial % 2 == 0;
    const Size2 k{pick(1, 4), pick(1, 4)};
    Pool2dOptions o(k);
    o.stride({pick(1, 3), pick(1, 3)}).padding({pick(0, k.h / 2), pick(0, k.w / 2)}).ceil_mode(pick(0, 1));
    if (is_max)
      o.dilation({pick(1, 3), pick(1, 3)});
    else
      o.count_include_pad(pick(0, 1));
    const auto x = random_input<T>(pick(1, 2), pick(1, 3), pick(1, 12), pick(1, 12), unsigned(trial));
    const std::string what = describe(x, o);
    const Index oh = pooling_output_size(x.dimension(2), k.h, o.padding_.h, o.stride_.h, o.dilation_.h, o.ceil_mode_);
    const Index ow = pooling_output_size(x.dimension(3), k.w, o.padding_.w, o.stride_.w, o.dilation_.w, o.ceil_mode_);
    if (oh < 1 || ow < 1) {
      ++rejected;
      EXPECT_THROW(is_max ? max_pool2d(x, o) : avg_pool2d(x, o), ShapeError) << what;
      continue;
    }
    ++ran;
    const auto expect = naive_pool(x, o, is_max);
    for (const Context* ctx : {&one_thread(), &two_threads()}) {
      const auto got = is_max ? max_pool2d(x, o, *ctx) : avg_pool2d(x, o, *ctx);
      ASSERT_TRUE(identical(got, expect)) << what << " threads " << ctx->num_threads();
    }
  }
  // The sweep must exercise both paths, or it proves nothing.
  EXPECT_GT(ran, 300);
  EXPECT_GT(rejected, 0);
}

TEST(Pooling, MaxPool2dMatchesPyTorch) {
  check_max_references<float>();
  check_max_references<double>();
}

TEST(Pooling, AvgPool2dMatchesPyTorch) {
  check_avg_references<float>();
  check_avg_references<double>();
}

// PyTorch's float32 CPU kernel sums each window from 0 in window order and divides once; so does fovea,
// so the float results agree exactly, not just within rounding.
TEST(Pooling, AvgPool2dFloatMatchesPyTorchFloatBitForBit) {
  for (const AvgCase& c : kAvgCases) {
    const auto x = test::load_ref<float, 4>(kFamily, std::string(c.name) + "_x");
    const auto y = test::load_ref<float, 4>(kFamily, std::string(c.name) + "_yf32");
    EXPECT_TRUE(identical(avg_pool2d(x, avg_options(c), two_threads()), y)) << c.name;
  }
}

TEST(Pooling, AdaptiveAvgPool2dMatchesPyTorch) {
  check_adaptive_references<float>();
  check_adaptive_references<double>();
}

// NaN anywhere in a window wins, -inf is an ordinary value, +inf wins over everything but NaN.
TEST(Pooling, MaxPool2dPropagatesNaNLikePyTorch) {
  const auto x = test::load_ref<float, 4>(kFamily, "max_nan_x");
  const auto y = test::load_ref<float, 4>(kFamily, "max_nan_y");
  const auto got = max_pool2d(x, Pool2dOptions(3).stride(2).padding(1).ceil_mode(true));
  ASSERT_EQ(got.dimensions(), y.dimensions());
  Index nans = 0, infs = 0;
  for (Index i = 0; i < y.size(); ++i) {
    const float e = y.data()[i], a = got.data()[i];
    if (std::isnan(e)) {
      ++nans;
      EXPECT_TRUE(std::isnan(a)) << "flat index " << i << " got " << a;
    } else {
      infs += std::isinf(e);
      EXPECT_EQ(a, e) << "flat index " << i;
    }
  }
  EXPECT_GE(nans, 3);  // the file must really hold NaN windows and infinite results
  EXPECT_GE(infs, 2);
}

// The sign of a zero is the first of the tied values in window order (row, then column), as in PyTorch.
TEST(Pooling, MaxPool2dKeepsTheFirstOfTiedZeros) {
  const auto o = Pool2dOptions(3).stride(2).padding(1);
  EXPECT_TRUE(identical(max_pool2d(test::load_ref<float, 4>(kFamily, "max_signed_zero_x"), o),
                        test::load_ref<float, 4>(kFamily, "max_signed_zero_y")));
  EXPECT_TRUE(identical(max_pool2d(test::load_ref<double, 4>(kFamily, "max_signed_zero_x"), o),
                        test::load_ref<double, 4>(kFamily, "max_signed_zero_y")));
}

TEST(Pooling, RandomConfigurationsMatchNaiveLoopsBitForBit) {
  check_random_sweep<float>();
  check_random_sweep<double>();
}

TEST(Pooling, OutputSizeMatchesWindowWalk) {
  for (Index in = 0; in <= 13; ++in)
    for (Index k = 1; k <= 5; ++k)
      for (Index p = 0; p <= k / 2; ++p)
        for (Index s = 1; s <= 4; ++s)
          for (Index d = 1; d <= 3; ++d)
            for (bool ceil : {false, true})
              EXPECT_EQ(std::max<Index>(0, pooling_output_size(in, k, p, s, d, ceil)),
                        brute_output_size(in, k, p, s, d, ceil))
                  << "in " << in << " k " << k << " p " << p << " s " << s << " d " << d << " ceil " << ceil;
  // Printed by PyTorch 1.13 (F.max_pool2d(...).shape): the ResNet stem, and ceil_mode's dropped window
  // (H 5, kernel 2, stride 3, pad 1: the third window would start at 5, past the input).
  EXPECT_EQ(pooling_output_size(112, 3, 1, 2, 1, false), 56);
  EXPECT_EQ(pooling_output_size(5, 2, 1, 3, 1, true), 2);
  EXPECT_EQ(pooling_output_size(2, 3, 0, 2, 1, true), 1);
  EXPECT_EQ(pooling_output_size(2, 3, 0, 2, 1, false), 0);
  // Kernels this large saturate instead of overflowing.
  EXPECT_LE(pooling_output_size(7, std::numeric_limits<Index>::max(), 0, 1, 3, false), 0);
  EXPECT_TRUE(test::throws_with<ShapeError>([] { pooling_output_size(7, 3, 1, 0, 1, false); },
                                            {"pooling_output_size", "stride 0"}));
}

TEST(Pooling, OptionsDefaultLikePyTorch) {
  const Pool2dOptions o({3, 2});
  EXPECT_EQ(o.kernel_, Size2(3, 2));
  EXPECT_EQ(o.stride_, Size2(3, 2));  // stride=None means the kernel
  EXPECT_EQ(o.padding_, Size2(0));
  EXPECT_EQ(o.dilation_, Size2(1));
  EXPECT_FALSE(o.ceil_mode_);
  EXPECT_TRUE(o.count_include_pad_);
  const auto p = Pool2dOptions(3).stride({2, 1}).padding(1).dilation(2).ceil_mode(true).count_include_pad(false);
  EXPECT_EQ(p.stride_, Size2(2, 1));
  EXPECT_EQ(p.padding_, Size2(1));
  EXPECT_EQ(p.dilation_, Size2(2));
  EXPECT_TRUE(p.ceil_mode_);
  EXPECT_FALSE(p.count_include_pad_);
}

// Splitting planes over threads must not change a single bit.
TEST(Pooling, ThreadCountDoesNotChangeResults) {
  const auto x = random_input<float>(2, 8, 64, 48, 99);
  const auto o = Pool2dOptions(3).stride(2).padding(1).ceil_mode(true);
  EXPECT_TRUE(identical(max_pool2d(x, o, two_threads()), max_pool2d(x, o, one_thread())));
  EXPECT_TRUE(identical(avg_pool2d(x, o, two_threads()), avg_pool2d(x, o, one_thread())));
  EXPECT_TRUE(identical(adaptive_avg_pool2d(x, {5, 7}, two_threads()), adaptive_avg_pool2d(x, {5, 7}, one_thread())));
}

// A kernel of 2^30 over a 5x5 input: both ceil_mode windows cover the whole input, and the work is bounded
// by the input, not by the kernel (this returns at once instead of walking 2^60 taps).
TEST(Pooling, HugeKernelsCostWhatTheInputCosts) {
  const auto x = random_input<float>(1, 2, 5, 5, 3);
  const Index k = Index(1) << 30;
  const auto o = Pool2dOptions(k).stride(k / 2).padding(k / 2).ceil_mode(true);
  const auto y = max_pool2d(x, o);
  ASSERT_EQ(y.dimensions(), (Eigen::DSizes<Index, 4>(1, 2, 2, 2)));
  for (Index c = 0; c < 2; ++c) {
    float m = -std::numeric_limits<float>::infinity();
    for (Index i = 0; i < 25; ++i) m = std::max(m, x.data()[c * 25 + i]);
    for (Index i = 0; i < 4; ++i) EXPECT_EQ(y.data()[c * 4 + i], m) << c << " " << i;
  }
}

// PyTorch accepts an empty batch and returns an empty batch.
TEST(Pooling, EmptyBatchGivesEmptyOutput) {
  const Tensor<float, 4> x(0, 3, 7, 7);
  const auto m = max_pool2d(x, Pool2dOptions(3).stride(2));
  const auto a = avg_pool2d(x, Pool2dOptions(2));
  const auto g = adaptive_avg_pool2d(x, {2, 5});
  EXPECT_EQ(m.dimensions(), (Eigen::DSizes<Index, 4>(0, 3, 3, 3)));
  EXPECT_EQ(a.dimensions(), (Eigen::DSizes<Index, 4>(0, 3, 3, 3)));
  EXPECT_EQ(g.dimensions(), (Eigen::DSizes<Index, 4>(0, 3, 2, 5)));
}

TEST(Pooling, RejectsBadArgumentsWithShapes) {
  const Tensor<float, 4> x(2, 3, 7, 7);
  const auto max_with = [&](Pool2dOptions o) { return [&x, o] { max_pool2d(x, o); }; };
  const auto avg_with = [&](Pool2dOptions o) { return [&x, o] { avg_pool2d(x, o); }; };
  EXPECT_TRUE(test::throws_with<ShapeError>(
      max_with(Pool2dOptions({0, 3})), {"max_pool2d: expected kernel_size > 0, but got (0, 3)", "input (2, 3, 7, 7)",
                                        "kernel_size (0, 3)", "stride (0, 3)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(avg_with(Pool2dOptions(-1)), {"avg_pool2d", "kernel_size > 0"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(max_with(Pool2dOptions(3).stride({2, 0})),
                                            {"max_pool2d: expected stride > 0, but got (2, 0)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(avg_with(Pool2dOptions(3).stride(-1)), {"avg_pool2d", "stride > 0"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(max_with(Pool2dOptions(3).dilation({0, 1})),
                                            {"max_pool2d: expected dilation > 0, but got (0, 1)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      avg_with(Pool2dOptions(3).dilation(2)),
      {"avg_pool2d: dilation applies to max pooling only", "but got (2, 2)", "input (2, 3, 7, 7)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(max_with(Pool2dOptions(3).padding({-1, 0})),
                                            {"max_pool2d: expected padding >= 0, but got (-1, 0)"}));
  // Half of the kernel itself, not of the dilated extent (3 taps 2 apart span 5, still only pad 1).
  EXPECT_TRUE(test::throws_with<ShapeError>(max_with(Pool2dOptions(3).padding(2).dilation(2)),
                                            {"max_pool2d: expected padding <= kernel_size / 2",
                                             "padding (2, 2) with kernel_size (3, 3)", "dilation (2, 2)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      avg_with(Pool2dOptions({4, 3}).padding({2, 2})),
      {"avg_pool2d", "padding (2, 2) with kernel_size (4, 3)", "count_include_pad true"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(max_with(Pool2dOptions(Index(1) << 40)), {"max_pool2d", "fit in int"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      max_with(Pool2dOptions(9)),
      {"max_pool2d: output size (0, 0) is too small", "input (2, 3, 7, 7)", "kernel_size (9, 9)", "ceil_mode false"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(avg_with(Pool2dOptions({2, 9}).stride(1)),
                                            {"avg_pool2d: output size (6, -1) is too small"}));
  for (const auto& bad : {Tensor<float, 4>(1, 0, 7, 7), Tensor<float, 4>(1, 3, 0, 7), Tensor<float, 4>(1, 3, 7, 0)}) {
    EXPECT_TRUE(test::throws_with<ShapeError>(
        [&] { max_pool2d(bad, Pool2dOptions(1)); },
        {"max_pool2d", "non-zero channels, height and width", detail::shape_str(bad).c_str()}));
    EXPECT_TRUE(test::throws_with<ShapeError>([&] { avg_pool2d(bad, Pool2dOptions(1)); }, {"avg_pool2d"}));
  }
}

TEST(Pooling, AdaptiveRejectsBadArgumentsWithShapes) {
  const Tensor<double, 4> x(2, 3, 7, 7);
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] {
        adaptive_avg_pool2d(x, {0, 1});
      },
      {"adaptive_avg_pool2d: expected output_size > 0, but got (0, 1)", "input (2, 3, 7, 7)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { adaptive_avg_pool2d(x, {3, -1}); }, {"but got (3, -1)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] {
        adaptive_avg_pool2d(Tensor<double, 4>(2, 3, 0, 7), {1, 1});
      },
      {"adaptive_avg_pool2d", "non-zero height and width", "(2, 3, 0, 7)", "output_size (1, 1)"}));
  const Index huge = Index(1) << 40;
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] {
        adaptive_avg_pool2d(x, {huge, huge});
      },
      {"adaptive_avg_pool2d: output_size too large"}));
}

}  // namespace test_pooling

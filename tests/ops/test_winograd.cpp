// Winograd F(4x4, 3x3) (ops/winograd.hpp), the path conv2d takes for 3x3 stride-1 convs: against PyTorch's
// references (ref_conv2d.py) on every way of cutting the tiles, against naive loops on ResNet-sized layers
// and every padding, the fused epilogue, the weight caches of the modules, and conv2d's choice of it.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/reference.hpp"
#include "fovea/nn/conv2d.hpp"
#include "fovea/ops/conv2d.hpp"
#include "fovea/ops/winograd.hpp"

namespace test_winograd {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

// The cases of ref_conv2d.py that Winograd applies to (3x3, stride 1, dilation 1, groups 1; all padding 1).
const char* const kRefCases[] = {"k3_pad1", "many_tiles", "small_spatial", "small_spatial_b1"};

detail::WinogradPlan wplan(Index block, Index o_blocks) {
  detail::WinogradPlan p;
  p.block = block;
  p.o_blocks = o_blocks;
  return p;
}

// Every way the tiles can be cut: one tile per block, blocks that end inside a tile row or span images,
// one block for everything, and output channels split (evenly or not, more parts than threads).
const std::vector<detail::WinogradPlan>& plans() {
  static const std::vector<detail::WinogradPlan> p = {wplan(1, 1), wplan(3, 1),   wplan(5, 1), wplan(17, 1),
                                                      wplan(100000, 1), wplan(7, 2), wplan(100000, 3),
                                                      wplan(2, 5)};
  return p;
}

std::string plan_str(const detail::WinogradPlan& p) {
  return detail::cat("block=", p.block, " o_blocks=", p.o_blocks);
}

// conv2d with padding `pad` through the Winograd kernel with the given plan (nullptr: its own), into an
// output prefilled with 1e30 so that anything left unwritten shows; optional ReLU and residual.
template <class T>
Tensor<T, 4> run_winograd(const Tensor<T, 4>& x, const Tensor<T, 4>& w, const Tensor<T, 1>* b, Size2 pad,
                          const detail::WinogradPlan* plan, const Context& ctx, bool relu = false,
                          const Tensor<T, 4>* residual = nullptr) {
  const auto& d = x.dimensions();
  const std::array<Index, 4> wd{w.dimension(0), w.dimension(1), w.dimension(2), w.dimension(3)};
  const auto opt = Conv2dOptions().padding(pad);
  const auto s = detail::conv2d_check({d[0], d[1], d[2], d[3]}, wd, b ? b->dimension(0) : -1, opt);
  EXPECT_TRUE(detail::conv2d_winograd_applies(s));
  Tensor<T, 4> out(s.N, s.O, s.OH, s.OW);
  out.setConstant(T(1e30));
  const detail::WinogradPlan own = detail::winograd_plan(detail::winograd_shape(s), ctx.num_threads());
  detail::conv2d_run(s, x.data(), w.data(), b ? b->data() : nullptr, out.data(), relu,
                     residual ? residual->data() : nullptr, ctx, nullptr, nullptr, plan ? plan : &own);
  return out;
}

// Naive conv in long double (stride 1, dilation 1, groups 1): the truth for shapes without reference files.
template <class T>
Tensor<double, 4> naive_conv3x3(const Tensor<T, 4>& x, const Tensor<T, 4>& w, const Tensor<T, 1>* b, Size2 pad) {
  const Index N = x.dimension(0), C = x.dimension(1), H = x.dimension(2), W = x.dimension(3), O = w.dimension(0);
  const Index OH = H + 2 * pad.h - 2, OW = W + 2 * pad.w - 2;
  Tensor<double, 4> out(N, O, OH, OW);
  for (Index n = 0; n < N; ++n)
    for (Index o = 0; o < O; ++o)
      for (Index oy = 0; oy < OH; ++oy)
        for (Index ox = 0; ox < OW; ++ox) {
          long double s = b ? (*b)(o) : 0;
          for (Index c = 0; c < C; ++c)
            for (Index i = 0; i < 3; ++i)
              for (Index j = 0; j < 3; ++j) {
                const Index iy = oy - pad.h + i, ix = ox - pad.w + j;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W) s += (long double)x(n, c, iy, ix) * w(o, c, i, j);
              }
          out(n, o, oy, ox) = double(s);
        }
  return out;
}

template <class T>
Tensor<T, 4> random_tensor(Index a, Index b, Index c, Index d, unsigned seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, scale);
  Tensor<T, 4> t(a, b, c, d);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(nd(rng));
  return t;
}

template <class T>
Tensor<T, 1> random_vector(Index n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  Tensor<T, 1> t(n);
  for (Index i = 0; i < n; ++i) t(i) = T(nd(rng));
  return t;
}

// Largest |a - e| over max|e|.
template <class A>
double relative_error(const A& actual, const Tensor<double, 4>& expected) {
  double worst = 0, scale = 0;
  for (Index i = 0; i < expected.size(); ++i) {
    worst = std::max(worst, std::abs(double(actual.data()[i]) - expected.data()[i]));
    scale = std::max(scale, std::abs(expected.data()[i]));
  }
  return worst / scale;
}

// Float against PyTorch's float64 conv, every plan, 1 to 3 threads. The tolerance is conv2d's float one
// (1e-5 of the largest output; test_conv2d). Winograd's own error is larger than a direct sum's: the
// transforms scale terms by up to 8 (A) and 1/24 (G), and the 6x6 input transform adds 6-term sums of
// them, before the channel sum. Measured here (float vs PyTorch in float64, relative to the largest output):
// 1.6e-6 .. 2.1e-6 on these cases, where im2col's is 1.4e-7 .. 2.3e-7.
TEST(Winograd, MatchesPyTorchFloatOnEveryPlan) {
  Context one(1), two(2), three(3);
  for (const char* name : kRefCases) {
    const std::string n = name;
    const auto x = test::load_ref<float, 4>("conv2d", n + "_input");
    const auto w = test::load_ref<float, 4>("conv2d", n + "_weight");
    const auto b = test::load_ref<float, 1>("conv2d", n + "_bias");
    const auto expected = test::load_ref<double, 4>("conv2d", n + "_out");
    for (const auto& p : plans())
      for (const Context* ctx : {&one, &two, &three})
        EXPECT_TRUE(test::all_close(run_winograd(x, w, &b, 1, &p, *ctx), expected, 1e-5, 0))
            << name << " " << plan_str(p) << " threads=" << ctx->num_threads();
  }
}

// double: the transforms are exact in binary up to rounding, so the sums match to ~1e-15 of the scale; an
// indexing slip cannot hide under this.
TEST(Winograd, MatchesPyTorchDoubleOnEveryPlan) {
  Context two(2), three(3);
  for (const char* name : kRefCases) {
    const std::string n = name;
    const auto x = test::load_ref<double, 4>("conv2d", n + "_input");
    const auto w = test::load_ref<double, 4>("conv2d", n + "_weight");
    const auto b = test::load_ref<double, 1>("conv2d", n + "_bias");
    const auto expected = test::load_ref<double, 4>("conv2d", n + "_out");
    for (const auto& p : plans())
      for (const Context* ctx : {&two, &three})
        EXPECT_TRUE(test::all_close(run_winograd(x, w, &b, 1, &p, *ctx), expected, 1e-12, 0))
            << name << " " << plan_str(p) << " threads=" << ctx->num_threads();
  }
}

// ResNet-sized layers with fan-in-scaled weights, through conv2d's own choice and plan (the Winograd path
// on all of them); the truth is a naive long-double loop, equal to PyTorch's float64 conv. The error bound
// of the float path, stated against the direct (im2col) path on the same layer: measured 4.1e-6 .. 6.3e-6
// of the largest output, 9x .. 23x im2col's (2.7e-7 .. 4.8e-7) with fovea's AVX-512 GEMM kernel, and
// 2.7e-6 .. 3.0e-6, 4x .. 6x im2col's (5e-7 .. 7e-7) with Eigen's (the products' summation order moves
// both); asserted within 1e-5 and 30x im2col's. (On the 64 -> 64 layer at 56x56 with unit-normal inputs
// it measured 5.6e-6 against 6.7e-7 with Eigen's.)
TEST(Winograd, ResNetSizedLayersMatchNaive) {
  Context two(2);
  struct Shape {
    Index n, c, h, w, o;
  };
  for (const Shape& sh : {Shape{1, 64, 28, 28, 64}, Shape{2, 96, 14, 14, 128}, Shape{4, 128, 7, 7, 64},
                          Shape{1, 32, 23, 37, 48}}) {
    const auto x = random_tensor<float>(sh.n, sh.c, sh.h, sh.w, 41);
    const auto w = random_tensor<float>(sh.o, sh.c, 3, 3, 42, 1.0 / std::sqrt(9.0 * double(sh.c)));
    const auto b = random_vector<float>(sh.o, 43);
    const auto truth = naive_conv3x3(x, w, &b, 1);
    const auto s = detail::conv2d_check({sh.n, sh.c, sh.h, sh.w}, {sh.o, sh.c, 3, 3}, sh.o, Conv2dOptions().padding(1));
    ASSERT_EQ(detail::conv2d_algorithm(s, true), detail::Conv2dAlgorithm::winograd) << "c=" << sh.c << " h=" << sh.h;
    detail::WinogradWeights<float> cache;
    Tensor<float, 4> wino(sh.n, sh.o, sh.h, sh.w);
    detail::conv2d_into(x.data(), sh.n, sh.c, sh.h, sh.w, w, b.data(), Conv2dOptions().padding(1), wino.data(), false,
                        nullptr, two, &cache);
    const detail::Conv2dPlan direct = detail::conv2d_plan(s, sizeof(float), 2);
    Tensor<float, 4> im2col(sh.n, sh.o, sh.h, sh.w);
    detail::conv2d_run(s, x.data(), w.data(), b.data(), im2col.data(), false, nullptr, two, &direct);
    const double e_wino = relative_error(wino, truth), e_direct = relative_error(im2col, truth);
    EXPECT_LE(e_wino, 1e-5) << "c=" << sh.c << " h=" << sh.h;
    EXPECT_LE(e_wino, 30 * e_direct) << "c=" << sh.c << " h=" << sh.h << " im2col " << e_direct;
    RecordProperty(detail::cat("error_c", sh.c, "_h", sh.h), detail::cat(e_wino, " (im2col ", e_direct, ")"));
  }
}

// Any zero padding, images that are not whole tiles, smaller than one tile, or give a single output; the
// last tile rows and columns are partly outside the output. double, so the check is tight.
TEST(Winograd, EveryPaddingAndSizeMatchesNaive) {
  Context two(2);
  struct Shape {
    Index n, c, h, w, o;
    Size2 pad;
  };
  for (const Shape& sh : {Shape{2, 3, 9, 13, 5, 0}, Shape{1, 4, 6, 7, 3, 2}, Shape{2, 5, 5, 11, 4, {0, 2}},
                          Shape{1, 2, 10, 6, 6, {2, 1}}, Shape{3, 3, 3, 3, 2, 0}, Shape{1, 3, 1, 2, 2, 1},
                          Shape{1, 2, 4, 5, 3, 3}, Shape{2, 6, 17, 4, 7, 1}}) {
    const auto x = random_tensor<double>(sh.n, sh.c, sh.h, sh.w, 51);
    const auto w = random_tensor<double>(sh.o, sh.c, 3, 3, 52, 0.4);
    const auto b = random_vector<double>(sh.o, 53);
    const auto truth = naive_conv3x3(x, w, &b, sh.pad);
    for (const auto& p : {wplan(1, 1), wplan(3, 2), wplan(100000, 1)})
      EXPECT_TRUE(test::all_close(run_winograd(x, w, &b, sh.pad, &p, two), truth, 1e-12, 0))
          << "n=" << sh.n << " h=" << sh.h << " w=" << sh.w << " pad=" << detail::size2_str(sh.pad) << " "
          << plan_str(p);
    // Without bias too.
    const auto plain = naive_conv3x3<double>(x, w, nullptr, sh.pad);
    EXPECT_TRUE(test::all_close(run_winograd<double>(x, w, nullptr, sh.pad, nullptr, two), plain, 1e-12, 0));
  }
}

// The epilogue: bias, residual (also aliasing the output, as an in-place block does) and ReLU, on the
// tile-splitting and the channel-splitting plans.
TEST(Winograd, FusesBiasResidualRelu) {
  Context two(2);
  const auto x = random_tensor<double>(2, 6, 11, 9, 61);
  const auto w = random_tensor<double>(10, 6, 3, 3, 62, 0.3);
  const auto b = random_vector<double>(10, 63);
  const auto res = random_tensor<double>(2, 10, 11, 9, 64);
  const Tensor<double, 4> plain = naive_conv3x3(x, w, &b, 1);
  const Tensor<double, 4> expect_relu = plain.cwiseMax(0.0);
  const Tensor<double, 4> expect_res_relu = (plain + res).cwiseMax(0.0);
  const Tensor<double, 4> expect_res = plain + res;
  for (const auto& p : {wplan(4, 1), wplan(100000, 2)}) {
    EXPECT_TRUE(test::all_close(run_winograd(x, w, &b, 1, &p, two, true), expect_relu, 1e-12, 0)) << plan_str(p);
    EXPECT_TRUE(test::all_close(run_winograd(x, w, &b, 1, &p, two, false, &res), expect_res, 1e-12, 0));
    EXPECT_TRUE(test::all_close(run_winograd(x, w, &b, 1, &p, two, true, &res), expect_res_relu, 1e-12, 0));
    // residual == out
    const auto s = detail::conv2d_check({2, 6, 11, 9}, {10, 6, 3, 3}, 10, Conv2dOptions().padding(1));
    Tensor<double, 4> out = res;
    detail::conv2d_run(s, x.data(), w.data(), b.data(), out.data(), true, out.data(), two, nullptr, nullptr, &p);
    EXPECT_TRUE(test::all_close(out, expect_res_relu, 1e-12, 0)) << "in place, " << plan_str(p);
  }
}

// A NaN in the input makes NaN of every output whose 3x3 window holds it (as PyTorch); Winograd may spread
// it further within the 4x4 tiles, but never drops it. ReLU keeps it.
TEST(Winograd, NaNInputGivesNaNWherePyTorchDoes) {
  Context one(1);
  auto x = random_tensor<float>(1, 2, 9, 9, 71);
  x(0, 1, 4, 6) = std::numeric_limits<float>::quiet_NaN();
  const auto w = random_tensor<float>(3, 2, 3, 3, 72, 0.3);
  for (bool relu : {false, true}) {
    const auto out = run_winograd<float>(x, w, nullptr, 1, nullptr, one, relu);
    for (Index o = 0; o < 3; ++o)
      for (Index y = 3; y <= 5; ++y)
        for (Index xx = 5; xx <= 7; ++xx) EXPECT_TRUE(std::isnan(out(0, o, y, xx))) << o << " " << y << " " << xx;
  }
}

// The weight transform is G g G^T per (o, c), laid out (36, O, C): checked entry by entry in long double.
TEST(Winograd, WeightTransformIsGgGt) {
  const long double G[6][3] = {{0.25L, 0, 0},
                               {-1.0L / 6, -1.0L / 6, -1.0L / 6},
                               {-1.0L / 6, 1.0L / 6, -1.0L / 6},
                               {1.0L / 24, 1.0L / 12, 1.0L / 6},
                               {1.0L / 24, -1.0L / 12, 1.0L / 6},
                               {0, 0, 1}};
  const Index O = 3, C = 70;  // C > 64: two chunks of the transform's inner loop
  const auto w = random_tensor<double>(O, C, 3, 3, 81);
  std::vector<double> u(std::size_t(36 * O * C));
  detail::winograd_transform_weight(w.data(), O, C, u.data(), Context(2));
  double worst = 0;
  for (Index o = 0; o < O; ++o)
    for (Index c = 0; c < C; ++c)
      for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 6; ++j) {
          long double v = 0;
          for (int a = 0; a < 3; ++a)
            for (int b = 0; b < 3; ++b) v += G[i][a] * (long double)w(o, c, a, b) * G[j][b];
          worst = std::max(worst, double(std::abs(v - u[std::size_t(((i * 6 + j) * O + o) * C + c)])));
        }
  EXPECT_LT(worst, 1e-15);
}

// The cache keeps one transform; the verifying one (nn::Conv2d's) notices weights edited in place.
TEST(Winograd, WeightCachesReuseAndVerify) {
  Context one(1);
  auto w = random_tensor<float>(4, 5, 3, 3, 91);
  detail::WinogradWeights<float> trusted, verified(true);
  const auto a = trusted.get(w.data(), 4, 5, one), b = trusted.get(w.data(), 4, 5, one);
  EXPECT_EQ(a.get(), b.get());  // made once
  const auto va = verified.get(w.data(), 4, 5, one), vb = verified.get(w.data(), 4, 5, one);
  EXPECT_EQ(va.get(), vb.get());  // unchanged weights: reused
  w(2, 3, 1, 1) += 1.0f;
  const auto vc = verified.get(w.data(), 4, 5, one);
  EXPECT_NE(*vc, *va);
  std::vector<float> fresh(std::size_t(36 * 4 * 5));
  detail::winograd_transform_weight(w.data(), 4, 5, fresh.data(), one);
  EXPECT_EQ(*vc, fresh);
  EXPECT_EQ(*va, *a);  // the old transform stays valid for whoever still holds it
  // A copy starts from the same transform.
  const detail::WinogradWeights<float> copy = verified;
  EXPECT_EQ(copy.get(w.data(), 4, 5, one).get(), vc.get());
}

// nn::Conv2d on a layer conv2d runs with Winograd: the module's cached transform follows in-place edits
// of `weight`, and a copied module keeps its own.
TEST(Winograd, Conv2dModuleFollowsWeightEdits) {
  Context two(2);
  Conv2d<double> conv(16, 16, 3, Conv2dOptions().padding(1));
  conv.weight = random_tensor<double>(16, 16, 3, 3, 101, 0.1);
  conv.bias = random_vector<double>(16, 102);
  const auto x = random_tensor<double>(1, 16, 16, 16, 103);
  const auto s = detail::conv2d_check({1, 16, 16, 16}, {16, 16, 3, 3}, 16, conv.options);
  ASSERT_EQ(detail::conv2d_algorithm(s, true), detail::Conv2dAlgorithm::winograd);
  EXPECT_TRUE(test::all_close(conv.forward(x, two), naive_conv3x3(x, conv.weight, &conv.bias, 1), 1e-12, 0));
  const Conv2d<double> before = conv;
  conv.weight(3, 7, 0, 2) += 0.5;  // in place, as a loader writes
  conv.weight(15, 0, 2, 2) -= 0.25;
  EXPECT_TRUE(test::all_close(conv.forward(x, two), naive_conv3x3(x, conv.weight, &conv.bias, 1), 1e-12, 0));
  EXPECT_TRUE(test::all_close(before.forward(x, two), naive_conv3x3(x, before.weight, &before.bias, 1), 1e-12, 0));
}

// Which layers conv2d runs with Winograd (the measured trade-offs are in conv2d_algorithm's comment).
TEST(Winograd, ChosenForLargeStrideOneLayersOnly) {
  using A = detail::Conv2dAlgorithm;
  auto algo = [](Index n, Index c, Index h, Index o, Index k, const Conv2dOptions& opt, bool cached) {
    return detail::conv2d_algorithm(detail::conv2d_check({n, c, h, h}, {o, c / opt.groups_, k, k}, -1, opt), cached);
  };
  const auto same = Conv2dOptions().padding(1);
  EXPECT_EQ(algo(1, 64, 56, 64, 3, same, true), A::winograd);    // resnet layer1
  EXPECT_EQ(algo(1, 64, 56, 64, 3, same, false), A::winograd);   // 196 tiles repay the transform
  EXPECT_EQ(algo(1, 256, 14, 256, 3, same, true), A::winograd);  // 16 tiles
  EXPECT_EQ(algo(1, 256, 14, 256, 3, same, false), A::im2col);   // too few to repay the transform
  EXPECT_EQ(algo(1, 512, 7, 512, 3, same, true), A::im2col);     // 4 tiles: weight-bound
  EXPECT_EQ(algo(8, 512, 7, 512, 3, same, true), A::winograd);
  EXPECT_NE(algo(1, 64, 56, 128, 3, Conv2dOptions().stride(2).padding(1), true), A::winograd);  // direct
  EXPECT_EQ(algo(1, 64, 56, 64, 3, Conv2dOptions().padding(2).dilation(2), true), A::im2col);
  EXPECT_EQ(algo(1, 64, 56, 64, 3, Conv2dOptions().padding(1).groups(2), true), A::im2col);
  EXPECT_EQ(algo(1, 64, 56, 64, 3, Conv2dOptions().padding(1).groups(64), true), A::depthwise);
  EXPECT_EQ(algo(1, 8, 56, 64, 3, same, true), A::im2col);       // too few input channels
  EXPECT_EQ(algo(1, 64, 56, 64, 1, {}, true), A::im2col);
  EXPECT_EQ(algo(16, 64, 2, 64, 3, same, true), A::im2col);      // 2x2 outputs in 4x4 tiles: mostly waste
  detail::conv2d_winograd_enabled() = false;
  EXPECT_EQ(algo(1, 64, 56, 64, 3, same, true), A::im2col);
  detail::conv2d_winograd_enabled() = true;
}

}  // namespace test_winograd

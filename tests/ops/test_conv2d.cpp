#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "common/reference.hpp"
#include "fovea/ops/conv2d.hpp"

namespace test_conv2d {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

// Mirrors CASES in tests/reference/ref_conv2d.py (shapes come from the files, options from here).
struct Case {
  const char* name;
  Conv2dOptions options;
  bool bias;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"pointwise", Conv2dOptions(), true},
      {"pointwise_stride2", Conv2dOptions().stride(2), true},
      {"k3_pad1", Conv2dOptions().padding(1), true},
      {"stem", Conv2dOptions().stride(2).padding(3), false},
      {"asymmetric", Conv2dOptions().stride({2, 1}).padding({0, 2}).dilation({2, 3}), true},
      {"groups2", Conv2dOptions().stride(2).padding(1).groups(2), true},
      {"groups2_pointwise", Conv2dOptions().groups(2), false},
      {"depthwise_mult2", Conv2dOptions().padding(1).groups(4), true},
      {"depthwise_strided", Conv2dOptions().stride(2).padding(2).dilation(2).groups(5), false},
      {"depthwise_k5", Conv2dOptions().padding(2).groups(6), true},
      {"depthwise_rowstride", Conv2dOptions().stride({2, 1}).padding(1).groups(4), true},
      {"depthwise_colstride", Conv2dOptions().stride({1, 2}).padding({1, 0}).dilation({1, 2}).groups(3), false},
      {"no_bias_s2", Conv2dOptions().stride(2), false},
      {"dilated_same", Conv2dOptions().padding(2).dilation(2), true},
      {"patch16", Conv2dOptions().stride(16), true},
      {"kernel_fills_input", Conv2dOptions().padding(1), true},
      {"many_tiles", Conv2dOptions().padding(1), true},
      {"small_spatial", Conv2dOptions().padding(1), true},
      {"small_spatial_b1", Conv2dOptions().padding(1), true},
  };
  return c;
}

template <class T>
struct Loaded {
  Tensor<T, 4> input, weight;
  Tensor<T, 1> bias;
  Tensor<double, 4> expected;
};

template <class T>
Loaded<T> load(const Case& c) {
  const std::string n = c.name;
  Loaded<T> l;
  l.input = test::load_ref<T, 4>("conv2d", n + "_input");
  l.weight = test::load_ref<T, 4>("conv2d", n + "_weight");
  if (c.bias) l.bias = test::load_ref<T, 1>("conv2d", n + "_bias");
  l.expected = test::load_ref<double, 4>("conv2d", n + "_out");
  return l;
}

template <class T>
Tensor<T, 4> run_public(const Case& c, const Loaded<T>& l, const Context& ctx) {
  return c.bias ? conv2d(l.input, l.weight, l.bias, c.options, ctx) : conv2d(l.input, l.weight, c.options, ctx);
}

// The same call through the GEMM path with a plan chosen by the test instead of the heuristic.
template <class T>
Tensor<T, 4> run_plan(const Case& c, const Loaded<T>& l, const detail::Conv2dPlan& plan, const Context& ctx) {
  const auto& d = l.input.dimensions();
  const std::array<Index, 4> in{d[0], d[1], d[2], d[3]};
  const std::array<Index, 4> w{l.weight.dimension(0), l.weight.dimension(1), l.weight.dimension(2),
                               l.weight.dimension(3)};
  const auto s = detail::conv2d_check(in, w, c.bias ? l.bias.dimension(0) : -1, c.options);
  Tensor<T, 4> out(s.N, s.O, s.OH, s.OW);
  out.setConstant(T(1e30));  // anything left unwritten shows up as a huge difference
  detail::conv2d_run(s, l.input.data(), l.weight.data(), c.bias ? l.bias.data() : nullptr, out.data(), false,
                     static_cast<const T*>(nullptr), ctx, &plan);
  return out;
}

detail::Conv2dPlan plan(Index images_per_tile, Index tiles_per_image, Index row_blocks) {
  detail::Conv2dPlan p;
  p.images_per_tile = images_per_tile;
  p.tiles_per_image = tiles_per_image;
  p.row_blocks = row_blocks;
  return p;
}

// Every way the GEMM path can cut the work: several tiles per image (the last one short), two and three
// images per tile (a short last tile when N is odd), output channels split, and the two combined.
const std::vector<detail::Conv2dPlan>& plans() {
  static const std::vector<detail::Conv2dPlan> p = {plan(1, 1, 1), plan(1, 3, 1), plan(1, 7, 1), plan(2, 1, 1),
                                                    plan(3, 1, 1), plan(1, 1, 2), plan(1, 2, 3), plan(2, 1, 2)};
  return p;
}

std::string plan_str(const detail::Conv2dPlan& p) {
  return detail::cat("plan images_per_tile=", p.images_per_tile, " tiles_per_image=", p.tiles_per_image,
                     " row_blocks=", p.row_blocks);
}

// Naive conv in long double, the truth for shapes too large to store as reference files.
template <class T>
Tensor<double, 4> naive_conv2d(const Tensor<T, 4>& x, const Tensor<T, 4>& w, const Tensor<T, 1>* b,
                               const Conv2dOptions& o) {
  const Index N = x.dimension(0), H = x.dimension(2), W = x.dimension(3);
  const Index O = w.dimension(0), Cg = w.dimension(1), kH = w.dimension(2), kW = w.dimension(3);
  const Index G = o.groups_, Og = O / G;
  const Index OH = conv_output_size(H, kH, o.stride_.h, o.padding_.h, o.dilation_.h);
  const Index OW = conv_output_size(W, kW, o.stride_.w, o.padding_.w, o.dilation_.w);
  Tensor<double, 4> out(N, O, OH, OW);
  for (Index n = 0; n < N; ++n)
    for (Index oc = 0; oc < O; ++oc)
      for (Index oy = 0; oy < OH; ++oy)
        for (Index ox = 0; ox < OW; ++ox) {
          long double s = b ? (*b)(oc) : 0;
          for (Index c = 0; c < Cg; ++c)
            for (Index i = 0; i < kH; ++i)
              for (Index j = 0; j < kW; ++j) {
                const Index iy = oy * o.stride_.h - o.padding_.h + i * o.dilation_.h;
                const Index ix = ox * o.stride_.w - o.padding_.w + j * o.dilation_.w;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                s += (long double)x(n, (oc / Og) * Cg + c, iy, ix) * w(oc, c, i, j);
              }
          out(n, oc, oy, ox) = double(s);
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

// float against the float64 truth. The inputs are the same float32 values PyTorch used, so the only
// error is float accumulation over K = C/groups * kH * kW (<= 768) products of O(1) terms: about
// sqrt(K) * 6e-8 relative to the largest output, well inside 1e-5.
TEST(Conv2d, MatchesPyTorchFloat) {
  Context one(1), two(2);
  for (const Case& c : cases()) {
    const auto l = load<float>(c);
    for (const Context* ctx : {&one, &two})
      EXPECT_TRUE(test::all_close(run_public(c, l, *ctx), l.expected, 1e-5, 0))
          << c.name << " threads=" << ctx->num_threads();
  }
}

// double: the same sums in float64 differ from PyTorch's only by summation order, ~1e-15.
TEST(Conv2d, MatchesPyTorchDouble) {
  Context one(1), two(2);
  for (const Case& c : cases()) {
    const auto l = load<double>(c);
    for (const Context* ctx : {&one, &two})
      EXPECT_TRUE(test::all_close(run_public(c, l, *ctx), l.expected, 1e-12, 0))
          << c.name << " threads=" << ctx->num_threads();
  }
}

// Every tiling of the GEMM path (depthwise cases included, which normally take the direct loop) gives
// PyTorch's result, within `tol` of the largest output.
template <class T>
void expect_every_plan_matches(double tol) {
  Context two(2), three(3);
  for (const Case& c : cases()) {
    const auto l = load<T>(c);
    for (const auto& p : plans())
      for (const Context* ctx : {&two, &three})
        EXPECT_TRUE(test::all_close(run_plan(c, l, p, *ctx), l.expected, tol, 0))
            << c.name << " " << plan_str(p) << " threads=" << ctx->num_threads();
  }
}

// double, so that an indexing slip cannot hide under float tolerance.
TEST(Conv2d, EveryPlanMatchesPyTorch) { expect_every_plan_matches<double>(1e-12); }

// float too: with fovea's GEMM kernel float patches take another path (gathered into the kernel's panels);
// tolerance as in MatchesPyTorchFloat.
TEST(Conv2d, EveryPlanMatchesPyTorchFloat) { expect_every_plan_matches<float>(1e-5); }

#ifdef FOVEA_GEMM_KERNEL
// conv_gather_patches against conv_im2col, value for value: strides 1, 2 and 3, dilation, padding, several
// images per tile, rows that start and end mid-channel, 700 columns (more than one 576-column pass), and
// both layouts gemm_serial_gathered asks for (a plain block; 48-column panels `panel` apart).
TEST(Conv2d, GatherIntoPanelsMatchesIm2col) {
  struct Shape {
    Index n, c, h, w, k, stride, pad, dil;
  };
  for (const Shape& sh : {Shape{3, 4, 9, 11, 3, 1, 1, 1}, Shape{2, 5, 30, 29, 3, 2, 1, 1},
                          Shape{2, 3, 31, 28, 5, 3, 2, 2}, Shape{4, 2, 14, 14, 1, 2, 0, 1},
                          Shape{1, 3, 60, 50, 7, 2, 3, 1}}) {
    const auto x = random_tensor<float>(sh.n, sh.c, sh.h, sh.w, 141);
    const auto opt = Conv2dOptions().stride(sh.stride).padding(sh.pad).dilation(sh.dil);
    const auto s = detail::conv2d_check({sh.n, sh.c, sh.h, sh.w}, {7, sh.c, sh.k, sh.k}, -1, opt);
    const Index K = s.K(), P = s.P(), cols = sh.n * P, HW = sh.h * sh.w;
    std::vector<float> truth(std::size_t(K * cols));  // column j: image j / P, position j % P
    for (Index n = 0; n < sh.n; ++n)
      detail::conv_im2col(s, x.data() + n * sh.c * HW, 0, P, 0, K, truth.data() + n * P, cols);
    const detail::PaddedInput padded = detail::conv_pad_input(s, x.data(), Context(2));
    const Index k0 = K / 3, k1 = K - 1, j0 = std::min<Index>(5, cols - 1), j1 = std::min<Index>(cols, 705);
    const Index kc = k1 - k0, groups = (j1 - j0 + 47) / 48;
    for (const Index panel : {Index(48), 48 * kc}) {
      const Index ld = panel == 48 ? j1 - j0 : 48;
      std::vector<float> got(std::size_t(groups * 48 * kc + ld * kc), -1e30f);
      detail::conv_gather_patches(s, padded, padded.data, 0, P, k0, k1, j0, j1, got.data(), ld, panel);
      Index bad = 0;
      for (Index k = k0; k < k1; ++k)
        for (Index j = j0; j < j1; ++j)
          bad += got[std::size_t((k - k0) * ld + (j - j0) / 48 * panel + (j - j0) % 48)] !=
                 truth[std::size_t(k * cols + j)];
      EXPECT_EQ(bad, 0) << "k=" << sh.k << " stride=" << sh.stride << " panel=" << panel;
    }
  }
}
#endif

// The direct kernel (conv2d's choice for strided stems) on every reference case it can run: groups 1,
// dilation 1, equal strides, kernels from 2 to 64 taps. Tolerances as above: it sums the same K products
// in float (in another order).
TEST(Conv2d, DirectMatchesPyTorch) {
  Context one(1), two(2), three(3);
  int ran = 0;
  for (const Case& c : cases()) {
    const auto lf = load<float>(c);
    const auto ld = load<double>(c);
    const auto& d = lf.input.dimensions();
    const auto s = detail::conv2d_check({d[0], d[1], d[2], d[3]},
                                        {lf.weight.dimension(0), lf.weight.dimension(1), lf.weight.dimension(2),
                                         lf.weight.dimension(3)},
                                        -1, c.options);
    if (!detail::conv2d_direct_applies(s)) continue;
    ++ran;
    for (const Context* ctx : {&one, &two, &three}) {
      Tensor<float, 4> of(s.N, s.O, s.OH, s.OW);
      Tensor<double, 4> od(s.N, s.O, s.OH, s.OW);
      of.setConstant(1e30f);
      od.setConstant(1e30);
      detail::conv2d_run(s, lf.input.data(), lf.weight.data(), c.bias ? lf.bias.data() : nullptr, of.data(), false,
                         static_cast<const float*>(nullptr), *ctx, nullptr, nullptr, nullptr, true);
      detail::conv2d_run(s, ld.input.data(), ld.weight.data(), c.bias ? ld.bias.data() : nullptr, od.data(), false,
                         static_cast<const double*>(nullptr), *ctx, nullptr, nullptr, nullptr, true);
      EXPECT_TRUE(test::all_close(of, lf.expected, 1e-5, 0)) << c.name << " threads=" << ctx->num_threads();
      EXPECT_TRUE(test::all_close(od, ld.expected, 1e-12, 0)) << c.name << " threads=" << ctx->num_threads();
    }
  }
  // k3_pad1, stem, no_bias_s2, kernel_fills_input, many_tiles, small_spatial, small_spatial_b1
  EXPECT_EQ(ran, 7);
}

// The direct kernel's epilogue: bias, residual (also aliasing the output) and ReLU; stride 2 and 3, a
// batch whose positions run across images, and an output-channel count that is not a multiple of 8.
TEST(Conv2d, DirectFusesBiasResidualRelu) {
  Context two(2);
  struct Shape {
    Index n, c, h, w, o, k, stride, pad;
  };
  for (const Shape& sh : {Shape{3, 5, 13, 11, 13, 3, 2, 1}, Shape{2, 3, 23, 20, 8, 7, 2, 3},
                          Shape{1, 4, 17, 19, 9, 5, 3, 2}}) {
    const auto x = random_tensor<double>(sh.n, sh.c, sh.h, sh.w, 131);
    const auto w = random_tensor<double>(sh.o, sh.c, sh.k, sh.k, 132, 0.2);
    const auto b = random_vector<double>(sh.o, 133);
    const auto opt = Conv2dOptions().stride(sh.stride).padding(sh.pad);
    const auto s = detail::conv2d_check({sh.n, sh.c, sh.h, sh.w}, {sh.o, sh.c, sh.k, sh.k}, sh.o, opt);
    const Tensor<double, 4> plain = naive_conv2d(x, w, &b, opt);
    const auto res = random_tensor<double>(sh.n, sh.o, s.OH, s.OW, 134);
    const Tensor<double, 4> expect_res_relu = (plain + res).cwiseMax(0.0);
    const Tensor<double, 4> expect_relu = plain.cwiseMax(0.0);
    Tensor<double, 4> out(sh.n, sh.o, s.OH, s.OW);
    auto run = [&](bool relu, const double* residual) {
      detail::conv2d_run(s, x.data(), w.data(), b.data(), out.data(), relu, residual, two, nullptr, nullptr, nullptr,
                         true);
    };
    run(false, nullptr);
    EXPECT_TRUE(test::all_close(out, plain, 1e-12, 0)) << "k=" << sh.k;
    run(true, nullptr);
    EXPECT_TRUE(test::all_close(out, expect_relu, 1e-12, 0)) << "k=" << sh.k;
    run(true, res.data());
    EXPECT_TRUE(test::all_close(out, expect_res_relu, 1e-12, 0)) << "k=" << sh.k;
    out = res;
    run(true, out.data());
    EXPECT_TRUE(test::all_close(out, expect_res_relu, 1e-12, 0)) << "in place, k=" << sh.k;
  }
}

// Which convs conv2d runs directly: strided stems and stride-2 3x3 convs whose weights are small, unless
// fovea's float GEMM kernel is built in, which gathers their patches into its panels faster.
TEST(Conv2d, ChoosesDirectForSmallStridedConvs) {
  using A = detail::Conv2dAlgorithm;
  auto algo = [](Index n, Index c, Index h, Index o, Index k, Index stride, Index pad, std::size_t elem) {
    const auto opt = Conv2dOptions().stride(stride).padding(pad);
    return detail::conv2d_algorithm(detail::conv2d_check({n, c, h, h}, {o, c, k, k}, -1, opt), true, elem);
  };
#ifdef FOVEA_CONV2D_DIRECT
  const A direct = A::direct;
#else
  const A direct = A::im2col;
#endif
#ifdef FOVEA_GEMM_KERNEL
  const A direct_float = A::im2col;
#else
  const A direct_float = direct;
#endif
  EXPECT_EQ(algo(1, 3, 224, 64, 7, 2, 3, 4), direct_float);     // ResNet stem
  EXPECT_EQ(algo(8, 3, 224, 64, 7, 2, 3, 8), direct);
  EXPECT_EQ(algo(1, 64, 56, 128, 3, 2, 1, 4), direct_float);    // resnet18 layer2.0.conv1
  EXPECT_EQ(algo(1, 64, 56, 128, 3, 2, 1, 8), direct);
  EXPECT_EQ(algo(1, 128, 56, 128, 3, 2, 1, 4), direct_float);   // resnet50 layer2.0.conv2
  EXPECT_EQ(algo(1, 128, 56, 128, 3, 2, 1, 8), A::im2col);  // 1.2 MB of double weights, 784 positions
  EXPECT_EQ(algo(1, 128, 28, 256, 3, 2, 1, 4), A::im2col);  // 1.2 MB of weights, even at 196 positions
  EXPECT_EQ(algo(8, 128, 28, 256, 3, 2, 1, 4), A::im2col);
  EXPECT_EQ(algo(1, 512, 14, 512, 3, 2, 1, 4), A::im2col);
  EXPECT_EQ(algo(1, 64, 56, 128, 1, 2, 0, 4), A::im2col);   // 1x1 downsample: a plain product
  EXPECT_EQ(algo(1, 64, 4, 64, 3, 2, 1, 4), A::im2col);     // 2x2 outputs: mostly dropped positions
  EXPECT_EQ(algo(1, 3, 224, 768, 16, 16, 0, 4), A::im2col); // 256 taps
}

// A ResNet-sized layer takes the heuristic's real tiling (several L2-sized tiles per image), which the
// small reference files do not reach; a naive loop is the truth. Tolerance as in MatchesPyTorchFloat.
TEST(Conv2d, ResNetSizedLayerMatchesNaive) {
  Context two(2);
  struct Shape {
    Index n, c, h, o, k, stride, pad;
  };
  for (const Shape& sh : {Shape{2, 32, 30, 40, 3, 1, 1}, Shape{1, 3, 61, 16, 7, 2, 3}, Shape{3, 64, 9, 48, 1, 1, 0},
                          Shape{2, 40, 16, 72, 3, 2, 1}}) {
    const auto x = random_tensor<float>(sh.n, sh.c, sh.h, sh.h + 1, 11);
    const auto w = random_tensor<float>(sh.o, sh.c, sh.k, sh.k, 12, 1.0 / std::sqrt(double(sh.c * sh.k * sh.k)));
    const auto b = random_vector<float>(sh.o, 13);
    const auto opt = Conv2dOptions().stride(sh.stride).padding(sh.pad);
    EXPECT_TRUE(test::all_close(conv2d(x, w, b, opt, two), naive_conv2d(x, w, &b, opt), 1e-5, 0))
        << "n=" << sh.n << " c=" << sh.c << " h=" << sh.h << " o=" << sh.o << " k=" << sh.k;
  }
}

// 1 and 2 threads cut the work differently (tile sizes follow the thread count), so sums may round
// differently but must agree to float accuracy. Includes the depthwise loop and a batch of small images.
TEST(Conv2d, OneAndTwoThreadsAgree) {
  Context one(1), two(2);
  struct Shape {
    Index n, c, h, o, k, pad, groups;
  };
  for (const Shape& sh : {Shape{1, 24, 40, 32, 3, 1, 1}, Shape{5, 48, 7, 64, 3, 1, 1}, Shape{2, 16, 33, 16, 3, 1, 16},
                          Shape{1, 64, 14, 96, 1, 0, 1}}) {
    const auto x = random_tensor<float>(sh.n, sh.c, sh.h, sh.h, 21);
    const auto w = random_tensor<float>(sh.o, sh.c / sh.groups, sh.k, sh.k, 22, 0.2);
    const auto b = random_vector<float>(sh.o, 23);
    const auto opt = Conv2dOptions().padding(sh.pad).groups(sh.groups);
    const Tensor<float, 4> a = conv2d(x, w, b, opt, one), c = conv2d(x, w, b, opt, two);
    EXPECT_TRUE(test::all_close(c, a, 1e-5, 0)) << "n=" << sh.n << " c=" << sh.c << " groups=" << sh.groups;
  }
}

// conv2d_into's fused epilogue equals conv2d followed by + residual and ReLU, for the GEMM path (tiles
// within an image, images batched, channels split) and the depthwise loop; residual may be out itself.
TEST(Conv2d, IntoFusesBiasResidualRelu) {
  Context two(2);
  struct Shape {
    Index n, c, h, o, groups;
  };
  for (const Shape& sh :
       {Shape{2, 8, 19, 12, 1}, Shape{4, 16, 5, 24, 1}, Shape{1, 16, 4, 32, 1}, Shape{3, 6, 9, 12, 6}}) {
    const auto x = random_tensor<double>(sh.n, sh.c, sh.h, sh.h, 31);
    const auto w = random_tensor<double>(sh.o, sh.c / sh.groups, 3, 3, 32, 0.3);
    const auto b = random_vector<double>(sh.o, 33);
    const auto opt = Conv2dOptions().padding(1).groups(sh.groups);
    const Tensor<double, 4> plain = conv2d(x, w, b, opt, two);
    const auto res = random_tensor<double>(sh.n, sh.o, sh.h, sh.h, 34);
    Tensor<double, 4> expect_relu = plain.cwiseMax(0.0);
    Tensor<double, 4> expect_res_relu = (plain + res).cwiseMax(0.0);
    Tensor<double, 4> out(sh.n, sh.o, sh.h, sh.h);
    for (bool relu : {false, true}) {
      detail::conv2d_into(x.data(), sh.n, sh.c, sh.h, sh.h, w, b.data(), opt, out.data(), relu, nullptr, two);
      EXPECT_TRUE(test::all_close(out, relu ? expect_relu : plain, 1e-12, 0)) << "relu=" << relu << " o=" << sh.o;
    }
    detail::conv2d_into(x.data(), sh.n, sh.c, sh.h, sh.h, w, b.data(), opt, out.data(), true, res.data(), two);
    EXPECT_TRUE(test::all_close(out, expect_res_relu, 1e-12, 0)) << "residual o=" << sh.o;
    out = res;  // residual aliasing the output, as an in-place ResNet block does
    detail::conv2d_into(x.data(), sh.n, sh.c, sh.h, sh.h, w, b.data(), opt, out.data(), true, out.data(), two);
    EXPECT_TRUE(test::all_close(out, expect_res_relu, 1e-12, 0)) << "residual == out, o=" << sh.o;
  }
}

TEST(Conv2d, ReluKeepsNaN) {
  Tensor<float, 4> x(1, 1, 2, 2), w(1, 1, 1, 1);
  x.setValues({{{{1.f, -2.f}, {std::nanf(""), 3.f}}}});
  w.setConstant(1.f);
  Tensor<float, 4> out(1, 1, 2, 2);
  detail::conv2d_into(x.data(), 1, 1, 2, 2, w, static_cast<const float*>(nullptr), Conv2dOptions(), out.data(), true,
                      static_cast<const float*>(nullptr), default_context());
  EXPECT_EQ(out(0, 0, 0, 0), 1.f);
  EXPECT_EQ(out(0, 0, 0, 1), 0.f);
  EXPECT_TRUE(std::isnan(out(0, 0, 1, 0)));
  EXPECT_EQ(out(0, 0, 1, 1), 3.f);
}

TEST(Conv2d, OutputSize) {
  EXPECT_EQ(conv_output_size(224, 7, 2, 3, 1), 112);  // ResNet stem
  EXPECT_EQ(conv_output_size(224, 16, 16, 0, 1), 14);  // ViT-B/16 patches
  EXPECT_EQ(conv_output_size(56, 1, 2, 0, 1), 28);     // downsample
  EXPECT_EQ(conv_output_size(13, 3, 2, 0, 2), 5);      // (13 - 5) // 2 + 1
  EXPECT_EQ(conv_output_size(8, 9, 1, 0, 1), 0);       // kernel one larger than the input
  EXPECT_EQ(conv_output_size(1, 4, 2, 0, 1), -1);      // Python's floor: (1 - 3 - 1) // 2 + 1
  EXPECT_TRUE(test::throws_with<ShapeError>([] { conv_output_size(8, 3, 0, 0, 1); }, {"conv_output_size", "stride"}));
}

TEST(Conv2d, OptionsChain) {
  const auto o = Conv2dOptions().stride({2, 1}).padding(3).dilation({1, 2}).groups(4);
  EXPECT_EQ(o.stride_, Size2(2, 1));
  EXPECT_EQ(o.padding_, Size2(3, 3));
  EXPECT_EQ(o.dilation_, Size2(1, 2));
  EXPECT_EQ(o.groups_, 4);
  const Conv2dOptions d;
  EXPECT_EQ(d.stride_, Size2(1, 1));
  EXPECT_EQ(d.padding_, Size2(0, 0));
  EXPECT_EQ(d.dilation_, Size2(1, 1));
  EXPECT_EQ(d.groups_, 1);
}

TEST(Conv2d, BadInputThrowsShapeError) {
  auto x = [](Index n, Index c, Index h, Index w) {
    Tensor<float, 4> t(n, c, h, w);
    t.setZero();
    return t;
  };
  auto b = [](Index n) {
    Tensor<float, 1> t(n);
    t.setZero();
    return t;
  };
  using O = Conv2dOptions;
  // The message style every op follows (DESIGN.md), word for word.
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { conv2d(x(2, 3, 224, 224), x(768, 4, 16, 16), O().stride(16)); },
      {"conv2d: expected weight.size(1) == input channels / groups (3), but got 4; input (2, 3, 224, 224), weight "
       "(768, 4, 16, 16)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(0, 3, 8, 8), x(4, 3, 3, 3)); },
                                            {"conv2d: expected every input size >= 1", "input (0, 3, 8, 8)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 3, 8, 0), x(4, 3, 3, 3)); },
                                            {"conv2d:", "input size", "input (1, 3, 8, 0)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 3, 8, 8), x(4, 3, 0, 3)); },
                                            {"conv2d: expected every weight size >= 1", "weight (4, 3, 0, 3)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), O().stride({1, 0})); },
                                            {"conv2d: expected stride >= 1, but got (1, 0)", "input (1, 3, 8, 8)",
                                             "weight (4, 3, 3, 3)", "stride (1, 0)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), O().stride(-2)); },
                                            {"conv2d: expected stride >= 1, but got (-2, -2)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), O().padding({-1, 0})); },
                                            {"conv2d: expected padding >= 0, but got (-1, 0)", "weight (4, 3, 3, 3)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), O().dilation(0)); },
                                            {"conv2d: expected dilation >= 1, but got (0, 0)", "input (1, 3, 8, 8)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), O().groups(0)); },
                                            {"conv2d: expected groups >= 1, but got 0", "weight (4, 3, 3, 3)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 4, 8, 8), x(6, 2, 3, 3), O().groups(3)); },
                                            {"conv2d: expected input channels (4) to be divisible by groups (3)",
                                             "input (1, 4, 8, 8), weight (6, 2, 3, 3)", "groups 3"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 4, 8, 8), x(3, 2, 3, 3), O().groups(2)); },
                                            {"conv2d: expected weight.size(0) (output channels, 3) to be divisible by "
                                             "groups (2)",
                                             "weight (3, 2, 3, 3)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { conv2d(x(1, 4, 8, 8), x(4, 4, 3, 3), O().groups(2)); },
      {"conv2d: expected weight.size(1) == input channels / groups (2), but got 4", "groups 2"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 4, 8, 8), x(4, 2, 3, 3), b(3), O().groups(2)); },
                                            {"conv2d: expected bias.size(0) == weight.size(0) (4), but got 3",
                                             "input (1, 4, 8, 8), weight (4, 2, 3, 3), bias (3)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 3, 8, 8), x(4, 3, 9, 3)); },
                                            {"conv2d: expected the dilated kernel (9, 3) to fit in the padded input "
                                             "(8, 8), but the output size would be (0, 6)",
                                             "input (1, 3, 8, 8), weight (4, 3, 9, 3)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv2d(x(1, 3, 8, 8), x(4, 3, 3, 3), O().dilation(4)); },
                                            {"conv2d: expected the dilated kernel (9, 9) to fit", "dilation (4, 4)"}));
  // The pointer entry checks what it can see the same way, before touching memory.
  const auto w = x(4, 3, 3, 3);
  std::vector<float> in(3 * 8 * 8), out(4 * 6 * 6);
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::conv2d_into(in.data(), 1, 2, 8, 8, w, nullptr, O(), out.data(), false, nullptr); },
      {"conv2d: expected weight.size(1) == input channels / groups (2), but got 3", "input (1, 2, 8, 8)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { detail::conv2d_into(in.data(), -1, 3, 8, 8, w, nullptr, O(), out.data(), false, nullptr); },
      {"conv2d: expected every input size >= 1", "input (-1, 3, 8, 8)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] {
        detail::conv2d_into<float>(nullptr, 1, 3, 8, 8, w, nullptr, O(), out.data(), false, nullptr, default_context());
      },
      {"conv2d: expected non-null input and output pointers", "input (1, 3, 8, 8)"}));
}

}  // namespace test_conv2d

// l2_normalize and l2_normalize_backward against torch.nn.functional.normalize and its autograd.
#include <gtest/gtest.h>

#include <cmath>

#include "common/reference.hpp"
#include "fovea/loss/normalize.hpp"

namespace test_l2_normalize {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

// Rows include a zero row, rows below eps and a row of size 1e6, so both branches of max(|x|, eps) are taken.
// float: a few 2^-24 relative per element (the norm's rounding); double: 2^-53 likewise.
template <class T>
void check_normalize(const std::string& name, T eps, double rtol) {
  const auto x = test::load_ref<T, 2>("loss", name + "_x");
  const auto g = test::load_ref<T, 2>("loss", name + "_grad_y");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    SCOPED_TRACE(name + " threads " + std::to_string(threads));
    EXPECT_TRUE(test::all_close(l2_normalize(x, eps, ctx), test::load_ref<double, 2>("loss", name + "_y"), rtol, 0));
    // grad_x spans 1e-6 (the row of size 1e6) to 1e12 (rows divided by eps = 1e-12): compare row by row.
    const auto dx = l2_normalize_backward(g, x, eps, ctx);
    const auto expect = test::load_ref<double, 2>("loss", name + "_grad_x");
    for (Index i = 0; i < x.dimension(0); ++i) {
      const Tensor<double, 2> a = dx.template cast<double>().slice(std::array<Index, 2>{i, 0},
                                                                 std::array<Index, 2>{1, x.dimension(1)});
      const Tensor<double, 2> e = expect.slice(std::array<Index, 2>{i, 0}, std::array<Index, 2>{1, x.dimension(1)});
      EXPECT_TRUE(test::all_close(a, e, rtol, 0)) << "row " << i;
    }
  }
}

TEST(L2Normalize, MatchesPyTorchForwardAndBackward) {
  check_normalize<float>("normalize_default", 1e-12f, 1e-6);
  check_normalize<double>("normalize_default", 1e-12, 1e-14);
  check_normalize<float>("normalize_eps", 0.5f, 1e-6);
  check_normalize<double>("normalize_eps", 0.5, 1e-14);
}

// Rows of size 1e30 and 1e-30 in float: the squares over- and underflow, the normalised row must not.
TEST(L2Normalize, HugeAndTinyRowsStayFinite) {
  Tensor<float, 2> x(2, 3);
  x.setValues({{3e30f, 4e30f, 0.f}, {3e-30f, 0.f, 4e-30f}});
  const auto y = l2_normalize(x, 1e-40f);
  Tensor<double, 2> expect(2, 3);
  expect.setValues({{0.6, 0.8, 0}, {0.6, 0, 0.8}});
  EXPECT_TRUE(test::all_close(y, expect, 1e-6, 0));
  Tensor<float, 2> g(2, 3);
  g.setValues({{1.f, 0.f, 0.f}, {0.f, 0.f, 1.f}});
  // dx = (g - y (y . g)) / |x|: row 0 (0.64, -0.48, 0) / 5e30, row 1 (-0.48, 0, 0.36) / 5e-30.
  const auto dx = l2_normalize_backward(g, x, 1e-40f);
  EXPECT_NEAR(dx(0, 0), 0.64 / 5e30, 1e-6 * 0.64 / 5e30);
  EXPECT_NEAR(dx(0, 1), -0.48 / 5e30, 1e-6 * 0.48 / 5e30);
  EXPECT_NEAR(dx(1, 0), -0.48 / 5e-30, 1e-6 * 0.48 / 5e-30);
  EXPECT_NEAR(dx(1, 2), 0.36 / 5e-30, 1e-6 * 0.36 / 5e-30);
}

TEST(L2Normalize, RejectsBadArguments) {
  Tensor<float, 2> x(3, 4), g(3, 5);
  x.setConstant(1.f);
  g.setConstant(1.f);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { l2_normalize(x, -1.f); }, {"l2_normalize", "eps >= 0", "-1", "input (3, 4)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { l2_normalize_backward(g, x); },
                                            {"l2_normalize_backward", "grad_output (3, 5), input (3, 4)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { l2_normalize_backward(x, x, NAN); }, {"finite eps"}));
}

}  // namespace test_l2_normalize

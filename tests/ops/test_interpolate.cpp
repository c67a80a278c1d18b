// interpolate and interpolate_pos_embed against F.interpolate computed by PyTorch in float64
// (ref_interpolate.py), plus the checks.
#include <gtest/gtest.h>

#include <string>

#include "common/reference.hpp"
#include "fovea/ops/interpolate.hpp"

namespace test_interpolate {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const char* kFamily = "interpolate";

// Relative to max|expected|. Each output is a sum of at most 16 (bicubic) or 4 (bilinear) weighted inputs
// with weights rounded to T once: float measures up to 2e-7 (a few ulp), so 2e-6; double a few 1e-16, so
// 1e-14. The separable order of summation (W first, then H) differs from PyTorch's 2-D loop only in rounding.
template <class T>
double rtol() {
  return std::is_same_v<T, float> ? 2e-6 : 1e-14;
}

template <class T>
void check_case(const std::string& name, std::array<Index, 2> size) {
  const auto x = test::load_ref<T, 4>(kFamily, name + "_x");
  for (const char* mode : {"bicubic", "bilinear"})
    for (bool ac : {false, true}) {
      SCOPED_TRACE(name + " " + mode + (ac ? " align_corners" : "") + (std::is_same_v<T, float> ? " float" : " double"));
      const auto expect = test::load_ref<double, 4>(kFamily, name + "_" + mode + (ac ? "_ac" : "_noac"));
      for (int threads : {1, 2}) {
        Context ctx(threads);
        EXPECT_TRUE(test::all_close(interpolate(x, size, mode, ac, ctx), expect, rtol<T>(), 0)) << threads << " threads";
      }
    }
}

template <class T>
void check_pos(const std::string& name, Index prefix, Size2 old_grid, Size2 new_grid, const char* mode) {
  SCOPED_TRACE(name + (std::is_same_v<T, float> ? " float" : " double"));
  const auto pos = test::load_ref<T, 2>(kFamily, name + "_pos");
  const auto expect = test::load_ref<double, 2>(kFamily, name + "_out");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    const auto out = interpolate_pos_embed(pos, prefix, old_grid, new_grid, mode, false, ctx);
    EXPECT_TRUE(test::all_close(out, expect, rtol<T>(), 0)) << threads << " threads";
    // Prefix rows are copied, not interpolated.
    for (Index i = 0; i < prefix * pos.dimension(1); ++i) ASSERT_EQ(out.data()[i], pos.data()[i]);
  }
}

TEST(Interpolate, MatchesPyTorch) {
  const std::pair<const char*, std::array<Index, 2>> cases[] = {
      {"up", {9, 12}}, {"down", {6, 4}}, {"mixed", {6, 10}}, {"to_one", {1, 3}}, {"same", {4, 3}}};
  for (const auto& [name, size] : cases) {
    check_case<float>(name, size);
    check_case<double>(name, size);
  }
}

// Same size, align_corners=False: both modes are the identity, exactly.
TEST(Interpolate, SameSizeIsIdentity) {
  const auto x = test::load_ref<float, 4>(kFamily, "up_x");
  for (const char* mode : {"bicubic", "bilinear"})
    EXPECT_TRUE(test::all_close(interpolate(x, {5, 7}, mode), x, 0, 0)) << mode;
}

TEST(Interpolate, PosEmbedMatchesPyTorch) {
  for (bool f : {true, false}) {
    auto run = [&](auto tag) {
      using T = decltype(tag);
      check_pos<T>("pos_cls_bicubic", 1, {4, 6}, {7, 5}, "bicubic");
      check_pos<T>("pos_cls_bilinear", 1, {4, 6}, {7, 5}, "bilinear");
      check_pos<T>("pos_noprefix_down", 0, 5, 3, "bicubic");
      check_pos<T>("pos_reg_vit", 2, 14, 16, "bicubic");
    };
    if (f) run(float()); else run(double());
  }
}

TEST(Interpolate, RejectsBadArguments) {
  using test::throws_with;
  Tensor<float, 4> x(2, 3, 5, 7);
  x.setZero();
  EXPECT_TRUE(throws_with<ShapeError>([&] { interpolate(x, {4, 4}, "nearest"); },
                                      {"interpolate: expected mode 'bicubic' or 'bilinear', but got 'nearest'",
                                       "input (2, 3, 5, 7), size (4, 4)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { interpolate(x, {0, 4}, "bicubic"); },
                                      {"interpolate: expected an output size >= 1 on both sides, but got (0, 4)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { interpolate(Tensor<float, 4>(2, 0, 5, 7), {4, 4}, "bilinear"); },
                                      {"interpolate: expected a non-empty input, but got a zero dimension",
                                       "input (2, 0, 5, 7)"}));
  Tensor<float, 2> pos(1 + 4 * 6, 8);
  pos.setZero();
  EXPECT_TRUE(throws_with<ShapeError>(
      [&] { interpolate_pos_embed(pos, 1, {5, 5}, {7, 7}); },
      {"interpolate_pos_embed: expected pos_embed.size(0) == num_prefix_tokens + old_grid h * w (1 + 5 * 5 = 26), "
       "but got 25",
       "pos_embed (25, 8), num_prefix_tokens 1, old_grid (5, 5), new_grid (7, 7)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { interpolate_pos_embed(pos, 1, {4, 6}, {0, 7}); },
                                      {"interpolate_pos_embed: expected grid sides >= 1, but got old_grid (4, 6) and "
                                       "new_grid (0, 7)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { interpolate_pos_embed(pos, -1, {4, 6}, {7, 7}); },
                                      {"interpolate_pos_embed: expected num_prefix_tokens >= 0, but got -1"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { interpolate_pos_embed(pos, 1, {4, 6}, {7, 7}, "area"); },
                                      {"interpolate_pos_embed: expected mode 'bicubic' or 'bilinear', but got 'area'"}));
}

}  // namespace test_interpolate

// flatten is a pure re-indexing, so it is checked against index arithmetic rather than PyTorch files: in a
// row-major tensor, merging dims keeps every element at the same flat position (what torch.flatten does).
#include <gtest/gtest.h>

#include "common/reference.hpp"
#include "fovea/ops/flatten.hpp"

namespace test_flatten {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

template <class T>
Tensor<T, 4> iota4(Index a, Index b, Index c, Index d) {
  Tensor<T, 4> x(a, b, c, d);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = T(i) * T(0.5) - T(7);
  return x;
}

template <class T>
void check_flatten() {
  const auto x = iota4<T>(2, 3, 4, 5);
  // flatten<2>(x) is flatten(x, 1, -1): (N, C*H*W), element (n, (c*4 + h)*5 + w).
  const auto y = flatten<2>(x);
  ASSERT_EQ(y.dimension(0), 2);
  ASSERT_EQ(y.dimension(1), 60);
  for (Index n = 0; n < 2; ++n)
    for (Index c = 0; c < 3; ++c)
      for (Index h = 0; h < 4; ++h)
        for (Index w = 0; w < 5; ++w) ASSERT_EQ(y(n, (c * 4 + h) * 5 + w), x(n, c, h, w));
  const auto mid = flatten<3>(x, 1, 2);  // (2, 12, 5)
  ASSERT_EQ(mid.dimension(0), 2);
  ASSERT_EQ(mid.dimension(1), 12);
  ASSERT_EQ(mid.dimension(2), 5);
  for (Index n = 0; n < 2; ++n)
    for (Index c = 0; c < 3; ++c)
      for (Index h = 0; h < 4; ++h)
        for (Index w = 0; w < 5; ++w) ASSERT_EQ(mid(n, c * 4 + h, w), x(n, c, h, w));
  // Negative dims count from the end; these name the same run as (1, 2).
  const auto neg = flatten<3>(x, -3, -2);
  EXPECT_EQ(neg.dimensions(), mid.dimensions());
  EXPECT_TRUE(test::all_close(neg, mid, 0, 0));
  const auto all = flatten<1>(x, 0, -1);
  ASSERT_EQ(all.dimension(0), 120);
  for (Index i = 0; i < 120; ++i) ASSERT_EQ(all(i), x.data()[i]);
  // A run of one dim changes nothing.
  const auto same = flatten<4>(x, 2, 2);
  EXPECT_EQ(same.dimensions(), x.dimensions());
  EXPECT_TRUE(test::all_close(same, x, 0, 0));
  const auto lead = flatten<3>(x, 0, 1);  // (6, 4, 5)
  EXPECT_EQ(lead.dimension(0), 6);
  EXPECT_EQ(lead(5, 3, 4), x(1, 2, 3, 4));
}

TEST(Flatten, MergesRowMajorRuns) {
  check_flatten<float>();
  check_flatten<double>();
}

TEST(Flatten, OddEmptyAndScalarShapes) {
  Tensor<double, 3> x(3, 1, 7);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = double(i);
  const auto y = flatten<2>(x);
  EXPECT_EQ(y.dimension(0), 3);
  EXPECT_EQ(y.dimension(1), 7);
  EXPECT_EQ(y(2, 6), 20.0);
  Tensor<float, 1> v(5);
  v.setConstant(2.f);
  EXPECT_EQ(flatten<1>(v, 0, 0).dimension(0), 5);
  EXPECT_EQ(flatten<1>(v, -1, -1).dimension(0), 5);
  Tensor<float, 3> e(2, 0, 3);
  const auto ye = flatten<2>(e);
  EXPECT_EQ(ye.dimension(0), 2);
  EXPECT_EQ(ye.dimension(1), 0);
  // torch.flatten of a 0-d tensor is 1-d with one element.
  Tensor<float, 0> s;
  s() = 4.f;
  const auto ys = flatten<1>(s, 0, -1);
  EXPECT_EQ(ys.dimension(0), 1);
  EXPECT_EQ(ys(0), 4.f);
}

TEST(Flatten, RejectsBadRangesAndRanks) {
  Tensor<float, 4> x(2, 3, 4, 5);
  x.setZero();
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { flatten<1>(x, 4, -1); },
      {"flatten:", "expected start_dim in [-4, 3]", "rank-4", "got 4", "(2, 3, 4, 5)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { flatten<1>(x, -5, -1); },
                                            {"flatten:", "start_dim in [-4, 3]", "got -5", "(2, 3, 4, 5)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { flatten<2>(x, 1, 4); },
                                            {"flatten:", "end_dim in [-4, 3]", "got 4", "(2, 3, 4, 5)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { flatten<2>(x, 0, -6); },
                                            {"flatten:", "end_dim in [-4, 3]", "got -6", "(2, 3, 4, 5)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { flatten<4>(x, 2, 1); },
      {"flatten:", "start_dim <= end_dim", "start_dim 2 (dim 2)", "end_dim 1 (dim 1)", "(2, 3, 4, 5)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { flatten<4>(x, -1, 1); },
                                            {"flatten:", "start_dim -1 (dim 3)", "end_dim 1 (dim 1)"}));
  // The result rank must be what the range gives: dims 1..3 of rank 4 make rank 2.
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { flatten<3>(x); }, {"flatten:", "dims 1..3", "rank-4", "gives rank 2", "RO is 3", "(2, 3, 4, 5)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { flatten<1>(x, 1, 2); }, {"gives rank 3", "RO is 1"}));
  Tensor<float, 0> s;
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { flatten<1>(s); }, {"flatten:", "start_dim in [-1, 0]", "got 1"}));
}

}  // namespace test_flatten

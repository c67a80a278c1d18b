// clip_zero_shot (softmax over classes) and siglip_zero_shot (sigmoid with bias) against PyTorch.
#include <gtest/gtest.h>

#include "common/reference.hpp"
#include "fovea/loss/zero_shot.hpp"

namespace test_zero_shot {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

// float: logits at scale 100 carry ~1e-5 of rounding, and the probabilities inherit it relative to their
// largest value; double: 2^-53 likewise.
template <class T>
void check_zero_shot(const std::string& name, T scale, T bias, double rtol) {
  const auto image = test::load_ref<T, 2>("loss", name + "_image");
  const auto classes = test::load_ref<T, 2>("loss", name + "_classes");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    SCOPED_TRACE(name + " threads " + std::to_string(threads));
    EXPECT_TRUE(test::all_close(clip_zero_shot(image, classes, scale, ctx),
                                test::load_ref<double, 2>("loss", name + "_clip"), rtol, 0));
    EXPECT_TRUE(test::all_close(siglip_zero_shot(image, classes, scale, bias, ctx),
                                test::load_ref<double, 2>("loss", name + "_siglip"), rtol, 0));
  }
}

TEST(ZeroShot, MatchesPyTorchSoftmaxAndSigmoid) {
  check_zero_shot<float>("zero_shot_5x7", 100.f, -5.f, 2e-5);
  check_zero_shot<double>("zero_shot_5x7", 100.0, -5.0, 1e-12);
  check_zero_shot<float>("zero_shot_3x1", 10.f, 2.f, 1e-6);  // one class: softmax gives exactly 1
  check_zero_shot<double>("zero_shot_3x1", 10.0, 2.0, 1e-14);
}

// Scale 1000 and bias -1000: the logits' exp overflows, the probabilities do not.
TEST(ZeroShot, StableAtExtremeLogits) {
  Tensor<float, 2> image(1, 2), classes(3, 2);
  image.setValues({{1.f, 0.f}});
  classes.setValues({{1.f, 0.f}, {0.f, 1.f}, {-1.f, 0.f}});
  const auto p = clip_zero_shot(image, classes, 1000.f);
  EXPECT_EQ(p(0, 0), 1.f);
  EXPECT_EQ(p(0, 2), 0.f);
  const auto q = siglip_zero_shot(image, classes, 1000.f, -1000.f);
  EXPECT_EQ(q(0, 0), 0.5f);
  EXPECT_EQ(q(0, 1), 0.f);
  EXPECT_TRUE(std::isfinite(q(0, 2)));
}

TEST(ZeroShot, RejectsBadArguments) {
  Tensor<float, 2> image(2, 4), classes(3, 5), none(0, 4);
  image.setConstant(0.5f);
  classes.setConstant(0.5f);
  using test::throws_with;
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_zero_shot(image, classes, 10.f); },
                                      {"clip_zero_shot", "image.size(1) == classes.size(1)", "4 and 5",
                                       "image (2, 4), classes (3, 5)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_zero_shot(image, none, 10.f, 0.f); },
                                      {"siglip_zero_shot", "at least one class", "classes (0, 4)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_zero_shot(image, image, 0.f); }, {"scale > 0"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { siglip_zero_shot(image, image, 1.f, NAN); }, {"finite bias"}));
  auto bad = image;
  bad(1, 2) = INFINITY;
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_zero_shot(bad, image, 1.f); }, {"image row 1", "column 2"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { clip_zero_shot(image, bad, 1.f); }, {"classes row 1"}));
}

}  // namespace test_zero_shot

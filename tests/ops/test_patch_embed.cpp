// patch_embed and patchify against F.conv2d(stride = patch).flatten(2).transpose(1, 2) and unfold computed by
// PyTorch in float64 (ref_patch_embed.py); the proof that patch_embed is a linear map of flattened patches;
// the sequence overload (prefix tokens, position embeddings); and the checks.
#include <gtest/gtest.h>

#include <string>

#include "common/reference.hpp"
#include "fovea/ops/conv2d.hpp"
#include "fovea/ops/linear.hpp"
#include "fovea/ops/patch_embed.hpp"

namespace test_patch_embed {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const char* kFamily = "patch_embed";

// Relative to max|expected|. Float: every output is a dot product of K = C * P * P <= 768 float products of
// unit-scale terms, whose rounding grows like sqrt(K) ulp: measured up to 4e-7, under the design's 1e-5
// single-op bound. Double: measured up to 1.1e-15; 1e-13 leaves room for summation order only.
template <class T>
double rtol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-13;
}

template <class T>
Tensor<T, 1> load_bias(const std::string& name, bool with_bias) {
  return with_bias ? test::load_ref<T, 1>(kFamily, name + "_b") : Tensor<T, 1>(0);
}

template <class T>
void check_case(const std::string& name, bool with_bias) {
  SCOPED_TRACE(name + (std::is_same_v<T, float> ? " float" : " double"));
  const auto x = test::load_ref<T, 4>(kFamily, name + "_x");
  const auto w = test::load_ref<T, 4>(kFamily, name + "_w");
  const auto b = load_bias<T>(name, with_bias);
  const auto expect = test::load_ref<double, 3>(kFamily, name + "_out");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(patch_embed(x, w, b, ctx), expect, rtol<T>(), 0)) << threads << " threads";
  }
}

// patch_embed(x) == linear(patchify(x), weight.reshape(D, -1), bias), and both equal the conv reference.
template <class T>
void check_linear_map(const std::string& name, bool with_bias) {
  SCOPED_TRACE(name + (std::is_same_v<T, float> ? " float" : " double"));
  const auto x = test::load_ref<T, 4>(kFamily, name + "_x");
  const auto w = test::load_ref<T, 4>(kFamily, name + "_w");
  const auto b = load_bias<T>(name, with_bias);
  const Index D = w.dimension(0), K = w.size() / D;
  const Tensor<T, 2> w2 = w.reshape(std::array<Index, 2>{D, K});
  const auto patches = patchify(x, {w.dimension(2), w.dimension(3)});
  const auto via_linear = with_bias ? linear(patches, w2, b) : linear(patches, w2);
  const auto direct = patch_embed(x, w, b);
  // The same products, summed in a different grouping (patch_embed's GEMM runs in depth pieces): equal up
  // to rounding, a few ulp of the output scale.
  EXPECT_TRUE(test::all_close(direct, via_linear, std::is_same_v<T, float> ? 1e-6 : 1e-14, 0));
  EXPECT_TRUE(test::all_close(via_linear, test::load_ref<double, 3>(kFamily, name + "_out"), rtol<T>(), 0));
}

TEST(PatchEmbed, MatchesConv2dFlattenTranspose) {
  for (const auto& [name, with_bias] : {std::pair<const char*, bool>{"p4_b2", true},
                                        {"p3_remainder", true},
                                        {"nobias_b3", false},
                                        {"rect_patch", true},
                                        {"vit_p16", true}}) {
    check_case<float>(name, with_bias);
    check_case<double>(name, with_bias);
  }
}

// The remainder case drops the last rows and columns exactly as the conv does: an 11 x 10 image in 3 x 3
// patches is a 3 x 3 grid, and changing a dropped pixel changes nothing.
TEST(PatchEmbed, DropsRemainderLikeConv) {
  auto x = test::load_ref<float, 4>(kFamily, "p3_remainder_x");
  const auto w = test::load_ref<float, 4>(kFamily, "p3_remainder_w");
  const auto b = test::load_ref<float, 1>(kFamily, "p3_remainder_b");
  const auto before = patch_embed(x, w, b);
  EXPECT_EQ(before.dimension(1), 9);
  x(0, 1, 10, 4) = 1e6f;  // row 10: beyond 3 * 3 = 9
  x(0, 0, 2, 9) = -1e6f;  // column 9
  const auto after = patch_embed(x, w, b);
  for (Index i = 0; i < before.size(); ++i) ASSERT_EQ(before.data()[i], after.data()[i]);
}

TEST(PatchEmbed, IsLinearMapOfFlattenedPatches) {
  for (const char* name : {"p4_b2", "p3_remainder", "rect_patch", "vit_p16"}) {
    check_linear_map<float>(name, true);
    check_linear_map<double>(name, true);
  }
  check_linear_map<double>("nobias_b3", false);
}

TEST(PatchEmbed, PatchifyMatchesUnfold) {
  for (const char* name : {"p3_remainder", "rect_patch"}) {
    SCOPED_TRACE(name);
    const auto x = test::load_ref<double, 4>(kFamily, std::string(name) + "_x");
    const auto w = test::load_ref<double, 4>(kFamily, std::string(name) + "_w");
    // A gather: exact.
    EXPECT_TRUE(test::all_close(patchify(x, {w.dimension(2), w.dimension(3)}),
                                test::load_ref<double, 3>(kFamily, std::string(name) + "_patches"), 0, 0));
  }
}

// Against the library's own conv2d with stride = kernel, the other way PyTorch models compute it.
TEST(PatchEmbed, EqualsConv2dOp) {
  const auto x = test::load_ref<float, 4>(kFamily, "vit_p16_x");
  const auto w = test::load_ref<float, 4>(kFamily, "vit_p16_w");
  const auto b = test::load_ref<float, 1>(kFamily, "vit_p16_b");
  const auto conv = conv2d(x, w, b, Conv2dOptions().stride(16));
  const Index D = w.dimension(0), L = conv.dimension(2) * conv.dimension(3);
  const Tensor<float, 3> tokens =
      conv.reshape(std::array<Index, 3>{1, D, L}).shuffle(std::array<int, 3>{0, 2, 1});
  EXPECT_TRUE(test::all_close(patch_embed(x, w, b), tokens, 1e-6, 0));
}

template <class T>
void check_sequences() {
  SCOPED_TRACE((std::is_same_v<T, float> ? "float" : "double"));
  const auto x = test::load_ref<T, 4>(kFamily, "seq_x");
  const auto w = test::load_ref<T, 4>(kFamily, "seq_w");
  const auto b = test::load_ref<T, 1>(kFamily, "seq_b");
  const auto prefix = test::load_ref<T, 2>(kFamily, "seq_prefix");
  const auto pos_all = test::load_ref<T, 2>(kFamily, "seq_pos_all");
  const auto pos_patches = test::load_ref<T, 2>(kFamily, "seq_pos_patches");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(patch_embed(x, w, b, prefix, pos_all, ctx),
                                test::load_ref<double, 3>(kFamily, "seq_out_pos_all"), rtol<T>(), 0));
    EXPECT_TRUE(test::all_close(patch_embed(x, w, b, prefix, pos_patches, ctx),
                                test::load_ref<double, 3>(kFamily, "seq_out_pos_patches"), rtol<T>(), 0));
    // One class token; pos rows 1.. of pos_all (13 = 1 + 12 rows).
    const Tensor<T, 2> cls = prefix.slice(std::array<Index, 2>{0, 0}, std::array<Index, 2>{1, 5});
    const Tensor<T, 2> pos13 = pos_all.slice(std::array<Index, 2>{1, 0}, std::array<Index, 2>{13, 5});
    EXPECT_TRUE(test::all_close(patch_embed(x, w, b, cls, pos13, ctx),
                                test::load_ref<double, 3>(kFamily, "seq_out_class_only"), rtol<T>(), 0));
    // No prefix and no position embedding: the plain tokens.
    EXPECT_TRUE(test::all_close(patch_embed(x, w, b, Tensor<T, 2>(0, 5), Tensor<T, 2>(0, 5), ctx), patch_embed(x, w, b, ctx),
                                0, 0));
  }
}

TEST(PatchEmbed, SequenceWithPrefixAndPositionEmbedding) {
  check_sequences<float>();
  check_sequences<double>();
}

TEST(PatchEmbed, RejectsBadShapes) {
  using test::throws_with;
  Tensor<float, 4> x(2, 3, 12, 16), w(5, 3, 4, 4);
  Tensor<float, 1> b(5);
  x.setZero(), w.setZero(), b.setZero();
  EXPECT_TRUE(throws_with<ShapeError>([&] { patch_embed(x, Tensor<float, 4>(5, 4, 4, 4), b); },
                                      {"patch_embed: expected weight.size(1) == input channels (3), but got 4",
                                       "images (2, 3, 12, 16), weight (5, 4, 4, 4), bias (5)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { patch_embed(x, w, Tensor<float, 1>(6)); },
                                      {"patch_embed: expected bias.size(0) == weight.size(0) (5), but got 6"}));
  EXPECT_TRUE(throws_with<ShapeError>(
      [&] { patch_embed(Tensor<float, 4>(1, 3, 8, 32), Tensor<float, 4>(5, 3, 16, 16), b); },
      {"patch_embed: expected a patch no larger than the image, but got patch (16, 16) for an image of (8, 32)",
       "images (1, 3, 8, 32), weight (5, 3, 16, 16)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { patch_embed(Tensor<float, 4>(0, 3, 12, 16), w, b); },
                                      {"patch_embed: expected non-empty images, but got a zero dimension"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { patchify(x, {4, 0}); },
                                      {"patchify: expected a patch size >= 1, but got (4, 0)", "patch (4, 0)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { patchify(x, 13); },
                                      {"patchify: expected a patch no larger than the image, but got patch (13, 13)"}));
  Tensor<float, 2> cls(1, 5), pos(14, 5), narrow(1, 4);
  cls.setZero(), pos.setZero(), narrow.setZero();
  EXPECT_TRUE(throws_with<ShapeError>(
      [&] { patch_embed(x, w, b, cls, pos); },
      {"patch_embed: expected pos_embed with prefix + patches (1 + 12 = 13) rows, or patches only (12), or none, but "
       "got 14 rows (grid 3 x 4)",
       "prefix_tokens (1, 5), pos_embed (14, 5)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { patch_embed(x, w, b, narrow, Tensor<float, 2>(13, 5)); },
                                      {"patch_embed: expected prefix_tokens.size(1) == weight.size(0) (5), but got 4"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { patch_embed(x, w, b, cls, Tensor<float, 2>(13, 6)); },
                                      {"patch_embed: expected pos_embed.size(1) == weight.size(0) (5), but got 6"}));
}

}  // namespace test_patch_embed

// NaViT (models/navit.hpp, navit/patchify.hpp) against lucidrains' na_vit.py rebuilt in PyTorch
// (tests/reference/ref_navit.py, float64, eval mode), and the properties packing must have: every image's
// result is the same alone or packed with others in any order and at any max_seq_len, and the segment-id
// attention path agrees with na_vit's dense boolean masks. Token dropping: counts, seeds, and parity given the kept tokens.
//
// Tolerances. Weights and inputs are float32 values, the truth is float64. Double: fovea sums in another
// order than PyTorch, 1e-12 of each output's scale (max |expected|; measured 2e-15). Float: every product,
// norm and softmax rounds at 2^-24 relative and two layers, the q/k norms and the pooling compound it:
// 1e-5 of the scale (measured 8e-7) and cosine >= 0.99999. Packed against alone (fovea against itself): the
// same sums in another blocking (other row counts per product, zeros from other images' keys in the softmax
// sums), 1e-5 of the scale in float (measured 1e-6), 1e-12 in double (1e-15). Segments against boolean:
// each image's scores against its own keys only, or against every key with the others at -inf (their
// exp is exactly 0, but the sums and products run over other lengths): 1e-5 / 1e-12 of the scale as well.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/reference.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/config.hpp"
#include "fovea/models/navit.hpp"
#include "fovea/navit/patchify.hpp"

namespace test_navit {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const std::string kDir = std::string(FOVEA_REF_DIR) + "/navit/";
constexpr int kImages = 7;       // navit_image_<i>
constexpr int kGrayImages = 4;   // navit_gray_image_<i>
constexpr Index kGroup = 96;     // ref_navit.py's GROUP["navit"]

template <class T>
constexpr double kRtol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
template <class T>
constexpr double kSelfRtol = std::is_same_v<T, float> ? 1e-5 : 1e-12;

template <class A, class E>
double cosine(const A& a, const E& e) {
  double ab = 0, aa = 0, ee = 0;
  for (Index i = 0; i < a.size(); ++i) {
    const double x = double(a.data()[i]), y = double(e.data()[i]);
    ab += x * y, aa += x * x, ee += y * y;
  }
  return ab / std::sqrt(aa * ee);
}

template <class T, int R>
::testing::AssertionResult matches(const Tensor<T, R>& actual, const std::string& ref) {
  const Tensor<double, R> expected = test::load_ref<double, R>("navit", ref);
  auto close = test::all_close(actual, expected, kRtol<T>, 0);
  if (!close) return close << " [" << ref << "]";
  const double cos = cosine(actual, expected);
  if (!(cos >= 0.99999)) return ::testing::AssertionFailure() << ref << ": cosine " << cos << " < 0.99999";
  return ::testing::AssertionSuccess();
}

template <class T>
std::vector<Tensor<T, 3>> images(const std::string& model, int count) {
  std::vector<Tensor<T, 3>> v;
  for (int i = 0; i < count; ++i) v.push_back(test::load_ref<T, 3>("navit", model + "_image_" + std::to_string(i)));
  return v;
}

template <class T>
NaViT<T> model(const std::string& name, const HfVisionConfig& hf = {}) {
  return NaViT<T>::from_safetensors(kDir + name + ".safetensors", hf);
}

// Rows of every image's hidden state, one after another: the layout of <name>_hidden.
template <class T>
Tensor<T, 2> concat_rows(const std::vector<Tensor<T, 2>>& parts) {
  Index rows = 0;
  for (const auto& p : parts) rows += p.dimension(0);
  Tensor<T, 2> out(rows, parts.at(0).dimension(1));
  Index at = 0;
  for (const auto& p : parts) {
    std::copy_n(p.data(), p.size(), out.data() + at);
    at += p.size();
  }
  return out;
}

template <class T>
Tensor<T, 2> row(const Tensor<T, 2>& m, Index i) {
  Tensor<T, 2> r(1, m.dimension(1));
  std::copy_n(m.data() + i * m.dimension(1), m.dimension(1), r.data());
  return r;
}

// ---------------------------------------------------------------------------------------------------------
// Parity with na_vit.py

template <class T>
class NaViTParity : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(NaViTParity, Scalars);

TYPED_TEST(NaViTParity, MixedResolutionsPacked) {
  using T = TypeParam;
  Context ctx(2);
  const NaViT<T> m = model<T>("navit");
  const auto ims = images<T>("navit", kImages);
  const NaViTOutput<T> out = m.forward_with_hidden(ims, NaViTOptions().max_seq_len(kGroup), ctx);
  EXPECT_EQ(out.plan.sequences, 2);  // 6 + 80 + 1 + 8 | 21 + 25 + 28, as na_vit groups them
  EXPECT_TRUE(matches(out.logits, "navit_logits"));
  EXPECT_TRUE(matches(out.pooled, "navit_pooled"));
  EXPECT_TRUE(matches(concat_rows(out.hidden), "navit_hidden"));
  // forward() is the same computation without the extras.
  EXPECT_TRUE(test::all_close(m.forward(ims, kGroup, ctx), out.logits, 0, 0));
}

TYPED_TEST(NaViTParity, GrayModelWithAndWithoutConfig) {
  using T = TypeParam;
  Context ctx(1);
  const auto ims = images<T>("navit_gray", kGrayImages);
  // One channel and patch 4 are read off to_patch_embedding (16 = 1 x 4 x 4, not 3 x a square) or the config.
  for (bool with_config : {false, true}) {
    SCOPED_TRACE(with_config ? "config.json" : "shapes only");
    const HfVisionConfig hf = with_config ? read_hf_vision_config(kDir + "navit_gray_config.json") : HfVisionConfig{};
    const NaViT<T> m = model<T>("navit_gray", hf);
    EXPECT_EQ(m.config().channels, 1);
    EXPECT_EQ(m.config().patch_size, 4);
    const NaViTOutput<T> out = m.forward_with_hidden(ims, NaViTOptions().max_seq_len(20), ctx);
    EXPECT_TRUE(matches(out.logits, "navit_gray_logits"));
    EXPECT_TRUE(matches(out.pooled, "navit_gray_pooled"));
    EXPECT_TRUE(matches(concat_rows(out.hidden), "navit_gray_hidden"));
  }
}

// The kept tokens of ref_navit.py's dropping case (in topk's order), run through forward_patches.
TYPED_TEST(NaViTParity, GivenKeptTokens) {
  using T = TypeParam;
  Context ctx(2);
  const NaViT<T> m = model<T>("navit");
  const auto ims = images<T>("navit", kImages);
  std::vector<ImagePatches<T>> kept;
  for (int i = 0; i < kImages; ++i) {
    const Tensor<double, 1> k = test::load_ref<double, 1>("navit", "navit_drop_keep_" + std::to_string(i));
    std::vector<Index> idx;
    for (Index j = 0; j < k.size(); ++j) idx.push_back(Index(k(j)));
    const ImagePatches<T> all = patchify_image(ims[std::size_t(i)], 4);
    EXPECT_EQ(Index(idx.size()), tokens_kept(all.size(), 0.5));
    kept.push_back(keep_tokens(all, idx));
  }
  const NaViTOutput<T> out = m.forward_patches(kept, NaViTOptions().max_seq_len(kGroup), ctx);
  EXPECT_TRUE(matches(out.logits, "navit_drop_logits"));
}

TEST(NaViTConfig, ReadOffTheShapes) {
  const NaViT<float> m = model<float>("navit");
  const NaViTConfig& c = m.config();
  EXPECT_EQ(c.dim, 32);
  EXPECT_EQ(c.depth, 2);
  EXPECT_EQ(c.heads, 4);
  EXPECT_EQ(c.dim_head, 12);
  EXPECT_EQ(c.mlp_dim, 64);
  EXPECT_EQ(c.channels, 3);
  EXPECT_EQ(c.patch_size, 4);
  EXPECT_EQ(c.num_classes, 10);
  EXPECT_EQ(c.image_size, Size2(32, 40));
  EXPECT_EQ(c.grid(), Size2(8, 10));
  // Every tensor of the file is a parameter of the model and the other way round (load checked it too).
  std::set<std::string> names;
  m.named_parameters([&](const std::string& n, const auto&) { names.insert(n); });
  const SafeTensors file = SafeTensors::open(kDir + "navit.safetensors");
  EXPECT_EQ(names.size(), file.tensors().size());
  for (const auto& info : file.tensors()) EXPECT_TRUE(names.count(info.name)) << info.name;
  EXPECT_TRUE(names.count("to_patch_embedding.0.beta"));
  EXPECT_TRUE(names.count("transformer.layers.1.1.4.bias"));
  EXPECT_TRUE(names.count("attn_pool.to_out.0.weight"));
}

// ---------------------------------------------------------------------------------------------------------
// Packing

// Every image alone, then packed in several orders and at several max_seq_len: the same logits, pooled
// vectors and hidden tokens.
template <class T>
void check_packing_invariance(const NaViT<T>& m, const std::vector<Tensor<T, 3>>& ims,
                              const std::vector<Index>& max_lens, const Context& ctx) {
  const Index n = Index(ims.size());
  std::vector<NaViTOutput<T>> alone;
  for (const auto& im : ims) alone.push_back(m.forward_with_hidden(std::vector<Tensor<T, 3>>{im}, NaViTOptions(), ctx));
  std::vector<std::vector<Index>> orders(3);
  for (Index i = 0; i < n; ++i) orders[0].push_back(i);
  orders[1] = orders[0];
  std::reverse(orders[1].begin(), orders[1].end());
  orders[2] = orders[0];
  std::shuffle(orders[2].begin(), orders[2].end(), std::mt19937(11));
  for (const auto& order : orders)
    for (Index L : max_lens) {
      SCOPED_TRACE(::testing::Message() << "max_seq_len " << L << ", order " << ::testing::PrintToString(order));
      std::vector<Tensor<T, 3>> batch;
      for (Index i : order) batch.push_back(ims[std::size_t(i)]);
      const NaViTOutput<T> out = m.forward_with_hidden(batch, NaViTOptions().max_seq_len(L), ctx);
      ASSERT_EQ(out.logits.dimension(0), n);
      for (Index k = 0; k < n; ++k) {
        const NaViTOutput<T>& a = alone[std::size_t(order[std::size_t(k)])];
        EXPECT_TRUE(test::all_close(row(out.logits, k), a.logits, kSelfRtol<T>, 0)) << "image " << order[std::size_t(k)];
        EXPECT_TRUE(test::all_close(row(out.pooled, k), a.pooled, kSelfRtol<T>, 0)) << "image " << order[std::size_t(k)];
        EXPECT_TRUE(test::all_close(out.hidden[std::size_t(k)], a.hidden[0], kSelfRtol<T>, 0)) << "image " << order[std::size_t(k)];
      }
    }
}

TYPED_TEST(NaViTParity, PackedEqualsAlone) {
  using T = TypeParam;
  Context ctx(2);
  const NaViT<T> m = model<T>("navit");
  // 80 (the largest image only fits alone with every other image apart), 96, 128, 200 (one sequence).
  check_packing_invariance(m, images<T>("navit", kImages), {80, 96, 128, 200}, ctx);
}

// Random images of random sizes, enough tokens that a sequence outgrows one key block of the attention
// kernel (640 keys), so key blocks of other images are skipped for real.
template <class T>
std::vector<Tensor<T, 3>> random_images(int count, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<Tensor<T, 3>> v;
  for (int i = 0; i < count; ++i) {
    Tensor<T, 3> im(3, 4 * Index(1 + rng() % 8), 4 * Index(1 + rng() % 10));
    for (Index j = 0; j < im.size(); ++j) im.data()[j] = T(normal(rng));
    v.push_back(im);
  }
  return v;
}

TYPED_TEST(NaViTParity, PackedEqualsAloneLongSequences) {
  using T = TypeParam;
  Context ctx(2);
  const NaViT<T> m = model<T>("navit");
  check_packing_invariance(m, random_images<T>(40, 5), {80, 700, 2048}, ctx);
}

TYPED_TEST(NaViTParity, SegmentsEqualsBooleanMask) {
  using T = TypeParam;
  Context ctx(2);
  const NaViT<T> m = model<T>("navit");
  for (Index L : {Index(96), Index(2048)}) {
    SCOPED_TRACE(L);
    const auto ims = L == 96 ? images<T>("navit", kImages) : random_images<T>(40, 9);
    const NaViTOutput<T> seg = m.forward_with_hidden(ims, NaViTOptions().max_seq_len(L), ctx);  // segments
    const NaViTOutput<T> dense = m.forward_with_hidden(ims, NaViTOptions().max_seq_len(L).mask(NaViTMask::boolean), ctx);
    if (L == 2048) {
      EXPECT_GT(seg.plan.seq_len, 640);  // longer than one key block of the kernel
    }
    EXPECT_TRUE(test::all_close(seg.logits, dense.logits, kSelfRtol<T>, 0));
    EXPECT_TRUE(test::all_close(seg.pooled, dense.pooled, kSelfRtol<T>, 0));
    EXPECT_TRUE(test::all_close(concat_rows(seg.hidden), concat_rows(dense.hidden), kSelfRtol<T>, 0));
  }
}

TEST(NaViTForward, SameOnOneAndTwoThreadsAndBatchOfOneLayout) {
  Context one(1), two(2);
  const NaViT<float> m = model<float>("navit");
  const auto ims = images<float>("navit", kImages);
  const Tensor<float, 2> a = m.forward(ims, kGroup, one), b = m.forward(ims, kGroup, two);
  EXPECT_TRUE(test::all_close(a, b, 1e-6, 0));
  // (1, C, H, W) inputs, as fovea-embed reads them, are the same images.
  std::vector<Tensor<float, 4>> batched;
  for (const auto& im : ims) {
    Tensor<float, 4> x(1, im.dimension(0), im.dimension(1), im.dimension(2));
    std::copy_n(im.data(), im.size(), x.data());
    batched.push_back(x);
  }
  EXPECT_TRUE(test::all_close(m.forward(batched, kGroup, two), b, 0, 0));
}

// ---------------------------------------------------------------------------------------------------------
// Patches and token dropping

TEST(NaViTPatchify, NaVitOrderAndPositions) {
  // 'c (h p1) (w p2) -> (h w) (c p1 p2)' written as loops.
  const Index C = 2, P = 3, gh = 2, gw = 4;
  Tensor<float, 3> im(C, gh * P, gw * P);
  for (Index i = 0; i < im.size(); ++i) im.data()[i] = float(i);
  const ImagePatches<float> p = patchify_image(im, P);
  EXPECT_EQ(p.grid, Size2(gh, gw));
  ASSERT_EQ(p.patches.dimension(0), gh * gw);
  ASSERT_EQ(p.patches.dimension(1), C * P * P);
  for (Index h = 0; h < gh; ++h)
    for (Index w = 0; w < gw; ++w) {
      const Index t = h * gw + w;
      EXPECT_EQ(p.positions(t, 0), h);
      EXPECT_EQ(p.positions(t, 1), w);
      for (Index c = 0; c < C; ++c)
        for (Index p1 = 0; p1 < P; ++p1)
          for (Index p2 = 0; p2 < P; ++p2)
            EXPECT_EQ(p.patches(t, (c * P + p1) * P + p2), im(c, h * P + p1, w * P + p2)) << t << " " << c << p1 << p2;
    }
}

TEST(NaViTTokenDropping, KeptCounts) {
  // max(1, floor(n (1 - p))), in double as na_vit's int(n * (1 - p)).
  EXPECT_EQ(tokens_kept(10, 0.0), 10);
  EXPECT_EQ(tokens_kept(10, 0.25), 7);
  EXPECT_EQ(tokens_kept(80, 0.5), 40);
  EXPECT_EQ(tokens_kept(1, 0.5), 1);
  EXPECT_EQ(tokens_kept(3, 0.9), 1);
  EXPECT_EQ(tokens_kept(7, 0.999), 1);
  EXPECT_EQ(tokens_kept(384, 0.3), 268);
  EXPECT_EQ(tokens_kept(3, 1.0 / 3.0), Index(3 * (1 - 1.0 / 3.0)));
}

TEST(NaViTTokenDropping, SeededChoice) {
  const std::vector<Index> a = sample_kept_tokens(100, 0.5, 42, 0);
  ASSERT_EQ(a.size(), 50u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<Index>(a.begin(), a.end()).size(), a.size());
  EXPECT_GE(a.front(), 0);
  EXPECT_LT(a.back(), 100);
  EXPECT_EQ(sample_kept_tokens(100, 0.5, 42, 0), a);  // same seed and image: same tokens
  EXPECT_NE(sample_kept_tokens(100, 0.5, 43, 0), a);  // another seed
  EXPECT_NE(sample_kept_tokens(100, 0.5, 42, 1), a);  // another image of the batch
  EXPECT_NE(sample_kept_tokens(100, 0.5, 42ull << 32, 0), a);  // the seed's high half counts too
  EXPECT_EQ(sample_kept_tokens(5, 0.0, 42, 0), (std::vector<Index>{0, 1, 2, 3, 4}));
  // Uniform over the tokens: over 2000 seeds each of 10 tokens is kept 1200 times on average (6 of 10 at
  // p = 0.4; standard deviation 22), and no token is favoured.
  std::vector<int> hits(10, 0);
  for (std::uint64_t s = 0; s < 2000; ++s)
    for (Index t : sample_kept_tokens(10, 0.4, s, 3)) ++hits[std::size_t(t)];
  for (int h : hits) {
    EXPECT_GT(h, 1100);
    EXPECT_LT(h, 1300);
  }
}

TEST(NaViTTokenDropping, ForwardDropsOnlyWhenAsked) {
  Context ctx(2);
  const NaViT<float> m = model<float>("navit");
  const auto ims = images<float>("navit", kImages);
  const NaViTOptions train = NaViTOptions().max_seq_len(kGroup).token_dropout(0.5, 7);
  const NaViTOutput<float> a = m.forward_with_hidden(ims, train, ctx);
  for (int i = 0; i < kImages; ++i) {
    const Index n = (ims[std::size_t(i)].dimension(1) / 4) * (ims[std::size_t(i)].dimension(2) / 4);
    EXPECT_EQ(a.hidden[std::size_t(i)].dimension(0), tokens_kept(n, 0.5)) << i;
    EXPECT_EQ(a.plan.slots[std::size_t(i)].length, tokens_kept(n, 0.5)) << i;
  }
  // Deterministic for a seed, different for another, and exactly the chosen tokens run through the model.
  EXPECT_TRUE(test::all_close(m.forward(ims, train, ctx), a.logits, 0, 0));
  const Tensor<float, 2> other = m.forward(ims, NaViTOptions().max_seq_len(kGroup).token_dropout(0.5, 8), ctx);
  EXPECT_FALSE(test::all_close(other, a.logits, 1e-3, 0));
  std::vector<ImagePatches<float>> chosen;
  for (int i = 0; i < kImages; ++i) {
    const ImagePatches<float> p = patchify_image(ims[std::size_t(i)], 4);
    chosen.push_back(keep_tokens(p, sample_kept_tokens(p.size(), 0.5, 7, i)));
  }
  EXPECT_TRUE(test::all_close(m.forward_patches(chosen, NaViTOptions().max_seq_len(kGroup), ctx).logits, a.logits,
                              kSelfRtol<float>, 0));
  // Inference (the default) drops nothing; token_dropout 0 is the same.
  const NaViTOutput<float> eval = m.forward_with_hidden(ims, NaViTOptions().max_seq_len(kGroup), ctx);
  EXPECT_EQ(eval.hidden[1].dimension(0), 80);
  EXPECT_TRUE(matches(eval.logits, "navit_logits"));
  EXPECT_TRUE(test::all_close(m.forward(ims, NaViTOptions().max_seq_len(kGroup).token_dropout(0.0, 7), ctx), eval.logits, 0, 0));
  // Dropping lets an image larger than max_seq_len through: 80 patches keep 40.
  EXPECT_EQ(m.forward(std::vector<Tensor<float, 3>>{ims[1]}, NaViTOptions().max_seq_len(40).token_dropout(0.5), ctx)
                .dimension(0),
            1);
}

// ---------------------------------------------------------------------------------------------------------
// Bad input: type and message

TEST(NaViTErrors, Images) {
  const NaViT<float> m = model<float>("navit");
  const auto ims = images<float>("navit", kImages);
  auto img = [](Index c, Index h, Index w) {
    Tensor<float, 3> t(c, h, w);
    t.setZero();
    return std::vector<Tensor<float, 3>>{t};
  };
  // An image larger than max_seq_len allows (the 32 x 40 image is 8 x 10 = 80 patches).
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { m.forward(ims, 64); },
                                            {"NaViT.forward", "image 1 (3, 32, 40)", "8 x 10 = 80 patches",
                                             "max_seq_len = 64", "never split"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { m.forward(std::vector<Tensor<float, 3>>{ims[1]}, NaViTOptions().max_seq_len(30).token_dropout(0.5)); },
      {"80 patches", "40 kept of 80 at token_dropout 0.5", "max_seq_len = 30"}));
  // Sides not multiples of the patch size.
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { m.forward(img(3, 10, 12)); },
                                            {"NaViT.forward", "multiples of the patch size 4", "image 0 (3, 10, 12)",
                                             "leaves 2 and 0 pixels"}));
  // A grid larger than the position tables (8 x 10).
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { m.forward(img(3, 36, 8)); },
                                            {"image 0 (3, 36, 8)", "9 x 2 patch grid", "pos_embed_height 8 rows",
                                             "pos_embed_width 10 rows", "images up to 32 x 40"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { m.forward(img(3, 8, 44)); }, {"2 x 11 patch grid"}));
  // Channels, empty input, (1, C, H, W) with another batch size, max_seq_len.
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { m.forward(img(1, 8, 8)); },
                                            {"expected 3 channels", "image 0 (1, 8, 8) has 1"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { m.forward(std::vector<Tensor<float, 3>>{}); },
                                            {"NaViT.forward", "at least one image"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { m.forward(std::vector<Tensor<float, 4>>{Tensor<float, 4>(2, 3, 8, 8)}); },
      {"(1, C, H, W)", "image 0 is (2, 3, 8, 8)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { m.forward(ims, 0); }, {"max_seq_len >= 1", "got 0"}));
}

TEST(NaViTErrors, DropRate) {
  const NaViT<float> m = model<float>("navit");
  const auto ims = images<float>("navit", 2);
  for (double p : {1.0, -0.1, 1.5, std::nan("")}) {
    SCOPED_TRACE(p);
    EXPECT_TRUE(test::throws_with<ShapeError>([&] { m.forward(ims, NaViTOptions().token_dropout(p)); },
                                              {"NaViT.forward", "token_dropout in [0, 1)"}));
    EXPECT_TRUE(test::throws_with<ShapeError>([&] { tokens_kept(10, p); }, {"tokens_kept", "[0, 1)"}));
    EXPECT_TRUE(test::throws_with<ShapeError>([&] { sample_kept_tokens(10, p, 1); }, {"[0, 1)"}));
  }
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { tokens_kept(0, 0.5); }, {"tokens_kept", "at least one patch"}));
}

TEST(NaViTErrors, PatchesAndKeptTokens) {
  const NaViT<float> m = model<float>("navit");
  Tensor<float, 3> im(3, 8, 8);
  im.setZero();
  ImagePatches<float> p = patchify_image(im, 4);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { keep_tokens(p, {0, 4}); },
                                            {"keep_tokens", "[0, 4)", "index 1 is 4"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { keep_tokens(p, {}); }, {"keep_tokens", "at least one"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { patchify_image(im, 3); },
                                            {"patchify_image", "multiples of the patch size 3", "(3, 8, 8)"}));
  p.positions(2, 0) = 8;
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { m.forward_patches({p}); },
                                            {"NaViT.forward_patches", "token 2", "(8, 0)", "pos_embed_height 8"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { m.forward_patches({patchify_image(im, 2)}); },
                                            {"forward_patches", "(16, 12)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { m.forward_patches({patchify_image(im, 4)}, NaViTOptions().token_dropout(0.5)); },
      {"forward_patches", "token_dropout 0"}));
}

TEST(NaViTErrors, Weights) {
  // Another model's file: every shape mismatch and every missing name in one FormatError.
  NaViTConfig c = model<float>("navit").config();
  c.depth = 3;
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { NaViT<float>::from_safetensors(kDir + "navit.safetensors", c); },
      {"navit.safetensors", "missing", "transformer.layers.2.0.to_q.weight"}));
  c = model<float>("navit").config();
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { NaViT<float>::from_safetensors(kDir + "navit_gray.safetensors", c); },
      {"navit_gray.safetensors", "13 missing [transformer.layers.1.0.norm.gamma", "shape mismatches",
       "to_patch_embedding.1.weight: expected (32, 48), file has (24, 16)"}));
  // Not a NaViT state dict at all.
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { NaViT<float>::from_safetensors(std::string(FOVEA_REF_DIR) + "/vit/tv.safetensors"); },
      {"tv.safetensors", "to_patch_embedding.1.weight", "na_vit.NaViT"}));
  // A config that disagrees with the shapes.
  HfVisionConfig hf;
  hf.num_attention_heads = 3;
  hf.source = "config.json 'x'";
  EXPECT_TRUE(test::throws_with<FormatError>([&] { model<float>("navit", hf); },
                                             {"config.json 'x'", "\"num_attention_heads\" is 3", "says 4"}));
  hf = {};
  hf.image_size = Size2(64, 64);
  EXPECT_TRUE(test::throws_with<FormatError>([&] { model<float>("navit", hf); }, {"\"image_size\" 64x64", "8 x 10"}));
  NaViTConfig bad;
  bad.image_size = {30, 32};
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { NaViT<float>{bad}; }, {"NaViTConfig", "multiples of patch_size"}));
}

}  // namespace test_navit

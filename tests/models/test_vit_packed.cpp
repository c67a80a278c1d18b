// VisionTransformer::forward_packed: images of different sizes through every family's tower in one packed
// pass, against the same images run one at a time (VisionTransformer::forward, itself proven against PyTorch
// in test_vit.cpp), on the small reference models of tests/reference/data/vit/ (patch 4, image 16: every
// size other than 16 x 16 resizes the position table). Every image must come out the same whatever it is
// packed with, in any order and under any max_seq_len; a few packs are also compared with the PyTorch
// reference outputs directly.
//
// Tolerances. Packed and alone compute the same sums, but the products see other row counts (a sequence
// holds several images; keys of other images are masked to -inf and add exact zeros), so Eigen splits the
// sums differently: float agrees to a few 2^-24 roundings compounded over two blocks and the head, 2e-6 of
// each output's scale (max |alone|); double to 1e-12. Against PyTorch (float64 truth), test_vit.cpp's bar:
// 1e-4 of the scale in float, 1e-10 in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/reference.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/config.hpp"
#include "fovea/models/vit.hpp"

namespace test_vit_packed {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const std::string kDir = std::string(FOVEA_REF_DIR) + "/vit/";

template <class T>
constexpr double kPackedRtol = std::is_same_v<T, float> ? 5e-6 : 1e-12;
template <class T>
constexpr double kRefRtol = std::is_same_v<T, float> ? 1e-4 : 1e-10;

// Every family and variant the reference files hold: torchvision (plain, representation head + legacy
// names), timm (class token; registers without position rows, norm_pre, avg pool, fc_norm), CLIP (quick_gelu
// with projection; gelu without), SigLIP (no class token, attention-pool head).
const char* const kModels[] = {"tv", "tv_legacy", "timm", "timm_avg", "clip", "clip_gelu", "siglip"};

template <class T>
VisionTransformer<T> load(const std::string& name) {
  return VisionTransformer<T>::from_safetensors(SafeTensors::open(kDir + name + ".safetensors"),
                                                read_hf_vision_config(kDir + name + "_config.json"));
}

template <class T>
Tensor<T, 4> random_images(Index n, Index h, Index w, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  Tensor<T, 4> x(n, 3, h, w);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = T(normal(rng));
  return x;
}

// Sizes (patch 4): the configured 16 x 16; non-square grids up and down (3x5, 6x4, 5x3); a remainder the
// patch conv drops (18 x 13 -> 4x3); a single patch; a large 7x7 grid. The last tensor holds two images.
template <class T>
std::vector<Tensor<T, 4>> mixed_images() {
  const std::array<std::array<Index, 3>, 8> sizes = {
      {{1, 16, 16}, {1, 12, 20}, {1, 8, 8}, {1, 24, 16}, {1, 18, 13}, {1, 4, 4}, {1, 28, 28}, {2, 20, 12}}};
  std::vector<Tensor<T, 4>> images;
  for (std::size_t i = 0; i < sizes.size(); ++i)
    images.push_back(random_images<T>(sizes[i][0], sizes[i][1], sizes[i][2], unsigned(100 + i)));
  return images;
}

// What running each input tensor alone gives: its output rows and each image's last hidden state (n, D).
template <class T>
struct Alone {
  std::vector<Tensor<T, 2>> output;  // one (1, E) row per image
  std::vector<Tensor<T, 2>> hidden;  // one (n, D) per image
};

template <class T>
Alone<T> run_alone(const VisionTransformer<T>& model, const std::vector<Tensor<T, 4>>& images, const Context& ctx) {
  Alone<T> a;
  for (const Tensor<T, 4>& x : images) {
    const VitOutput<T> out = model.forward_with_hidden(x, ctx);
    const Index B = x.dimension(0), E = out.output.dimension(1), N = out.last_hidden_state.dimension(1),
                D = out.last_hidden_state.dimension(2);
    for (Index b = 0; b < B; ++b) {
      Tensor<T, 2> row(1, E), hidden(N, D);
      std::copy_n(out.output.data() + b * E, E, row.data());
      std::copy_n(out.last_hidden_state.data() + b * N * D, N * D, hidden.data());
      a.output.push_back(row);
      a.hidden.push_back(hidden);
    }
  }
  return a;
}

template <class T>
Tensor<T, 2> row_of(const Tensor<T, 2>& m, Index i) {
  Tensor<T, 2> r(1, m.dimension(1));
  std::copy_n(m.data() + i * m.dimension(1), m.dimension(1), r.data());
  return r;
}

// Packs `images` in the order `order` (indices into images) under max_seq_len and checks every image
// against its run alone (alone is indexed by image, images[k] contributing images[k].dimension(0) of them).
template <class T>
void check_packed(const VisionTransformer<T>& model, const std::vector<Tensor<T, 4>>& images,
                  const std::vector<std::size_t>& order, Index max_seq_len, const Alone<T>& alone,
                  const Context& ctx, Index* sequences = nullptr) {
  std::vector<Tensor<T, 4>> packed_in;
  std::vector<std::size_t> image_of;  // packed row -> image index in `alone`
  std::vector<std::size_t> first(images.size() + 1, 0);
  for (std::size_t k = 0; k < images.size(); ++k) first[k + 1] = first[k] + std::size_t(images[k].dimension(0));
  for (std::size_t k : order) {
    packed_in.push_back(images[k]);
    for (std::size_t b = first[k]; b < first[k + 1]; ++b) image_of.push_back(b);
  }
  SCOPED_TRACE(testing::Message() << "max_seq_len " << max_seq_len);
  const VitPackedOutput<T> out = model.forward_packed_with_hidden(packed_in, max_seq_len, ctx);
  ASSERT_EQ(out.plan.images(), Index(image_of.size()));
  EXPECT_LE(out.plan.seq_len, max_seq_len);
  if (sequences) *sequences = out.plan.sequences;
  ASSERT_EQ(out.last_hidden_state.size(), image_of.size());
  if (model.config().pool != VitPool::none) ASSERT_EQ(out.output.dimension(0), Index(image_of.size()));
  for (std::size_t r = 0; r < image_of.size(); ++r) {
    SCOPED_TRACE(testing::Message() << "packed row " << r << " = image " << image_of[r]);
    if (model.config().pool != VitPool::none)
      EXPECT_TRUE(test::all_close(row_of(out.output, Index(r)), alone.output[image_of[r]], kPackedRtol<T>, 0));
    EXPECT_TRUE(test::all_close(out.last_hidden_state[r], alone.hidden[image_of[r]], kPackedRtol<T>, 0));
  }
  // forward_packed is the same computation without the hidden states.
  if (model.config().pool != VitPool::none)
    EXPECT_TRUE(test::all_close(model.forward_packed(packed_in, max_seq_len, ctx), out.output, 0, 0));
}

template <class T>
class VitPacked : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(VitPacked, Scalars);

TYPED_TEST(VitPacked, EveryImageAsIfAloneInAnyOrderAndBudget) {
  using T = TypeParam;
  const Context ctx(2);
  const std::vector<Tensor<T, 4>> images = mixed_images<T>();
  std::vector<std::size_t> given(images.size());
  std::iota(given.begin(), given.end(), 0);
  std::vector<std::size_t> reversed(given.rbegin(), given.rend());
  const std::vector<std::size_t> shuffled = {6, 2, 7, 0, 5, 3, 1, 4};
  for (const char* name : kModels) {
    SCOPED_TRACE(name);
    const VisionTransformer<T> model = load<T>(name);
    const Alone<T> alone = run_alone(model, images, ctx);
    Index longest = 0, total = 0;
    for (const auto& h : alone.hidden) longest = std::max(longest, h.dimension(0)), total += h.dimension(0);
    // The longest image alone in its sequence, a few budgets between, everything in one sequence.
    std::vector<Index> budgets = {longest, longest + 7, 2 * longest, total};
    bool saw_one = false, saw_several = false;
    for (const auto& order : {given, reversed, shuffled}) {
      for (Index L : budgets) {
        Index sequences = 0;
        check_packed(model, images, order, L, alone, ctx, &sequences);
        saw_one = saw_one || sequences == 1;
        saw_several = saw_several || sequences > 2;
      }
    }
    EXPECT_TRUE(saw_one && saw_several) << "the budgets must cover one sequence and several";
  }
}

TYPED_TEST(VitPacked, OneImagePerSequence) {
  // Every pair of these images has more tokens than the largest alone: max_seq_len = the largest puts each
  // image in its own sequence (the other sequences padded to its length).
  using T = TypeParam;
  const Context ctx(1);
  std::vector<Tensor<T, 4>> images;
  const Index sizes[][2] = {{20, 20}, {28, 28}, {24, 20}, {16, 28}};
  for (const auto& s : sizes) images.push_back(random_images<T>(1, s[0], s[1], unsigned(s[0] * 100 + s[1])));
  const std::vector<std::size_t> order = {0, 1, 2, 3};
  for (const char* name : kModels) {
    SCOPED_TRACE(name);
    const VisionTransformer<T> model = load<T>(name);
    const Alone<T> alone = run_alone(model, images, ctx);
    const Index longest = model.num_tokens({7, 7});
    Index sequences = 0;
    check_packed(model, images, order, longest, alone, ctx, &sequences);
    EXPECT_EQ(sequences, 4);
  }
}

TYPED_TEST(VitPacked, MatchesPyTorchReference) {
  // The reference batches packed together (base 2 x 16x16, wide 2 x 24x20, square 20x20, small 12x8, ragged
  // 2 x 18x23: each its own grid), against the outputs PyTorch computed for each batch alone.
  using T = TypeParam;
  const Context ctx(2);
  const std::vector<std::pair<const char*, std::vector<const char*>>> cases = {
      {"tv", {"base", "wide", "square"}},     {"timm", {"base", "wide", "small"}},
      {"timm_avg", {"base", "wide"}},         {"clip", {"base", "wide", "ragged"}},
      {"clip_gelu", {"base", "wide"}},        {"siglip", {"base", "wide", "small"}}};
  for (const auto& [name, inputs] : cases) {
    SCOPED_TRACE(name);
    const VisionTransformer<T> model = load<T>(name);
    std::vector<Tensor<T, 4>> images;
    for (const char* c : inputs) images.push_back(test::load_ref<T, 4>("vit", std::string("input_") + c));
    // Largest first, so that smaller batches fill the sequences after it.
    std::reverse(images.begin(), images.end());
    const Tensor<T, 2> got = model.forward_packed(images, 100, ctx);
    Index row = 0;
    for (auto c = inputs.rbegin(); c != inputs.rend(); ++c) {
      const Tensor<double, 2> expected = test::load_ref<double, 2>("vit", std::string(name) + "_" + *c + "_output");
      Tensor<T, 2> part(expected.dimension(0), expected.dimension(1));
      std::copy_n(got.data() + row * expected.dimension(1), part.size(), part.data());
      EXPECT_TRUE(test::all_close(part, expected, kRefRtol<T>, 0)) << *c;
      row += expected.dimension(0);
    }
    EXPECT_EQ(row, got.dimension(0));
  }
}

TEST(VitPacked, PlainBatchEqualsForward) {
  // Same-size images packed one per sequence (budget = one image) is the plain batch.
  const Context ctx(2);
  const auto model = load<float>("clip");
  const Tensor<float, 4> x = random_images<float>(3, 16, 16, 9);
  const Tensor<float, 2> packed = model.forward_packed({x}, model.num_tokens({4, 4}), ctx);
  EXPECT_TRUE(test::all_close(packed, model.forward(x, ctx), kPackedRtol<float>, 0));
}

TEST(VitPacked, HeadlessSiglipGivesHiddenStatesOnly) {
  // vision_use_head = false: no pooled output, but the packed hidden states are there.
  VitConfig c = infer_vit_config(SafeTensors::open(kDir + "siglip.safetensors"), std::nullopt,
                                 read_hf_vision_config(kDir + "siglip_config.json"));
  c.pool = VitPool::none;
  detail::VitNaming naming;
  naming.hf_prefix = "";  // as siglip.safetensors spells the names
  VisionTransformer<double> model(c, naming);
  const auto full = load<double>("siglip");
  int copied = 0, total = 0;
  model.update_parameters([&](const std::string& n, auto& t) {
    ++total;
    full.named_parameters([&](const std::string& m, const auto& u) {
      if constexpr (std::decay_t<decltype(t)>::NumDimensions == std::decay_t<decltype(u)>::NumDimensions)
        if (m == n) t = u, ++copied;
    });
  });
  ASSERT_EQ(copied, total);
  const std::vector<Tensor<double, 4>> images = {random_images<double>(1, 12, 20, 1),
                                                 random_images<double>(1, 8, 8, 2)};
  const VitPackedOutput<double> out = model.forward_packed_with_hidden(images, 64);
  EXPECT_EQ(out.output.size(), 0);
  ASSERT_EQ(out.last_hidden_state.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const Tensor<double, 3> h = full.forward_with_hidden(images[i]).last_hidden_state;
    EXPECT_TRUE(test::all_close(out.last_hidden_state[i], Tensor<double, 2>(h.chip(0, 0)), 1e-12, 0));
  }
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { model.forward_packed(images, 64); },
                                            {"VisionTransformer.forward_packed", "no pooled output",
                                             "forward_packed_with_hidden"}));
}

// --- bad input ---------------------------------------------------------------------------------------------

TEST(VitPackedBadInput, ImageOverTheTokenBudget) {
  const auto model = load<float>("tv");
  const std::vector<Tensor<float, 4>> images = {random_images<float>(1, 16, 16, 1), random_images<float>(2, 8, 8, 2),
                                                random_images<float>(1, 28, 20, 3)};
  // Image 3 (the fourth: images[1] holds two) has 1 + 7 * 5 = 36 tokens.
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { model.forward_packed(images, 30); },
      {"VisionTransformer.forward_packed: image 3 (images[2], (1, 3, 28, 20)) has 36 tokens",
       "(1 prefix + 7x5 patches)", "more than max_seq_len = 30"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { model.forward_packed_with_hidden(images, 0); },
                                            {"VisionTransformer.forward_packed_with_hidden",
                                             "expected max_seq_len >= 1, but got 0"}));
}

TEST(VitPackedBadInput, EmptyList) {
  const auto model = load<float>("siglip");
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { model.forward_packed({}); },
                                            {"VisionTransformer.forward_packed", "at least one image", "empty list"}));
}

TEST(VitPackedBadInput, ChannelMismatch) {
  const auto model = load<float>("timm");
  Tensor<float, 4> grey(1, 1, 16, 16);
  grey.setZero();
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { model.forward_packed({random_images<float>(1, 16, 16, 1), grey}); },
      {"VisionTransformer.forward_packed: images[1]", "input channels == 3", "got 1", "input (1, 1, 16, 16)",
       "patch weight (24, 3, 4, 4)"}));
}

TEST(VitPackedBadInput, ImageSmallerThanAPatch) {
  const auto model = load<double>("clip");
  Tensor<double, 4> thin(1, 3, 3, 16), empty(0, 3, 16, 16);
  thin.setZero();
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { model.forward_packed({random_images<double>(1, 8, 8, 1), random_images<double>(1, 4, 4, 2), thin}); },
      {"VisionTransformer.forward_packed: images[2]", "at least one patch (4x4)", "3x16", "input (1, 3, 3, 16)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { model.forward_packed({empty}); },
                                            {"images[0]", "a batch of at least one image, but got 0"}));
}

}  // namespace test_vit_packed

// Transformer modules (MultiheadAttention, Mlp, EncoderBlock, AttentionPoolHead, LayerNorm, PatchEmbed) and
// pooling, against torch.nn / torchvision / SigLIP's head in float64 (ref_transformer.py), loaded through
// WeightLoader under every family's parameter names; plus their checks.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/reference.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/weights.hpp"
#include "fovea/nn/attention.hpp"
#include "fovea/nn/attention_pool.hpp"
#include "fovea/nn/encoder_block.hpp"
#include "fovea/nn/layer_norm.hpp"
#include "fovea/nn/mlp.hpp"
#include "fovea/nn/patch_embed.hpp"

namespace test_transformer {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const char* kFamily = "transformer";

std::string file(const std::string& name) { return std::string(FOVEA_REF_DIR) + "/transformer/" + name + ".safetensors"; }

template <class T, class M>
void load(M& module, const std::string& name, const std::string& prefix) {
  WeightLoader<T> loader(SafeTensors::open(file(name)), name);
  loader.expect_module(module, prefix);
  loader.load();
}

// Relative to max|expected|. Float: a module is a chain of float products of length <= 48, softmax and
// LayerNorm, each a few ulp; the chain measures up to 2e-7, so 1e-5 (the design's single-op bound) holds
// with a wide margin and is still far below a wrong or swapped parameter, which moves outputs by O(1).
// Double: measured up to 4e-16; 1e-12 leaves room for summation order only.
template <class T>
double rtol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

template <class T>
const char* type_name() {
  return std::is_same_v<T, float> ? "float" : "double";
}

template <class T>
std::vector<std::string> names_of(const T& module, const std::string& prefix) {
  std::vector<std::string> out;
  module.named_tensors(prefix, [&](const std::string& name, const auto&) { out.push_back(name); });
  return out;
}

template <class T>
void check_mha(const std::string& weights, AttentionNames names) {
  SCOPED_TRACE(weights + " " + type_name<T>());
  MultiheadAttention<T> mha(24, 4, true, names);
  load<T>(mha, weights, "mha");
  const auto x = test::load_ref<T, 3>(kFamily, "mha_x");
  const auto q = test::load_ref<T, 3>(kFamily, "mha_q");
  const auto kv = test::load_ref<T, 3>(kFamily, "mha_kv");
  const auto mask = test::load_ref<T, 2>(kFamily, "mha_mask");
  Tensor<T, 4> pad(2, 1, 1, 7);  // key padding: batch 1 keeps keys 0..3
  pad.setZero();
  for (Index j = 4; j < 7; ++j) pad(1, 0, 0, j) = -std::numeric_limits<T>::infinity();
  for (int threads : {1, 2}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(mha.forward(x, ctx), test::load_ref<double, 3>(kFamily, "mha_self"), rtol<T>(), 0))
        << threads << " threads";
    EXPECT_TRUE(test::all_close(mha.forward(x, AttentionMask<T>::additive(mask), ctx),
                                test::load_ref<double, 3>(kFamily, "mha_self_mask"), rtol<T>(), 0));
    EXPECT_TRUE(test::all_close(mha.forward(x, AttentionMask<T>::additive(pad), ctx),
                                test::load_ref<double, 3>(kFamily, "mha_self_padding"), rtol<T>(), 0));
    EXPECT_TRUE(test::all_close(mha.forward(q, kv, ctx), test::load_ref<double, 3>(kFamily, "mha_cross"), rtol<T>(), 0));
  }
}

template <class T>
void check_block(const std::string& weights, const EncoderBlockNames& names) {
  SCOPED_TRACE(weights + " " + type_name<T>());
  EncoderBlock<T> block(32, 4, 48, Activation::gelu, 1e-6, names);
  load<T>(block, weights, "block");
  const auto x = test::load_ref<T, 3>(kFamily, "block_x");
  const auto expect = test::load_ref<double, 3>(kFamily, "block_out");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(block.forward(x, ctx), expect, rtol<T>(), 0)) << threads << " threads";
  }
}

TEST(MultiheadAttention, MatchesTorchUnderEveryNaming) {
  check_mha<float>("mha", AttentionNames::torch());
  check_mha<double>("mha", AttentionNames::torch());
  check_mha<float>("mha_timm", AttentionNames::timm());
  check_mha<double>("mha_timm", AttentionNames::timm());
  check_mha<float>("mha_hf", AttentionNames::hf());
  check_mha<double>("mha_hf", AttentionNames::hf());
}

TEST(MultiheadAttention, WithoutBias) {
  MultiheadAttention<double> mha(24, 4, false);
  load<double>(mha, "mha_nobias", "nobias");
  EXPECT_EQ(names_of(mha, "nobias"), (std::vector<std::string>{"nobias.in_proj_weight", "nobias.out_proj.weight"}));
  EXPECT_TRUE(test::all_close(mha.forward(test::load_ref<double, 3>(kFamily, "mha_x")),
                              test::load_ref<double, 3>(kFamily, "mha_nobias_self"), rtol<double>(), 0));
}

TEST(MultiheadAttention, NamesPerFamily) {
  EXPECT_EQ(names_of(MultiheadAttention<float>(8, 2), "a"),
            (std::vector<std::string>{"a.in_proj_weight", "a.in_proj_bias", "a.out_proj.weight", "a.out_proj.bias"}));
  EXPECT_EQ(names_of(MultiheadAttention<float>(8, 2, true, AttentionNames::timm()), "a"),
            (std::vector<std::string>{"a.qkv.weight", "a.qkv.bias", "a.proj.weight", "a.proj.bias"}));
  EXPECT_EQ(names_of(MultiheadAttention<float>(8, 2, true, AttentionNames::hf()), "a"),
            (std::vector<std::string>{"a.q_proj.weight", "a.q_proj.bias", "a.k_proj.weight", "a.k_proj.bias",
                                      "a.v_proj.weight", "a.v_proj.bias", "a.out_proj.weight", "a.out_proj.bias"}));
}

// Names may be respelled after construction, but not switch between fused and separate layouts.
TEST(MultiheadAttention, NamesCannotChangeLayout) {
  MultiheadAttention<float> mha(8, 2);
  mha.names = AttentionNames::hf();
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { names_of(mha, "a"); },
                                            {"MultiheadAttention: names.separate_qkv is true but the module holds a fused "
                                             "in_proj_weight"}));
  mha.names = AttentionNames::timm();
  EXPECT_EQ(names_of(mha, "a").front(), "a.qkv.weight");
}

TEST(Mlp, MatchesTorchForEachActivation) {
  const std::pair<const char*, Activation> acts[] = {
      {"gelu", Activation::gelu}, {"gelu_tanh", Activation::gelu_tanh}, {"quick_gelu", Activation::quick_gelu}};
  for (const auto& [name, act] : acts) {
    SCOPED_TRACE(name);
    Mlp<float> mf(12, 20, 12, act);
    Mlp<double> md(12, 20, 12, act);
    load<float>(mf, "mlp", "mlp");
    load<double>(md, "mlp", "mlp");
    const auto expect = test::load_ref<double, 3>(kFamily, std::string("mlp_") + name);
    EXPECT_TRUE(test::all_close(mf.forward(test::load_ref<float, 3>(kFamily, "mlp_x")), expect, rtol<float>(), 0));
    EXPECT_TRUE(test::all_close(md.forward(test::load_ref<double, 3>(kFamily, "mlp_x")), expect, rtol<double>(), 0));
    // Rank 2 input: the same rows.
    const Tensor<double, 2> x2 = test::load_ref<double, 3>(kFamily, "mlp_x").reshape(std::array<Index, 2>{10, 12});
    const Tensor<double, 2> e2 = expect.reshape(std::array<Index, 2>{10, 12});
    EXPECT_TRUE(test::all_close(md.forward(x2), e2, rtol<double>(), 0));
  }
  EXPECT_EQ(activation_from_name("gelu_pytorch_tanh"), Activation::gelu_tanh);
  EXPECT_EQ(activation_from_name("quick_gelu"), Activation::quick_gelu);
  EXPECT_EQ(activation_from_name("gelu"), Activation::gelu);
  EXPECT_TRUE(test::throws_with<ShapeError>([] { activation_from_name("tanh"); },
                                            {"activation_from_name: expected one of gelu", "but got 'tanh'"}));
}

TEST(EncoderBlock, MatchesTorchvisionUnderEveryNaming) {
  for (bool f : {true, false}) {
    auto run = [&](auto tag) {
      using T = decltype(tag);
      check_block<T>("block", EncoderBlockNames::torchvision());
      check_block<T>("block_legacy", EncoderBlockNames::torchvision_legacy());
      check_block<T>("block_timm", EncoderBlockNames::timm());
      check_block<T>("block_hf", EncoderBlockNames::hf());
    };
    if (f) run(float()); else run(double());
  }
}

TEST(EncoderBlock, KeyPaddingMask) {
  EncoderBlock<float> bf(32, 4, 48);
  EncoderBlock<double> bd(32, 4, 48);
  load<float>(bf, "block", "block");
  load<double>(bd, "block", "block");
  const auto expect = test::load_ref<double, 3>(kFamily, "block_out_padding");
  Tensor<bool, 4> keep(2, 1, 1, 11);
  keep.setConstant(true);
  for (Index j = 6; j < 11; ++j) keep(1, 0, 0, j) = false;
  EXPECT_TRUE(test::all_close(bf.forward(test::load_ref<float, 3>(kFamily, "block_x"), AttentionMask<float>::boolean(keep)),
                              expect, rtol<float>(), 0));
  Tensor<Index, 2> ids(2, 11);  // the same mask as segments: batch 1's tokens 6.. are padding for keys
  ids.setZero();
  // Segments also drop padded queries' attention entirely (rows of zeros), so compare the kept rows only.
  for (Index j = 6; j < 11; ++j) ids(1, j) = -1;
  const auto seg = bd.forward(test::load_ref<double, 3>(kFamily, "block_x"), AttentionMask<double>::segments(ids));
  const auto full = bd.forward(test::load_ref<double, 3>(kFamily, "block_x"), AttentionMask<double>::boolean(keep));
  EXPECT_TRUE(test::all_close(full, expect, rtol<double>(), 0));
  for (Index b = 0; b < 2; ++b)
    for (Index n = 0; n < (b ? 6 : 11); ++n)
      for (Index d = 0; d < 32; ++d) ASSERT_NEAR(seg(b, n, d), expect(b, n, d), 1e-12) << b << " " << n << " " << d;
}

// One workspace across calls of different sizes (as a model reuses it across blocks and batches): results
// equal fresh forwards.
TEST(EncoderBlock, WorkspaceReuse) {
  EncoderBlock<double> block(32, 4, 48);
  load<double>(block, "block", "block");
  const auto x = test::load_ref<double, 3>(kFamily, "block_x");
  const Tensor<double, 3> small = x.slice(std::array<Index, 3>{1, 2, 0}, std::array<Index, 3>{1, 5, 32});
  EncoderWorkspace<double> ws;
  Tensor<double, 3> a = x, b = small, c = x;
  block.forward_(a, ws);
  block.forward_(b, ws);
  block.forward_(c, ws);
  EXPECT_TRUE(test::all_close(a, test::load_ref<double, 3>(kFamily, "block_out"), rtol<double>(), 0));
  EXPECT_TRUE(test::all_close(b, block.forward(small), 0, 0));
  EXPECT_TRUE(test::all_close(c, a, 0, 0));
}

TEST(EncoderBlock, NamesPerFamily) {
  const auto tv = names_of(EncoderBlock<float>(8, 2, 12), "b");
  EXPECT_EQ(tv, (std::vector<std::string>{"b.ln_1.weight", "b.ln_1.bias", "b.self_attention.in_proj_weight",
                                          "b.self_attention.in_proj_bias", "b.self_attention.out_proj.weight",
                                          "b.self_attention.out_proj.bias", "b.ln_2.weight", "b.ln_2.bias",
                                          "b.mlp.0.weight", "b.mlp.0.bias", "b.mlp.3.weight", "b.mlp.3.bias"}));
  const auto hf = names_of(EncoderBlock<float>(8, 2, 12, Activation::quick_gelu, 1e-5, EncoderBlockNames::hf()), "l");
  EXPECT_EQ(hf.size(), 16u);
  EXPECT_EQ(hf[2], "l.self_attn.q_proj.weight");
  EXPECT_EQ(hf[15], "l.mlp.fc2.bias");
}

// A file under another family's names fails to load with every missing and unexpected name listed.
TEST(EncoderBlock, WrongNamingIsOneFormatError) {
  EncoderBlock<float> block(32, 4, 48);  // torchvision names
  EXPECT_TRUE(test::throws_with<FormatError>([&] { load<float>(block, "block_timm", "block"); },
                                             {"12 missing [block.ln_1.weight", "block.mlp.3.bias]",
                                              "12 unexpected [", "block.attn.qkv.weight"}));
}

TEST(AttentionPoolHead, MatchesSiglipHead) {
  AttentionPoolHead<float> hf(32, 4, 48, 1e-6);
  AttentionPoolHead<double> hd(32, 4, 48, 1e-6);
  load<float>(hf, "pool", "head");
  load<double>(hd, "pool", "head");
  const auto expect = test::load_ref<double, 2>(kFamily, "pool_out");
  for (int threads : {1, 2}) {
    Context ctx(threads);
    EXPECT_TRUE(test::all_close(hf.forward(test::load_ref<float, 3>(kFamily, "pool_x"), ctx), expect, rtol<float>(), 0));
    EXPECT_TRUE(test::all_close(hd.forward(test::load_ref<double, 3>(kFamily, "pool_x"), ctx), expect, rtol<double>(), 0));
  }
  EXPECT_EQ(names_of(hd, "head").front(), "head.probe");
  EXPECT_EQ(names_of(hd, "head")[1], "head.attention.in_proj_weight");
  EXPECT_EQ(names_of(hd, "head").back(), "head.mlp.fc2.bias");
}

TEST(Pooling, TokenAndMean) {
  std::mt19937 rng(4);
  std::normal_distribution<double> nd;
  Tensor<float, 3> x(3, 7, 5);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = float(nd(rng));
  const auto cls = token_pool(x);
  const auto third = token_pool(x, 3);
  const auto mean = mean_pool(x, 1);
  Tensor<double, 2> expect_mean(3, 5);
  for (Index b = 0; b < 3; ++b)
    for (Index d = 0; d < 5; ++d) {
      EXPECT_EQ(cls(b, d), x(b, 0, d));
      EXPECT_EQ(third(b, d), x(b, 3, d));
      double s = 0;
      for (Index n = 1; n < 7; ++n) s += x(b, n, d);
      expect_mean(b, d) = s / 6;
    }
  EXPECT_TRUE(test::all_close(mean, expect_mean, 1e-7, 0));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { token_pool(x, 7); },
                                            {"token_pool: expected 0 <= index < x.size(1) (7)", "got index 7", "x (3, 7, 5)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { mean_pool(x, 7); }, {"mean_pool: expected 0 <= start < x.size(1) (7)"}));
}

TEST(Modules, LayerNormAndPatchEmbed) {
  LayerNorm<double> ln(4, 1e-6);
  EXPECT_EQ(names_of(ln, "norm"), (std::vector<std::string>{"norm.weight", "norm.bias"}));
  Tensor<double, 2> x(2, 4);
  x.setValues({{1, 2, 3, 4}, {-1, 0, 0, 1}});
  EXPECT_TRUE(test::all_close(ln.forward(x), layer_norm(x, ln.weight, ln.bias, 1e-6), 0, 0));
  PatchEmbed<float> pe(3, 6, 4, false);
  EXPECT_EQ(names_of(pe, "conv_proj"), (std::vector<std::string>{"conv_proj.weight"}));
  EXPECT_EQ(pe.grid({18, 9}), Size2(4, 2));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (Index i = 0; i < pe.weight.size(); ++i) pe.weight.data()[i] = nd(rng);
  Tensor<float, 4> img(2, 3, 8, 12);
  for (Index i = 0; i < img.size(); ++i) img.data()[i] = nd(rng);
  EXPECT_TRUE(test::all_close(pe.forward(img), patch_embed(img, pe.weight, pe.bias), 0, 0));
}

TEST(Modules, RejectBadShapes) {
  using test::throws_with;
  EXPECT_TRUE(throws_with<ShapeError>([] { MultiheadAttention<float>(768, 7); },
                                      {"MultiheadAttention: expected embed_dim >= 1 divisible by num_heads >= 1, but got "
                                       "embed_dim 768, num_heads 7"}));
  EXPECT_TRUE(throws_with<ShapeError>([] { EncoderBlock<float>(30, 4, 48); },
                                      {"MultiheadAttention: expected embed_dim >= 1 divisible by num_heads", "embed_dim 30, num_heads 4"}));
  MultiheadAttention<float> mha(24, 4);
  Tensor<float, 3> x(2, 7, 24), narrow(2, 7, 20), kv(3, 9, 24);
  x.setZero(), narrow.setZero(), kv.setZero();
  EXPECT_TRUE(throws_with<ShapeError>([&] { mha.forward(narrow); },
                                      {"MultiheadAttention: expected input.size(2) == embed_dim (24), but got 20",
                                       "input (2, 7, 20)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { mha.forward(x, kv); },
                                      {"MultiheadAttention: expected key_value.size(0) == query.size(0) (2), but got 3",
                                       "query (2, 7, 24), key_value (3, 9, 24)"}));
  Tensor<float, 2> bad_mask(7, 6);
  bad_mask.setZero();
  EXPECT_TRUE(throws_with<ShapeError>([&] { mha.forward(x, AttentionMask<float>::additive(bad_mask)); },
                                      {"MultiheadAttention: expected attn_mask broadcastable to (B, H, Nq, Nk) = (2, 4, 7, 7), "
                                       "but got (1, 1, 7, 6)",
                                       "input (2, 7, 24), attn_mask additive (1, 1, 7, 6)"}));
  EncoderBlock<float> block(24, 4, 48);
  EXPECT_TRUE(throws_with<ShapeError>([&] { block.forward(narrow); },
                                      {"EncoderBlock: expected input.size(2) == dim (24), but got 20", "input (2, 7, 20)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { block.forward(x, AttentionMask<float>::additive(bad_mask)); },
                                      {"EncoderBlock: expected attn_mask broadcastable", "attn_mask additive (1, 1, 7, 6)"}));
  Mlp<float> mlp(24, 48, 24);
  EXPECT_TRUE(throws_with<ShapeError>([&] { mlp.forward(narrow); },
                                      {"Mlp: expected input.size(-1) == in_features (24), but got 20", "input (2, 7, 20)"}));
  AttentionPoolHead<float> head(24, 4, 48);
  EXPECT_TRUE(throws_with<ShapeError>([&] { head.forward(narrow); },
                                      {"AttentionPoolHead: expected input.size(2) == dim (24), but got 20",
                                       "input (2, 7, 20), probe (1, 1, 24)"}));
  EXPECT_TRUE(throws_with<ShapeError>([&] { head.forward(Tensor<float, 3>(2, 0, 24)); },
                                      {"AttentionPoolHead: expected a non-empty input"}));
  EXPECT_TRUE(throws_with<ShapeError>([] { LayerNorm<float>(0); }, {"LayerNorm: expected dim >= 1, but got 0"}));
  EXPECT_TRUE(throws_with<ShapeError>([] { PatchEmbed<float>(3, 8, 0); },
                                      {"PatchEmbed: expected in_channels, embed_dim and patch_size >= 1", "patch_size (0, 0)"}));
}

}  // namespace test_transformer

// VisionTransformer against the PyTorch reference models of tests/reference/ref_vit.py: torchvision's own
// VisionTransformer and rebuilt timm, CLIP and SigLIP towers, each loaded from its family's safetensors names.
// Every case compares the output, the last hidden state and the position table used; the base case also
// compares each stage on its own (the tokens entering the first block, every block's output).
//
// Tolerances. Weights and inputs are float32 values, the truth is float64. In double, fovea computes the same
// sums in another order: 1e-10 of each output's scale. In float, every matmul, norm and softmax rounds to 2^-24
// relative and two blocks compound it: the bar, cosine >= 0.99999 and max |error| <= 1e-4 of the
// output's scale (max |expected|), applied to every compared tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <algorithm>
#include <set>
#include <sstream>
#include <string>

#include "common/reference.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/config.hpp"
#include "fovea/models/vit.hpp"

#define FOVEA_EMBED_NO_MAIN
#include "../../examples/fovea-embed.cpp"

namespace test_vit {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const std::string kDir = std::string(FOVEA_REF_DIR) + "/vit/";

template <class T>
constexpr double kRtol = std::is_same_v<T, float> ? 1e-4 : 1e-10;

template <class A, class E>
double cosine(const A& a, const E& e) {
  double ab = 0, aa = 0, ee = 0;
  for (Index i = 0; i < a.size(); ++i) {
    const double x = double(a.data()[i]), y = double(e.data()[i]);
    ab += x * y, aa += x * x, ee += y * y;
  }
  return ab / std::sqrt(aa * ee);
}

// The parity bar on one tensor: max |error| within rtol of the scale, and (float) cosine >= 0.99999.
template <class T, int R>
::testing::AssertionResult matches(const Tensor<T, R>& actual, const std::string& ref) {
  const Tensor<double, R> expected = test::load_ref<double, R>("vit", ref);
  auto close = test::all_close(actual, expected, kRtol<T>, 0);
  if (!close) return close << " [" << ref << "]";
  const double cos = cosine(actual, expected);
  if (!(cos >= 0.99999)) return ::testing::AssertionFailure() << ref << ": cosine " << cos << " < 0.99999";
  return ::testing::AssertionSuccess();
}

HfVisionConfig config_json(const std::string& name) { return read_hf_vision_config(kDir + name + "_config.json"); }

SafeTensors weights(const std::string& name) { return SafeTensors::open(kDir + name + ".safetensors"); }

// Runs every case of one reference model: output, hidden state and position table; stages on the base case.
template <class T>
void check_model(const VisionTransformer<T>& model, const std::string& name, std::initializer_list<const char*> cases,
                 const Context& ctx) {
  for (const std::string c : cases) {
    SCOPED_TRACE(name + " " + c);
    const Tensor<T, 4> x = test::load_ref<T, 4>("vit", "input_" + c);
    const VitOutput<T> out = model.forward_with_hidden(x, VitHidden::every_layer, ctx);
    EXPECT_TRUE(matches(out.output, name + "_" + c + "_output"));
    EXPECT_TRUE(matches(out.last_hidden_state, name + "_" + c + "_hidden"));
    const Size2 grid = model.grid_for(x.dimensions());
    EXPECT_TRUE(matches(model.position_embedding(grid, ctx), name + "_" + c + "_pos"));
    if (c == "base") {
      EXPECT_TRUE(matches(out.embeddings, name + "_base_embed"));
      ASSERT_EQ(out.blocks.size(), std::size_t(model.config().depth));
      for (std::size_t i = 0; i < out.blocks.size(); ++i)
        EXPECT_TRUE(matches(out.blocks[i], name + "_base_block" + std::to_string(i)));
      // forward() is the same computation without the hidden states.
      EXPECT_TRUE(test::all_close(model.forward(x, ctx), out.output, 0, 0));
    }
  }
}

template <class T>
class VitParity : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(VitParity, Scalars);

TYPED_TEST(VitParity, Torchvision) {
  using T = TypeParam;
  const Context ctx(2);
  check_model(VisionTransformer<T>::from_safetensors(weights("tv"), config_json("tv")), "tv", {"base", "wide", "square"},
              ctx);
  // representation_size head (pre_logits + tanh), legacy mlp.linear_1 / linear_2 names.
  check_model(VisionTransformer<T>::from_safetensors(weights("tv_legacy"), config_json("tv_legacy")), "tv_legacy",
              {"base"}, ctx);
}

TYPED_TEST(VitParity, Timm) {
  using T = TypeParam;
  const Context ctx(2);
  check_model(VisionTransformer<T>::from_safetensors(weights("timm"), config_json("timm")), "timm",
              {"base", "wide", "small"}, ctx);
  // Register tokens, no position rows for them, norm_pre, avg pooling with fc_norm, no qkv bias, no head.
  check_model(VisionTransformer<T>::from_safetensors(weights("timm_avg"), config_json("timm_avg")), "timm_avg",
              {"base", "wide"}, ctx);
}

TYPED_TEST(VitParity, HfClip) {
  using T = TypeParam;
  const Context ctx(1);
  const auto clip = VisionTransformer<T>::from_safetensors(weights("clip"), config_json("clip"));
  check_model(clip, "clip", {"base", "wide", "ragged"}, ctx);
  for (const char* c : {"base", "wide", "ragged"}) {
    const auto out = clip.forward_with_hidden(test::load_ref<T, 4>("vit", std::string("input_") + c), ctx);
    EXPECT_TRUE(matches(out.pooled, std::string("clip_") + c + "_pooler"));
  }
  // hidden_act "gelu" from a nested CLIPConfig, no projection: the output is pooler_output.
  check_model(VisionTransformer<T>::from_safetensors(weights("clip_gelu"), config_json("clip_gelu")), "clip_gelu",
              {"base", "wide"}, ctx);
  // A full CLIPModel file: text tensors, text_projection, logit_scale and stale position_ids are ignored.
  check_model(VisionTransformer<T>::from_safetensors(weights("clip_full"), config_json("clip_full")), "clip_full",
              {"base"}, ctx);
}

TYPED_TEST(VitParity, HfSiglip) {
  using T = TypeParam;
  const Context ctx(2);
  // Saved without the "vision_model." prefix.
  check_model(VisionTransformer<T>::from_safetensors(weights("siglip"), config_json("siglip")), "siglip",
              {"base", "wide", "small"}, ctx);
  // A full SiglipModel file, with the prefix, text tensors, logit_scale and logit_bias.
  check_model(VisionTransformer<T>::from_safetensors(weights("siglip_full"), config_json("siglip_full")),
              "siglip_full", {"base"}, ctx);
}

TEST(VitParity, ThreadCountChangesOnlyRounding) {
  // Two threads split each GEMM into panels whose edge rows take Eigen's other kernel path, so sums round
  // differently: within float rounding of one thread's result, not equal to it.
  const auto model = VisionTransformer<float>::from_safetensors(weights("siglip"), config_json("siglip"));
  const Tensor<float, 4> x = test::load_ref<float, 4>("vit", "input_wide");
  const Context one(1), two(2);
  EXPECT_TRUE(test::all_close(model.forward(x, two), model.forward(x, one), 1e-5, 0));
}

// --- configs -----------------------------------------------------------------------------------------------

TEST(VitConfigInference, ReadsEveryFamilyOffTheShapes) {
  const VitConfig tv = infer_vit_config(weights("tv"), std::nullopt, config_json("tv"));
  EXPECT_EQ(tv.family, VitFamily::torchvision);
  EXPECT_EQ(tv.width, 24);
  EXPECT_EQ(tv.depth, 2);
  EXPECT_EQ(tv.heads, 4);  // from the config
  EXPECT_EQ(tv.mlp_dim, 48);
  EXPECT_EQ(tv.patch_size, 4);
  EXPECT_EQ(tv.image_size, Size2(16));
  EXPECT_EQ(tv.num_classes, 10);
  EXPECT_EQ(tv.representation_size, 0);
  const VitConfig legacy = infer_vit_config(weights("tv_legacy"), std::nullopt, config_json("tv_legacy"));
  EXPECT_EQ(legacy.representation_size, 12);
  EXPECT_EQ(legacy.num_classes, 7);
  EXPECT_EQ(legacy.mlp_dim, 40);

  const VitConfig timm = infer_vit_config(weights("timm_avg"), std::nullopt, config_json("timm_avg"));
  EXPECT_EQ(timm.family, VitFamily::timm);
  EXPECT_EQ(timm.register_tokens, 2);
  EXPECT_FALSE(timm.pos_embed_prefix);
  EXPECT_TRUE(timm.pre_norm);
  EXPECT_FALSE(timm.patch_bias);
  EXPECT_FALSE(timm.qkv_bias);
  EXPECT_FALSE(timm.final_norm);
  EXPECT_TRUE(timm.fc_norm);
  EXPECT_EQ(timm.pool, VitPool::avg);
  EXPECT_EQ(timm.num_classes, 0);
  EXPECT_EQ(timm.output_dim(), 16);

  const VitConfig clip = infer_vit_config(weights("clip"), std::nullopt, config_json("clip"));
  EXPECT_EQ(clip.family, VitFamily::hf_clip);
  EXPECT_EQ(clip.activation, detail::Activation::quick_gelu);
  EXPECT_EQ(clip.eps, 1e-5);
  EXPECT_EQ(clip.projection_dim, 20);
  EXPECT_TRUE(clip.pre_norm && clip.fc_norm && !clip.final_norm && !clip.patch_bias);
  const VitConfig gelu = infer_vit_config(weights("clip_gelu"), std::nullopt, config_json("clip_gelu"));
  EXPECT_EQ(gelu.activation, detail::Activation::gelu);
  EXPECT_EQ(gelu.projection_dim, 0);

  const VitConfig siglip = infer_vit_config(weights("siglip"), std::nullopt, config_json("siglip"));
  EXPECT_EQ(siglip.family, VitFamily::hf_siglip);
  EXPECT_EQ(siglip.pool, VitPool::attention);
  EXPECT_FALSE(siglip.class_token);
  EXPECT_EQ(siglip.activation, detail::Activation::gelu_tanh);
  EXPECT_EQ(siglip.eps, 1e-6);
  EXPECT_EQ(siglip.mlp_dim, 48);
}

TEST(VitConfigInference, FamilyDefaultsWithoutAConfig) {
  // Without config.json: CLIP's defaults (quick_gelu, eps 1e-5) and heads for a published width. A width no
  // published model has leaves the heads unknown.
  EXPECT_TRUE(test::throws_with<FormatError>([] { infer_vit_config(weights("clip")); },
                                             {"infer_vit_config", "clip.safetensors", "width 24",
                                              "num_attention_heads"}));
  auto shapes = vit_state_dict_shapes(VitConfig::clip_vit_b_16());
  const VitConfig c = infer_vit_config(shapes);
  EXPECT_EQ(c.heads, 12);
  EXPECT_EQ(c.activation, detail::Activation::quick_gelu);
  EXPECT_EQ(c.str(), VitConfig::clip_vit_b_16().str());
  for (const VitConfig& preset : {VitConfig::vit_b_16(), VitConfig::vit_l_16(), VitConfig::vit_h_14(),
                                  VitConfig::vit_small_patch16_224(), VitConfig::clip_vit_l_14(),
                                  VitConfig::siglip_base_patch16_224()})
    EXPECT_EQ(infer_vit_config(vit_state_dict_shapes(preset)).str(), preset.str());
}

TEST(VitConfigInference, StateDictNamesAreTheFilesNames) {
  // vit_state_dict_shapes spells every family's names; the reference files hold exactly those (plus the
  // ignored text half of the full files).
  for (const char* name : {"tv", "timm", "timm_avg", "clip", "clip_gelu", "clip_full", "siglip_full"}) {
    SCOPED_TRACE(name);
    const SafeTensors file = weights(name);
    const auto expected = vit_state_dict_shapes(infer_vit_config(file, std::nullopt, config_json(name)));
    std::map<std::string, std::vector<Index>> vision;
    for (const auto& info : file.tensors())
      if (info.name.rfind("text_", 0) != 0 && info.name.rfind("logit_", 0) != 0 &&
          info.name.find("position_ids") == std::string::npos)
        vision[info.name] = std::vector<Index>(info.shape.begin(), info.shape.end());
    EXPECT_EQ(vision, expected);
  }
}

// --- bad input ---------------------------------------------------------------------------------------------

// A reference file's float tensors, without `drop`, as a new in-memory file named `label`.
SafeTensorsWriter copy_without(const std::string& name, const std::function<bool(const std::string&)>& drop) {
  const SafeTensors file = weights(name);
  SafeTensorsWriter w;
  for (const auto& info : file.tensors()) {
    if (drop(info.name) || info.dtype != Dtype::F32) continue;  // (the position_ids buffers are I64)
    const std::string_view raw = file.bytes(info.name);
    std::vector<float> values(raw.size() / sizeof(float));
    std::memcpy(values.data(), raw.data(), raw.size());
    w.add(info.name, values.data(), std::vector<Index>(info.shape.begin(), info.shape.end()));
  }
  return w;
}

TEST(VitBadInput, MissingAndExtraTensorsAllInOneMessage) {
  SafeTensorsWriter w = copy_without("tv", [](const std::string& n) {
    return n == "encoder.ln.weight" || n == "encoder.layers.encoder_layer_1.mlp.3.bias";
  });
  Tensor<float, 2> extra(3, 3);
  extra.setZero();
  w.add("encoder.layers.encoder_layer_2.ln_1.weight", extra);
  w.add("heads.pre_logits.weight", extra);
  const SafeTensors edited = SafeTensors::from_bytes(w.to_bytes(), "'edited.safetensors'");
  const VitConfig config = infer_vit_config(weights("tv"), std::nullopt, config_json("tv"));
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { VisionTransformer<float>::from_safetensors(edited, config); },
      {"'edited.safetensors'", "2 missing [encoder.layers.encoder_layer_1.mlp.3.bias, encoder.ln.weight]",
       "2 unexpected [encoder.layers.encoder_layer_2.ln_1.weight, heads.pre_logits.weight]"}));
  // A failed load leaves the model as it was.
  auto model = VisionTransformer<float>::from_safetensors(weights("tv"), config);
  const Tensor<float, 4> x = test::load_ref<float, 4>("vit", "input_base");
  EXPECT_THROW(model.load(edited), FormatError);
  EXPECT_TRUE(matches(model.forward(x), "tv_base_output"));
}

TEST(VitModel, SiglipWithoutHeadHasHiddenStatesOnly) {
  // vision_use_head = false: no head.* tensors, no pooled output; the hidden states are unchanged.
  const SafeTensorsWriter w = copy_without("siglip", [](const std::string& n) { return n.rfind("head.", 0) == 0; });
  const SafeTensors file = SafeTensors::from_bytes(w.to_bytes(), "'headless.safetensors'");
  HfVisionConfig hf = config_json("siglip");
  const VitConfig c = infer_vit_config(file, std::nullopt, hf);
  EXPECT_EQ(c.pool, VitPool::none);
  const auto model = VisionTransformer<double>::from_safetensors(file, c);
  const Tensor<double, 4> x = test::load_ref<double, 4>("vit", "input_base");
  EXPECT_TRUE(matches(model.forward_with_hidden(x).last_hidden_state, "siglip_base_hidden"));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { model.forward(x); }, {"no pooled output", "vision_use_head"}));
}

TEST(VitModel, ParametersAreNamedAndShapesFixed) {
  auto model = VisionTransformer<float>::from_safetensors(weights("clip"), config_json("clip"));
  std::vector<std::string> names;
  model.named_parameters([&](const std::string& n, const auto&) { names.push_back(n); });
  EXPECT_EQ(names.front(), "prefix_tokens");
  EXPECT_NE(std::find(names.begin(), names.end(), "vision_model.encoder.layers.1.self_attn.k_proj.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "visual_projection.weight"), names.end());
  // Editing in place changes the output; resizing is refused with the name.
  const Tensor<float, 4> x = test::load_ref<float, 4>("vit", "input_base");
  const Tensor<float, 2> before = model.forward(x);
  model.update_parameters([](const std::string& n, auto& t) {
    if (n == "visual_projection.weight") t = t * 2.0f;
  });
  EXPECT_TRUE(test::all_close(model.forward(x), Tensor<float, 2>(before * 2.0f), 1e-6, 0));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] {
        model.update_parameters([](const std::string& n, auto& t) {
          if constexpr (std::decay_t<decltype(t)>::NumDimensions == 2)
            if (n == "pos_embed") t.resize(t.dimension(0) + 1, t.dimension(1));
        });
      },
      {"update_parameters", "pos_embed (17, 24) -> (18, 24)"}));
}

TEST(VitBadInput, ShapeDisagreeingWithConfig) {
  // The file is ViT width 24 with 10 classes; a config saying 12 classes and mlp 64 must not load.
  VitConfig config = infer_vit_config(weights("tv"), std::nullopt, config_json("tv"));
  config.num_classes = 12;
  config.mlp_dim = 64;
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { VisionTransformer<float>::from_safetensors(weights("tv"), config); },
      {"tv.safetensors", "shape mismatches", "heads.head.weight: expected (12, 24), file has (10, 24)",
       "encoder.layers.encoder_layer_0.mlp.0.weight: expected (64, 24), file has (48, 24)"}));
  // A config.json that disagrees with the shapes is named with the key.
  HfVisionConfig hf = config_json("clip");
  hf.intermediate_size = 99;
  EXPECT_TRUE(test::throws_with<FormatError>([&] { infer_vit_config(weights("clip"), std::nullopt, hf); },
                                             {"clip_config.json", "\"intermediate_size\" = 99", "56"}));
  hf = config_json("clip");
  hf.image_size = Size2(32);
  EXPECT_TRUE(test::throws_with<FormatError>([&] { infer_vit_config(weights("clip"), std::nullopt, hf); },
                                             {"\"image_size\" = 32x32", "8x8 patch grid", "4x4 grid"}));
}

TEST(VitBadInput, ImageSmallerThanAPatch) {
  const auto model = VisionTransformer<float>::from_safetensors(weights("tv"), config_json("tv"));
  Tensor<float, 4> x(2, 3, 3, 16);
  x.setZero();
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { model.forward(x); },
                                            {"VisionTransformer.forward", "at least one patch (4x4)", "3x16",
                                             "input (2, 3, 3, 16)", "patch weight (24, 3, 4, 4)"}));
  Tensor<float, 4> grey(1, 1, 16, 16);
  grey.setZero();
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { model.forward_with_hidden(grey); },
                                            {"VisionTransformer.forward_with_hidden", "input channels == 3", "got 1",
                                             "input (1, 1, 16, 16)"}));
}

TEST(VitBadInput, HeadsNotDividingWidth) {
  VitConfig c = VitConfig::vit_b_16();
  c.heads = 7;
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { VisionTransformer<float> m(c); },
                                            {"VitConfig", "width divisible by heads", "768 / 7", "heads 7"}));
  HfVisionConfig hf = config_json("siglip");
  hf.num_attention_heads = 5;
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { VisionTransformer<float>::from_safetensors(weights("siglip"), hf); },
      {"siglip_config.json", "width divisible by heads", "24 / 5"}));
}

TEST(VitBadInput, ConfigTheFamilyCannotHold) {
  VitConfig tv = VitConfig::vit_b_16();
  tv.pool = VitPool::avg;
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { VisionTransformer<float> m(tv); },
                                            {"VitConfig: torchvision-vit models have token pooling", "pool avg"}));
  VitConfig siglip = VitConfig::siglip_base_patch16_224();
  siglip.class_token = true;
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { vit_state_dict_shapes(siglip); },
                                            {"hf-siglip models have no class or register tokens"}));
  VitConfig clip = VitConfig::clip_vit_b_32();
  clip.num_classes = 10;
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { clip.validate(); }, {"a classifier head or a projection, not both"}));
}

TEST(VitBadInput, NotAVitFile) {
  EXPECT_TRUE(test::throws_with<FormatError>(
      [] { infer_vit_config(SafeTensors::open(std::string(FOVEA_REF_DIR) + "/resnet/basic.safetensors")); },
      {"infer_vit_config", "basic.safetensors", "not a ViT state dict"}));
  // The family forced to one the names do not belong to: the first name it needs is missing.
  EXPECT_TRUE(test::throws_with<FormatError>([] { infer_vit_config(weights("timm"), VitFamily::torchvision); },
                                             {"timm.safetensors", "has no 'heads.head.weight'", "torchvision-vit"}));
}

// --- fovea-embed (the CLI's own source, in-process) ---------------------------------------------------------

struct CliRun {
  int code;
  std::string out, err;
};

CliRun embed(std::vector<std::string> args) {
  args.insert(args.begin(), "fovea-embed");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::ostringstream out, err;
  const int code = fovea_embed_main(int(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

const std::string kTmp = std::string(FOVEA_TEST_TMP) + "/vit_cli_";

// Image `i` of a reference input as its own (1, C, H, W) file.
std::string one_image(const std::string& input, Index i) {
  const Tensor<float, 4> x = test::load_ref<float, 4>("vit", "input_" + input);
  const Tensor<float, 4> one = x.slice(std::array<Index, 4>{i, 0, 0, 0},
                                       std::array<Index, 4>{1, x.dimension(1), x.dimension(2), x.dimension(3)});
  const std::string path = kTmp + input + std::to_string(i) + ".npy";
  write_npy(path, one);
  return path;
}

TEST(VitCli, EveryFamilyMatchesItsReference) {
  const std::pair<const char*, const char*> runs[] = {
      {"torchvision-vit", "tv"}, {"timm-vit", "timm"}, {"hf-clip", "clip"}, {"hf-siglip", "siglip"}};
  for (const auto& [arch, name] : runs) {
    SCOPED_TRACE(arch);
    const std::string out = kTmp + name + "_out.npy", hidden = kTmp + name + "_hidden.npy";
    const CliRun r = embed({"--arch", arch, "--weights", kDir + name + ".safetensors", "--config",
                            kDir + name + "_config.json", "--input", kDir + "input_wide.npy", "--output", out,
                            "--hidden-states", hidden, "--threads", "2"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find(std::string(arch) + " VitConfig("), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("(float32, 2 threads)"), std::string::npos) << r.out;
    EXPECT_FALSE(read_npy_array<float>(out).was_double);
    EXPECT_TRUE(matches(read_npy<float, 2>(out), std::string(name) + "_wide_output"));
    EXPECT_TRUE(matches(read_npy<float, 3>(hidden), std::string(name) + "_wide_hidden"));
  }
}

TEST(VitCli, RepeatedInputsOfTheirOwnSizes) {
  // Three images of two sizes: one row each, in input order, each as if run alone.
  const std::string a = one_image("wide", 0), b = one_image("base", 1), c = one_image("wide", 1);
  const std::string out = kTmp + "repeated.npy";
  const std::vector<std::string> base = {"--arch", "hf-clip", "--weights", kDir + "clip.safetensors", "--config",
                                         kDir + "clip_config.json", "--input", a, "--input", b, "--input", c,
                                         "--output", out};
  const CliRun r = embed(base);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("3 inputs -> image_embeds (3, 20)"), std::string::npos) << r.out;
  const Tensor<double, 2> got = read_npy<double, 2>(out);
  const Tensor<double, 2> wide = test::load_ref<double, 2>("vit", "clip_wide_output"),
                          small = test::load_ref<double, 2>("vit", "clip_base_output");
  Tensor<double, 2> expected(3, 20);
  for (Index j = 0; j < 20; ++j) expected(0, j) = wide(0, j), expected(1, j) = small(1, j), expected(2, j) = wide(1, j);
  EXPECT_TRUE(test::all_close(got, expected, 1e-4, 0));

  // Hidden states of different token counts do not stack; an image over the token budget is refused.
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> v = base;
    v.insert(v.end(), extra.begin(), extra.end());
    return embed(v);
  };
  const CliRun h = with({"--hidden-states", kTmp + "h.npy"});
  EXPECT_EQ(h.code, 2);
  EXPECT_NE(h.err.find("--hidden-states needs every input to give the same number of tokens"), std::string::npos)
      << h.err;
  const CliRun l = with({"--max-seq-len", "20"});
  EXPECT_EQ(l.code, 1);
  EXPECT_NE(l.err.find("gives 31 tokens, more than --max-seq-len 20"), std::string::npos) << l.err;
  // A batch file among several inputs is refused: each file is one image.
  const CliRun batch = embed({"--arch", "hf-clip", "--weights", kDir + "clip.safetensors", "--config",
                              kDir + "clip_config.json", "--input", kDir + "input_base.npy", "--input", a, "--output",
                              out});
  EXPECT_EQ(batch.code, 1);
  EXPECT_NE(batch.err.find("each holds one image (1, C, H, W), but got (2, 3, 16, 16)"), std::string::npos) << batch.err;
}

TEST(VitCli, ImagesArePreprocessedAsTheFamilyDoes) {
  // --image runs the family's processor at the model's size (CLIPImageProcessor for hf-clip, 16 x 16 here):
  // the same as preprocessing in-process and running the model.
  const std::string img = std::string(FOVEA_REF_DIR) + "/image/photo_160x120.jpg", out = kTmp + "image.npy";
  const CliRun r = embed({"--arch", "hf-clip", "--weights", kDir + "clip.safetensors", "--config",
                          kDir + "clip_config.json", "--image", img, "--output", out, "--threads", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  const Context ctx(1);
  const auto model = VisionTransformer<float>::from_safetensors(weights("clip"), config_json("clip"));
  const Tensor<float, 2> expected = model.forward(preprocess_clip(decode_image(img), 16, ctx), ctx);
  EXPECT_TRUE(test::all_close(read_npy<float, 2>(out), expected, 0, 0));
}

TEST(VitCli, ErrorsNameTheirCause) {
  const std::string out = kTmp + "unused.npy";
  // Float64 input runs in double.
  const Tensor<double, 4> x = test::load_ref<double, 4>("vit", "input_base");
  const std::string in64 = kTmp + "input64.npy";
  write_npy(in64, x);
  const CliRun d = embed({"--arch", "hf-siglip", "--weights", kDir + "siglip.safetensors", "--config",
                          kDir + "siglip_config.json", "--input", in64, "--output", out});
  ASSERT_EQ(d.code, 0) << d.err;
  EXPECT_NE(d.out.find("float64"), std::string::npos) << d.out;
  EXPECT_TRUE(test::all_close(read_npy<double, 2>(out), test::load_ref<double, 2>("vit", "siglip_base_output"), 1e-6, 0));

  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      // No config: width 24 has no published head count.
      {{"--arch", "hf-clip", "--weights", kDir + "clip.safetensors", "--input", kDir + "input_base.npy"},
       "give \"num_attention_heads\" in a config"},
      // The arch names a family the file is not.
      {{"--arch", "torchvision-vit", "--weights", kDir + "clip.safetensors", "--input", kDir + "input_base.npy"},
       "has no 'heads.head.weight'"},
      {{"--arch", "timm-vit", "--weights", kDir + "timm.safetensors", "--config", kDir + "timm_config.json", "--input",
        std::string(FOVEA_REF_DIR) + "/resnet/grouped_input.npy"},  // one channel
       "expected input channels == 3"},
  };
  for (auto [args, fragment] : cases) {
    args.insert(args.end(), {"--output", out});
    const CliRun r = embed(args);
    EXPECT_EQ(r.code, 1) << fragment << ": " << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
  }
}

}  // namespace test_vit

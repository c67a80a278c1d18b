// config.json reading for vision towers: the reference files the ViT tests use (flat and nested), every value
// form Hugging Face writes, and every way a file can be wrong, on exception type and message.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "common/reference.hpp"
#include "fovea/models/config.hpp"

namespace test_config {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const std::string kData = std::string(FOVEA_REF_DIR) + "/vit/";

HfVisionConfig parse(const std::string& text) { return parse_hf_vision_config(text, "test.json"); }

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = std::string(FOVEA_TEST_TMP) + "/config_" + name + ".json";
  std::ofstream(path) << text;
  return path;
}

TEST(HfVisionConfig, FlatClipVisionConfig) {
  const HfVisionConfig c = read_hf_vision_config(kData + "clip_config.json");
  EXPECT_EQ(c.hidden_size, 24);
  EXPECT_EQ(c.num_attention_heads, 3);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.intermediate_size, 56);
  ASSERT_TRUE(c.patch_size && c.image_size);
  EXPECT_EQ(*c.patch_size, Size2(4));
  EXPECT_EQ(*c.image_size, Size2(16));
  EXPECT_EQ(c.layer_norm_eps, 1e-5);
  EXPECT_EQ(c.hidden_act, "quick_gelu");
  EXPECT_FALSE(c.projection_dim);
  EXPECT_NE(c.source.find("clip_config.json"), std::string::npos) << c.source;
}

TEST(HfVisionConfig, NestedVisionConfigAndTopLevelProjection) {
  // A CLIPConfig: the vision keys come from "vision_config" (not text_config's hidden_size 16 or
  // quick_gelu), and the top-level projection_dim is the one CLIPModel builds.
  const HfVisionConfig c = read_hf_vision_config(kData + "clip_gelu_config.json");
  EXPECT_EQ(c.hidden_size, 16);
  EXPECT_EQ(c.num_attention_heads, 2);
  EXPECT_EQ(c.hidden_act, "gelu");
  EXPECT_EQ(c.projection_dim, 512);
  const HfVisionConfig s = read_hf_vision_config(kData + "siglip_config.json");
  EXPECT_EQ(s.hidden_act, "gelu_pytorch_tanh");
  EXPECT_EQ(s.layer_norm_eps, 1e-6);
}

TEST(HfVisionConfig, ValueForms) {
  const HfVisionConfig c = parse(R"({"hidden_size": 768.0, "image_size": [384, 256], "patch_size": 16,
                                     "num_attention_heads": null, "vision_use_head": false,
                                     "model_args": {"global_pool": "avg"}, "unrelated": [1, "x"]})");
  EXPECT_EQ(c.hidden_size, 768);  // a whole-valued float is a whole number
  EXPECT_EQ(*c.image_size, Size2(384, 256));
  EXPECT_EQ(*c.patch_size, Size2(16));
  EXPECT_FALSE(c.num_attention_heads);  // null is absent
  EXPECT_EQ(c.vision_use_head, false);
  EXPECT_EQ(c.global_pool, "avg");
  EXPECT_FALSE(c.empty());
  EXPECT_TRUE(parse("{}").empty());
  EXPECT_TRUE(parse(R"({"vision_config": null})").empty());
}

TEST(HfVisionConfig, ActivationNames) {
  EXPECT_EQ(hf_activation("gelu", "x"), detail::Activation::gelu);
  EXPECT_EQ(hf_activation("gelu_python", "x"), detail::Activation::gelu);
  EXPECT_EQ(hf_activation("gelu_pytorch_tanh", "x"), detail::Activation::gelu_tanh);
  EXPECT_EQ(hf_activation("gelu_new", "x"), detail::Activation::gelu_tanh);
  EXPECT_EQ(hf_activation("gelu_fast", "x"), detail::Activation::gelu_tanh);
  EXPECT_EQ(hf_activation("quick_gelu", "x"), detail::Activation::quick_gelu);
  EXPECT_TRUE(test::throws_with<FormatError>([] { hf_activation("relu", "cfg.json"); },
                                             {"cfg.json", "\"hidden_act\"", "\"relu\"", "quick_gelu"}));
}

TEST(HfVisionConfig, BadJsonNamesTheFile) {
  const std::string path = write_temp("broken", R"({"hidden_size": 768,)");
  EXPECT_TRUE(test::throws_with<FormatError>([&] { read_hf_vision_config(path); },
                                             {"config.json '", "config_broken.json", "not valid JSON"}));
  EXPECT_TRUE(test::throws_with<FormatError>([] { read_hf_vision_config("/nonexistent/dir/config.json"); },
                                             {"/nonexistent/dir/config.json", "cannot open"}));
  EXPECT_TRUE(test::throws_with<FormatError>([] { parse("[1, 2]"); }, {"test.json", "JSON object", "[1,2]"}));
  EXPECT_TRUE(test::throws_with<FormatError>([] { parse(R"({"vision_config": 3})"); },
                                             {"test.json", "\"vision_config\" must be an object", "3"}));
}

TEST(HfVisionConfig, BadTypesNameTheKey) {
  struct Case {
    const char* json;
    std::initializer_list<const char*> fragments;
  };
  const Case cases[] = {
      {R"({"hidden_size": "768"})", {"test.json", "\"hidden_size\" must be a whole number >= 1", "\"768\""}},
      {R"({"num_attention_heads": 0})", {"\"num_attention_heads\" must be a whole number >= 1", "0"}},
      {R"({"num_hidden_layers": -2})", {"\"num_hidden_layers\"", "-2"}},
      {R"({"intermediate_size": 30.5})", {"\"intermediate_size\"", "30.5"}},
      {R"({"patch_size": [16]})", {"\"patch_size\" must be a whole number >= 1 or [height, width]", "[16]"}},
      {R"({"image_size": [224, 0]})", {"\"image_size\"", "[224,0]"}},
      {R"({"layer_norm_eps": "1e-6"})", {"\"layer_norm_eps\" must be a number > 0", "\"1e-6\""}},
      {R"({"layer_norm_eps": 0})", {"\"layer_norm_eps\" must be a number > 0"}},
      {R"({"hidden_act": 5})", {"\"hidden_act\" must be a string", "5"}},
      {R"({"hidden_act": "swish"})", {"\"hidden_act\" must be one of", "\"swish\""}},
      {R"({"vision_use_head": 1})", {"\"vision_use_head\" must be true or false"}},
      {R"({"global_pool": "map"})", {"\"global_pool\" must be \"token\" or \"avg\"", "\"map\""}},
      // Inside vision_config the key is named with its section.
      {R"({"vision_config": {"hidden_size": true}})", {"\"vision_config.hidden_size\" must be a whole number"}},
      {R"({"vision_config": {}, "projection_dim": "x"})", {"\"projection_dim\" must be a whole number", "\"x\""}},
  };
  for (const Case& c : cases)
    EXPECT_TRUE(test::throws_with<FormatError>([&] { parse(c.json); }, c.fragments)) << c.json;
}

}  // namespace test_config

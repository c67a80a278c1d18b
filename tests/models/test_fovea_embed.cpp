// fovea-embed end to end, in-process: the CLI's own source with its main() left out, run on the ResNet
// reference files; outputs read back from .npy and compared with torchvision, plus every exit code. And the
// ViT families' repeated --input (images of their own sizes, run packed) against a separate run per image.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/reference.hpp"

#define FOVEA_EMBED_NO_MAIN
#include "../../examples/fovea-embed.cpp"

namespace test_fovea_embed {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const std::string kData = std::string(FOVEA_REF_DIR) + "/resnet/";
const std::string kTmp = std::string(FOVEA_TEST_TMP) + "/fovea_embed_";

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

std::vector<std::string> resnet_args(const std::string& name, const std::string& output) {
  return {"--arch", "torchvision-resnet", "--weights", kData + name + ".safetensors", "--input",
          kData + name + "_input.npy", "--output", output};
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(FoveaEmbed, ResNetLogitsAndHiddenStatesMatchTorchvision) {
  const std::string out = kTmp + "logits.npy", hidden = kTmp + "hidden.npy";
  std::remove(out.c_str());
  std::remove(hidden.c_str());
  auto args = resnet_args("bottleneck", out);
  for (const char* a : {"--hidden-states", hidden.c_str(), "--threads", "2"}) args.push_back(a);
  const CliRun r = embed(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  EXPECT_NE(r.out.find("(float32, 2 threads)"), std::string::npos) << r.out;
  // Written as float32 (read_npy_array reports the stored dtype); computed in float: the model test's
  // 1e-4 of the output scale.
  EXPECT_FALSE(read_npy_array<float>(out).was_double);
  EXPECT_TRUE(test::all_close(read_npy<double, 2>(out), test::load_ref<double, 2>("resnet", "bottleneck_logits"), 1e-4, 0));
  EXPECT_TRUE(test::all_close(read_npy<double, 4>(hidden), test::load_ref<double, 4>("resnet", "bottleneck_features"),
                              1e-4, 0));
}

TEST(FoveaEmbed, Float64InputRunsInDouble) {
  // The same values stored as float64: computed in double, so the only error left is the float32 output
  // rounding, 2^-24 of each value (6e-8 relative): 1e-6 of the scale.
  const auto x = test::load_ref<double, 4>("resnet", "grouped_input");
  const std::string in = kTmp + "input64.npy", out = kTmp + "logits64.npy";
  write_npy(in, x);
  const CliRun r = embed({"--arch=torchvision-resnet", "--weights=" + kData + "grouped.safetensors", "--input=" + in,
                       "--output=" + out});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("float64"), std::string::npos) << r.out;
  EXPECT_TRUE(test::all_close(read_npy<double, 2>(out), test::load_ref<double, 2>("resnet", "grouped_logits"), 1e-6, 0));
}

TEST(FoveaEmbed, ConfigJsonOverridesAndIsChecked) {
  const std::string out = kTmp + "cfg_logits.npy", good = kTmp + "good.json", bad = kTmp + "bad.json",
                    broken = kTmp + "broken.json";
  // Hugging Face ResNetConfig keys, nested as a CLIP-style vision_config; other keys are ignored.
  write_text(good, R"({"model_type": "x", "vision_config": {"layer_type": "bottleneck", "depths": [1, 2, 1, 1],
      "hidden_sizes": [16, 32, 64, 128], "embedding_size": 8, "num_channels": 3, "num_labels": 10,
      "hidden_act": "relu"}})");
  auto args = resnet_args("bottleneck", out);
  args.insert(args.end(), {"--config", good});
  CliRun r = embed(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(test::all_close(read_npy<double, 2>(out), test::load_ref<double, 2>("resnet", "bottleneck_logits"), 1e-4, 0));

  // A config that disagrees with the weights: exit 1, the loader's full report.
  write_text(bad, R"({"depths": [1, 1, 1, 1], "num_labels": 12})");
  args = resnet_args("bottleneck", out);
  args.insert(args.end(), {"--config", bad});
  r = embed(args);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("does not match ResNet(bottleneck, layers [1, 1, 1, 1]"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("unexpected [layer2.1.conv1.weight"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("fc.weight: expected (12, 128), file has (10, 128)"), std::string::npos) << r.err;

  write_text(broken, R"({"depths": [1, 1, 1]})");
  args = resnet_args("bottleneck", out);
  args.insert(args.end(), {"--config", broken});
  r = embed(args);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("\"depths\" must be a list of 4 whole numbers"), std::string::npos) << r.err;

  write_text(broken, "{not json");
  r = embed(args);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("is not valid JSON"), std::string::npos) << r.err;
}

TEST(FoveaEmbed, UsageErrorsExitTwo) {
  const std::string out = kTmp + "unused.npy";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{}, "--arch is required"},
      {{"--arch", "torchvision-resnet", "--bogus", "1"}, "unknown flag '--bogus'"},
      {{"stray"}, "unexpected argument 'stray'"},
      {{"--arch", "resnet", "--weights", "w", "--input", "x", "--output", out}, "unknown --arch 'resnet' (one of:"},
      {{"--arch", "torchvision-resnet", "--weights"}, "--weights needs a value"},
      {{"--arch", "torchvision-resnet", "--arch", "torchvision-resnet"}, "--arch given more than once"},
      {{"--arch", "torchvision-resnet", "--weights", "w", "--output", out}, "one of --input or --image is required"},
      {{"--arch", "torchvision-resnet", "--weights", "w", "--input", "x"}, "--output is required"},
      {{"--arch", "torchvision-resnet", "--weights", "w", "--input", "x", "--output", out, "--threads", "0"},
       "--threads expects a whole number from 1 to 4096, got '0'"},
      {{"--arch", "torchvision-resnet", "--weights", "w", "--input", "x", "--output", out, "--threads", "2x"},
       "got '2x'"},
      {{"--arch", "torchvision-resnet", "--weights", "w", "--input", "x", "--input", "y", "--output", out},
       "torchvision-resnet takes exactly one --input"},
      {{"--arch", "torchvision-resnet", "--weights", "w", "--image", "a.png", "--output", out},
       "--image is not implemented yet for torchvision-resnet"},
      {{"--arch", "torchvision-resnet", "--weights", "w", "--input", "x", "--output", out, "--max-seq-len", "64"},
       "--max-seq-len applies to the ViT families and navit"},
  };
  for (const auto& [args, fragment] : cases) {
    const CliRun r = embed(args);
    EXPECT_EQ(r.code, 2) << fragment << ": " << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
    EXPECT_EQ(r.err.rfind("fovea-embed: ", 0), 0u) << r.err;
  }
  const CliRun r = embed({"--arch", "navit", "--weights", "w", "--image", "a.png", "--output", out});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--image is not available for navit"), std::string::npos) << r.err;
}

// --arch navit on the reference na_vit.py model (tests/reference/ref_navit.py): seven images of their own
// sizes, one --input each, packed under two token budgets; the rows are na_vit's logits in input order.
// Tolerance as test_navit.cpp's float parity: 1e-5 of the logits' scale (float32 sums of width 32-64).
TEST(FoveaEmbed, NaViTRepeatedInputsMatchNaViT) {
  const std::string dir = std::string(FOVEA_REF_DIR) + "/navit/";
  std::vector<std::string> args = {"--arch", "navit", "--weights", dir + "navit.safetensors"};
  for (int i = 0; i < 7; ++i) {
    const Tensor<float, 3> img = read_npy<float, 3>(dir + "navit_image_" + std::to_string(i) + ".npy");
    const Tensor<float, 4> x = img.reshape(std::array<Index, 4>{1, img.dimension(0), img.dimension(1), img.dimension(2)});
    const std::string path = kTmp + "navit_" + std::to_string(i) + ".npy";
    write_npy(path, x);
    args.insert(args.end(), {"--input", path});
  }
  const Tensor<double, 2> want = test::load_ref<double, 2>("navit", "navit_logits");
  for (const char* budget : {"80", "2048"}) {
    SCOPED_TRACE(budget);
    const std::string out = kTmp + "navit_logits.npy";
    std::vector<std::string> run = args;
    run.insert(run.end(), {"--output", out, "--max-seq-len", budget});
    const CliRun r = embed(run);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("7 images -> logits (7, 10)"), std::string::npos) << r.out;
    EXPECT_TRUE(test::all_close(read_npy<double, 2>(out), want, 1e-5, 0));
  }
}

TEST(FoveaEmbed, InputErrorsExitOne) {
  const std::string out = kTmp + "unused.npy", rank3 = kTmp + "rank3.npy";
  Tensor<float, 3> chw(3, 8, 8);
  chw.setZero();
  write_npy(rank3, chw);
  const std::string w = kData + "grouped.safetensors";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--weights", kData + "missing.safetensors", "--input", kData + "grouped_input.npy"}, "missing.safetensors"},
      {{"--weights", w, "--input", kData + "missing.npy"}, "cannot open"},
      {{"--weights", w, "--input", rank3}, "expected a batch (N, C, H, W), but got shape (3, 8, 8) (a single image"},
      {{"--weights", w, "--input", kData + "bottleneck_input.npy"},
       "expected input channels == conv1.weight.size(1) (1), but got 3"},
      {{"--weights", kData + "grouped_input.npy", "--input", kData + "grouped_input.npy"}, "safetensors:"},
      {{"--weights", w, "--input", kData + "grouped.safetensors"}, "read_npy"},
  };
  for (auto [args, fragment] : cases) {
    args.insert(args.begin(), {"--arch", "torchvision-resnet", "--output", out});
    const CliRun r = embed(args);
    EXPECT_EQ(r.code, 1) << fragment << ": " << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
  }
  // An output that cannot be written is reported too, after the model ran.
  const CliRun r = embed(resnet_args("grouped", "/nonexistent-dir/out.npy"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("cannot open '/nonexistent-dir/out.npy' for writing"), std::string::npos) << r.err;
}

TEST(FoveaEmbed, HelpDocumentsEveryFlag) {
  const CliRun r = embed({"--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* s : {"--arch", "--weights", "--config", "--input", "--image", "--output", "--hidden-states",
                        "--threads", "--max-seq-len", "torchvision-resnet", "layer4's output feature", "(N, num_classes)",
                        "Exit status", "not implemented yet", "navit"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
  EXPECT_EQ(embed({"--arch", "x", "-h"}).code, 0);
}

// --- repeated --input through the ViT families: packed, against one run per image ---------------------------

const std::string kVit = std::string(FOVEA_REF_DIR) + "/vit/";

// One random image (1, 3, h, w) as its own .npy file.
std::string image_file(Index h, Index w, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  Tensor<float, 4> x(1, 3, h, w);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  const std::string path = kTmp + "image_" + std::to_string(h) + "x" + std::to_string(w) + "_" + std::to_string(seed) +
                           ".npy";
  write_npy(path, x);
  return path;
}

std::vector<std::string> vit_args(const std::string& arch, const std::string& name) {
  return {"--arch", arch, "--weights", kVit + name + ".safetensors", "--config", kVit + name + "_config.json",
          "--threads", "2"};
}

TEST(FoveaEmbed, RepeatedInputsEqualSeparateRuns) {
  // Four sizes on the patch-4, 16 x 16 reference towers: the configured one, non-square, a 7x7 grid (50
  // tokens with a class token), a 2x2 one. --max-seq-len 60 packs them into several sequences. Each row must
  // equal that image's own run; both are float32 runs of the same sums split differently, so agree within a
  // few roundings: 5e-6 of the scale (test_vit_packed.cpp's bound).
  const std::vector<std::string> files = {image_file(16, 16, 1), image_file(12, 20, 2), image_file(28, 28, 3),
                                          image_file(8, 8, 4)};
  const std::pair<const char*, const char*> runs[] = {
      {"torchvision-vit", "tv"}, {"timm-vit", "timm_avg"}, {"hf-clip", "clip"}, {"hf-siglip", "siglip"}};
  for (const auto& [arch, name] : runs) {
    SCOPED_TRACE(arch);
    const std::string packed = kTmp + name + "_packed.npy";
    std::vector<std::string> args = vit_args(arch, name);
    for (const std::string& f : files) args.insert(args.end(), {"--input", f});
    args.insert(args.end(), {"--output", packed, "--max-seq-len", "60"});
    const CliRun r = embed(args);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("4 inputs -> "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("(--max-seq-len 60"), std::string::npos) << r.out;
    const Tensor<float, 2> got = read_npy<float, 2>(packed);
    ASSERT_EQ(got.dimension(0), 4);
    for (std::size_t i = 0; i < files.size(); ++i) {
      SCOPED_TRACE(files[i]);
      const std::string alone = kTmp + name + "_alone.npy";
      std::vector<std::string> one = vit_args(arch, name);
      one.insert(one.end(), {"--input", files[i], "--output", alone});
      const CliRun s = embed(one);
      ASSERT_EQ(s.code, 0) << s.err;
      const Tensor<float, 2> expected = read_npy<float, 2>(alone);
      ASSERT_EQ(expected.dimension(1), got.dimension(1));
      const Tensor<float, 2> row =
          got.slice(std::array<Index, 2>{Index(i), 0}, std::array<Index, 2>{1, got.dimension(1)});
      EXPECT_TRUE(test::all_close(row, expected, 5e-6, 0));
    }
  }
}

TEST(FoveaEmbed, RepeatedInputsOfOneSizeKeepHiddenStates) {
  // Same-size images: the hidden states stack into (images, tokens, D), each as its own run writes it.
  const std::vector<std::string> files = {image_file(12, 20, 5), image_file(12, 20, 6), image_file(12, 20, 7)};
  const std::string out = kTmp + "same_out.npy", hidden = kTmp + "same_hidden.npy";
  std::vector<std::string> args = vit_args("hf-siglip", "siglip");
  for (const std::string& f : files) args.insert(args.end(), {"--input", f});
  args.insert(args.end(), {"--output", out, "--hidden-states", hidden});
  const CliRun r = embed(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("packed into 1 sequence of 45 tokens (--max-seq-len 2048, 0% padding)"), std::string::npos)
      << r.out;
  const Tensor<float, 3> got = read_npy<float, 3>(hidden);
  ASSERT_EQ(got.dimension(0), 3);
  ASSERT_EQ(got.dimension(1), 15);  // SigLIP: no class token, 3 x 5 patches
  for (std::size_t i = 0; i < files.size(); ++i) {
    const std::string alone = kTmp + "same_alone.npy", alone_hidden = kTmp + "same_alone_hidden.npy";
    std::vector<std::string> one = vit_args("hf-siglip", "siglip");
    one.insert(one.end(), {"--input", files[i], "--output", alone, "--hidden-states", alone_hidden});
    ASSERT_EQ(embed(one).code, 0);
    const Tensor<float, 3> expected = read_npy<float, 3>(alone_hidden);
    const Tensor<float, 3> mine =
        got.slice(std::array<Index, 3>{Index(i), 0, 0}, std::array<Index, 3>{1, got.dimension(1), got.dimension(2)});
    EXPECT_TRUE(test::all_close(mine, expected, 5e-6, 0)) << i;
  }
  // Different sizes: refused before running, naming both token counts.
  args = vit_args("hf-siglip", "siglip");
  args.insert(args.end(), {"--input", files[0], "--input", image_file(8, 8, 8), "--output", out, "--hidden-states",
                           hidden});
  const CliRun bad = embed(args);
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("--hidden-states needs every input to give the same number of tokens"), std::string::npos)
      << bad.err;
  EXPECT_NE(bad.err.find("they give 15 and 4"), std::string::npos) << bad.err;
}

TEST(FoveaEmbed, RepeatedImagesRunPacked) {
  // --image twice: both preprocessed at the model's size and packed; each row equals the single --image run.
  const std::string img = std::string(FOVEA_REF_DIR) + "/image/photo_160x120.jpg";
  const std::string two = kTmp + "two_images.npy", one = kTmp + "one_image.npy";
  std::vector<std::string> args = vit_args("torchvision-vit", "tv");
  args.insert(args.end(), {"--image", img, "--image", img, "--output", two});
  const CliRun r = embed(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("2 inputs -> logits (2, 10), packed into 1 sequence of 34 tokens"), std::string::npos) << r.out;
  args = vit_args("torchvision-vit", "tv");
  args.insert(args.end(), {"--image", img, "--output", one});
  ASSERT_EQ(embed(args).code, 0);
  const Tensor<float, 2> got = read_npy<float, 2>(two), expected = read_npy<float, 2>(one);
  for (Index i = 0; i < 2; ++i) {
    const Tensor<float, 2> row = got.slice(std::array<Index, 2>{i, 0}, std::array<Index, 2>{1, got.dimension(1)});
    EXPECT_TRUE(test::all_close(row, expected, 5e-6, 0)) << i;
  }
}

TEST(FoveaEmbed, RepeatedInputOverTheTokenBudget) {
  const std::string big = image_file(28, 28, 9);
  std::vector<std::string> args = vit_args("timm-vit", "timm");
  args.insert(args.end(), {"--input", image_file(8, 8, 10), "--input", big, "--output", kTmp + "unused.npy",
                           "--max-seq-len", "40"});
  const CliRun r = embed(args);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--input '" + big + "' (1, 3, 28, 28) gives 50 tokens, more than --max-seq-len 40"),
            std::string::npos)
      << r.err;
}

}  // namespace test_fovea_embed

// ResNet against torchvision (ref_resnet.py: BasicBlock, Bottleneck and grouped Bottleneck nets with random
// weights and BatchNorm statistics), config inference, weight-loading errors and input checks.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/reference.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/resnet.hpp"

namespace test_resnet {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

std::string weights_path(const std::string& name) { return std::string(FOVEA_REF_DIR) + "/resnet/" + name + ".safetensors"; }

std::map<std::string, std::vector<Index>> shapes_of(const ResNet<float>& m) {
  std::map<std::string, std::vector<Index>> out;
  m.named_tensors([&](const std::string& name, const auto& t) {
    out[name] = std::vector<Index>(t.dimensions().begin(), t.dimensions().end());
  });
  return out;
}

bool same_config(const ResNetConfig& a, const ResNetConfig& b) { return a.str() == b.str() && a.eps == b.eps; }

// Float tolerance, relative to the largest |logit| (and |feature|): the float64 truth starts from the same
// float32 weights and inputs, so the gap is float rounding accumulated through ~20 conv layers with sums of
// up to ~600 terms; that measures around 1e-6 of the scale, and 1e-4 still catches any real error (a
// skipped BN statistic or a wrong stride moves outputs by O(scale)). Double: 1e-10, the same sums in
// double with another summation order.
template <class T>
void check_model(const std::string& name, double rtol, int threads) {
  const ResNet<T> model = ResNet<T>::from_safetensors(weights_path(name));
  const auto x = test::load_ref<T, 4>("resnet", name + "_input");
  Context ctx(threads);
  const auto [logits, features] = model.forward_with_features(x, ctx);
  EXPECT_TRUE(test::all_close(logits, test::load_ref<double, 2>("resnet", name + "_logits"), rtol, 0)) << name;
  EXPECT_TRUE(test::all_close(features, test::load_ref<double, 4>("resnet", name + "_features"), rtol, 0)) << name;
  // The single-output entry points give the same numbers as the combined one.
  EXPECT_TRUE(test::all_close(model.forward(x, ctx), logits, 0, 0));
  EXPECT_TRUE(test::all_close(model.features(x, ctx), features, 0, 0));
}

TEST(ResNet, BasicBlockMatchesTorchvision) {
  for (int threads : {1, 2}) {
    check_model<float>("basic", 1e-4, threads);
    check_model<double>("basic", 1e-10, threads);
  }
}

TEST(ResNet, BottleneckMatchesTorchvision) {
  for (int threads : {1, 2}) {
    check_model<float>("bottleneck", 1e-4, threads);
    check_model<double>("bottleneck", 1e-10, threads);
  }
}

TEST(ResNet, GroupedBottleneckMatchesTorchvision) {
  check_model<float>("grouped", 1e-4, 2);
  check_model<double>("grouped", 1e-10, 2);
}

TEST(ResNet, SmallestImagesMatchTorchvision) {
  // 1 x 3 images: every stride-2 stage keeps size 1, as torchvision allows (its min_size is 1 x 1).
  const auto model = ResNet<double>::from_safetensors(weights_path("basic"));
  const auto logits = model.forward(test::load_ref<double, 4>("resnet", "basic_small_input"));
  EXPECT_TRUE(test::all_close(logits, test::load_ref<double, 2>("resnet", "basic_small_logits"), 1e-10, 0));
  EXPECT_EQ(model.features(test::load_ref<double, 4>("resnet", "basic_small_input")).dimensions(),
            (std::array<Index, 4>{2, 64, 1, 1}));
  EXPECT_EQ(model.feature_size({224, 224}), Size2(7, 7));
  EXPECT_EQ(model.feature_size({57, 61}), Size2(2, 2));
}

TEST(ResNet, InfersTheConfigOfEachReferenceFile) {
  const ResNetConfig basic = infer_resnet_config(SafeTensors::open(weights_path("basic")));
  EXPECT_EQ(basic.str(), "ResNet(basic, layers [2, 1, 2, 1], widths [8, 16, 32, 64], stem_width 8, in_channels 3, "
                         "num_classes 10, groups 1, width_per_group 64)");
  const ResNetConfig bottleneck = infer_resnet_config(SafeTensors::open(weights_path("bottleneck")));
  EXPECT_EQ(bottleneck.str(), "ResNet(bottleneck, layers [1, 2, 1, 1], widths [4, 8, 16, 32], stem_width 8, "
                              "in_channels 3, num_classes 10, groups 1, width_per_group 64)");
  const ResNetConfig grouped = infer_resnet_config(SafeTensors::open(weights_path("grouped")));
  EXPECT_EQ(grouped.str(), "ResNet(bottleneck, layers [1, 1, 1, 1], widths [8, 8, 16, 16], stem_width 6, "
                           "in_channels 1, num_classes 7, groups 2, width_per_group 32)");
}

TEST(ResNet, StateDictShapesAreTheModels) {
  // resnet_state_dict_shapes (no allocation) lists exactly what a built model holds, on small nets of
  // every kind; the presets below then rely on it instead of allocating full-size models.
  ResNetConfig basic = ResNetConfig::resnet34();
  basic.widths = {4, 8, 8, 16};
  basic.stem_width = 4;
  ResNetConfig bottleneck = ResNetConfig::resnet50();
  bottleneck.widths = {2, 4, 8, 8};
  bottleneck.stem_width = 6;
  bottleneck.in_channels = 2;
  ResNetConfig grouped = ResNetConfig::resnext50_32x4d();
  grouped.layers = {1, 2, 1, 2};
  grouped.widths = {16, 16, 32, 32};
  grouped.groups = 4;
  grouped.width_per_group = 16;
  for (const ResNetConfig& c : {basic, bottleneck, grouped})
    EXPECT_EQ(shapes_of(ResNet<float>(c)), resnet_state_dict_shapes(c)) << c.str();
  // torchvision's counts without the num_batches_tracked buffers: resnet18 has 122 - 20 = 102 entries,
  // resnet50 320 - 53 = 267.
  EXPECT_EQ(resnet_state_dict_shapes(ResNetConfig::resnet18()).size(), 102u);
  EXPECT_EQ(resnet_state_dict_shapes(ResNetConfig::resnet50()).size(), 267u);
  EXPECT_EQ(resnet_state_dict_shapes(ResNetConfig::resnet50()).at("layer2.0.downsample.0.weight"),
            (std::vector<Index>{512, 256, 1, 1}));
  EXPECT_EQ(resnet_state_dict_shapes(ResNetConfig::resnext50_32x4d()).at("layer1.0.conv2.weight"),
            (std::vector<Index>{128, 4, 3, 3}));
}

TEST(ResNet, InfersEveryTorchvisionPresetFromNamesAndShapes) {
  const std::pair<const char*, ResNetConfig> presets[] = {
      {"resnet18", ResNetConfig::resnet18()},   {"resnet34", ResNetConfig::resnet34()},
      {"resnet50", ResNetConfig::resnet50()},   {"resnet101", ResNetConfig::resnet101()},
      {"resnet152", ResNetConfig::resnet152()}, {"resnext50_32x4d", ResNetConfig::resnext50_32x4d()},
      {"wide_resnet50_2", ResNetConfig::wide_resnet50_2()}};
  for (const auto& [name, preset] : presets) {
    ResNetConfig c = preset;
    c.num_classes = 17;
    const ResNetConfig inferred = infer_resnet_config(resnet_state_dict_shapes(c));
    EXPECT_TRUE(same_config(inferred, c)) << name << ": " << inferred.str() << " vs " << c.str();
  }
}

TEST(ResNet, InferenceRejectsWhatIsNotAResNet) {
  auto shapes = resnet_state_dict_shapes(ResNetConfig::resnet18());
  auto without = [&](const std::string& name) {
    auto s = shapes;
    s.erase(name);
    return s;
  };
  EXPECT_TRUE(test::throws_with<FormatError>([&] { infer_resnet_config(without("conv1.weight")); },
                                             {"infer_resnet_config", "no 'conv1.weight'", "not a torchvision ResNet"}));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { infer_resnet_config(without("fc.weight")); }, {"no 'fc.weight'"}));
  EXPECT_TRUE(test::throws_with<FormatError>([&] { infer_resnet_config(without("layer3.0.conv1.weight")); },
                                             {"no 'layer3.0.conv1.weight'"}));
  auto bad_rank = shapes;
  bad_rank["conv1.weight"] = {64, 3, 7};
  EXPECT_TRUE(test::throws_with<FormatError>([&] { infer_resnet_config(bad_rank); },
                                             {"'conv1.weight' of rank 4", "(64, 3, 7)"}));
  auto b50 = resnet_state_dict_shapes(ResNetConfig::resnet50());
  b50["layer2.0.conv3.weight"] = {510, 128, 1, 1};
  EXPECT_TRUE(test::throws_with<FormatError>([&] { infer_resnet_config(b50); },
                                             {"layer2.0.conv3.weight has 510 output channels", "expansion 4"}));
}

TEST(ResNet, ReportsEveryMissingUnexpectedAndMisshapenTensorAtOnce) {
  // A valid file for the bottleneck net, then broken three ways at once.
  const SafeTensors good = SafeTensors::open(weights_path("bottleneck"));
  SafeTensorsWriter writer;
  for (const TensorInfo& t : good.tensors()) {
    if (t.name == "layer2.1.bn2.running_var" || t.name == "fc.bias" || t.dtype != Dtype::F32) continue;
    if (t.name == "layer3.0.conv2.weight") {
      writer.add("layer3.0.conv2.weight", Tensor<float, 4>(16, 16, 3, 1).setZero());
    } else {
      const std::string_view b = good.bytes(t.name);
      writer.add(t.name, reinterpret_cast<const float*>(b.data()), t.shape);
    }
  }
  writer.add("layer5.0.conv1.weight", Tensor<float, 1>(3).setZero()).add("head.bias", Tensor<float, 1>(2).setZero());
  const SafeTensors bad = SafeTensors::from_bytes(writer.to_bytes(), "'broken.safetensors'");

  ResNet<float> model(infer_resnet_config(good));
  model.load(good);
  const auto x = test::load_ref<float, 4>("resnet", "bottleneck_input");
  const Tensor<float, 2> before = model.forward(x);
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { model.load(bad); },
      {"load weights: 'broken.safetensors' does not match ResNet(bottleneck, layers [1, 2, 1, 1]",
       "2 missing [layer2.1.bn2.running_var, fc.bias]", "2 unexpected [", "layer5.0.conv1.weight", "head.bias",
       "1 shape mismatch [layer3.0.conv2.weight: expected (16, 16, 3, 3), file has (16, 16, 3, 1)]"}));
  // Nothing was loaded: the model still computes what it did.
  EXPECT_TRUE(test::all_close(model.forward(x), before, 0, 0));
  // The file's config is inferred fine (first blocks intact), and loading reports the same problems.
  EXPECT_TRUE(test::throws_with<FormatError>([&] { ResNet<float>::from_safetensors(bad); },
                                             {"2 missing", "2 unexpected", "1 shape mismatch"}));
}

TEST(ResNet, ChecksWeightsAgainstAGivenConfig) {
  // The basic file ([2, 1, 2, 1], widths 8..64, 10 classes) loaded into another narrow basic net.
  ResNetConfig c = ResNetConfig::resnet18();
  c.widths = {8, 16, 32, 48};
  c.stem_width = 4;
  c.num_classes = 11;
  ResNet<float> model(c);
  try {
    model.load(SafeTensors::open(weights_path("basic")));
    FAIL() << "loaded a mismatched file";
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    // 5 for layer1.0's downsample (stem 4 -> 8 channels), 10 each for layer2.1 and layer4.1.
    EXPECT_NE(msg.find("25 missing [layer1.0.downsample.0.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer2.1.conv1.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer4.1.bn2.running_var]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("23 shape mismatches"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("unexpected"), std::string::npos) << msg;
    EXPECT_NE(msg.find("conv1.weight: expected (4, 3, 7, 7), file has (8, 3, 7, 7)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fc.weight: expected (11, 48), file has (10, 64)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer4.0.conv2.weight: expected (48, 48, 3, 3), file has (64, 64, 3, 3)"), std::string::npos)
        << msg;
    EXPECT_EQ(msg.find("num_batches_tracked"), std::string::npos) << "ignored names must not be reported: " << msg;
  }
}

TEST(ResNet, RejectsBadInputs) {
  const auto model = ResNet<float>::from_safetensors(weights_path("grouped"));  // 1 input channel
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] { model.forward(Tensor<float, 4>(2, 3, 32, 32)); },
      {"ResNet.forward: expected input channels == conv1.weight.size(1) (1), but got 3", "input (2, 3, 32, 32)",
       "conv1.weight (6, 1, 7, 7)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { model.features(Tensor<float, 4>(2, 1, 0, 32)); },
                                            {"ResNet.forward", "non-empty", "(2, 1, 0, 32)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { model.forward(Tensor<float, 4>(0, 1, 16, 16)); },
                                            {"ResNet.forward", "(0, 1, 16, 16)"}));
}

TEST(ResNet, RejectsBadConfigs) {
  ResNetConfig c = ResNetConfig::resnet18();
  c.groups = 2;
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { ResNet<float> m(c); },
                                            {"ResNetConfig: BasicBlock supports only groups 1", "groups 2"}));
  c = ResNetConfig::resnet50();
  c.layers[2] = 0;
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { ResNet<float> m(c); },
                                            {"expected layers[2] >= 1, but got 0", "layers [3, 4, 0, 3]"}));
  c = ResNetConfig::resnet50();
  c.width_per_group = 1;
  c.widths = {8, 128, 256, 512};
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { ResNet<float> m(c); }, {"bottleneck width 8 * 1 / 64 * 1 = 0"}));
}

TEST(ResNet, UpdateParametersRefoldsAndKeepsShapes) {
  ResNet<double> model = ResNet<double>::from_safetensors(weights_path("basic"));
  const auto x = test::load_ref<double, 4>("resnet", "basic_input");
  const Tensor<double, 2> base = model.forward(x);
  // Doubling fc's weight and bias doubles the logits: edits reach the fused copy.
  model.update_parameters([](const std::string& name, auto& t) {
    if (name.rfind("fc.", 0) == 0) t = t * 2.0;
  });
  const Tensor<double, 2> doubled = base * 2.0;
  EXPECT_TRUE(test::all_close(model.forward(x), doubled, 1e-13, 0));
  // BatchNorm statistics reach the folded convs too.
  model.update_parameters([](const std::string& name, auto& t) {
    if (name == "layer4.0.bn2.running_mean") t.setConstant(1e3);  // shifts every channel far negative
  });
  EXPECT_FALSE(test::all_close(model.forward(x), doubled, 1e-3, 0));
  EXPECT_TRUE(test::throws_with<ShapeError>(
      [&] {
        model.update_parameters([](const std::string& name, auto& t) {
          if constexpr (std::decay_t<decltype(t)>::NumIndices == 1)
            if (name == "fc.bias") t.resize(t.dimension(0) + 1);
        });
      },
      {"ResNet.update_parameters", "fc.bias (10) -> (11)"}));
}

// Fan-in-scaled normal weights and non-trivial BatchNorm statistics (as bench_resnet does), so that a net
// without a reference file has O(1) activations through its depth.
template <class T>
void randomize(ResNet<T>& model, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.5, 1.5);
  model.update_parameters([&](const std::string& name, auto& t) {
    const auto ends = [&](const std::string& suffix) {
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    const bool bn = name.find("bn") != std::string::npos || name.find("downsample.1") != std::string::npos;
    const double fan_in = double(t.size()) / double(t.dimension(0));
    for (Index i = 0; i < t.size(); ++i)
      t.data()[i] = T(bn && (ends("running_var") || ends(".weight")) ? uniform(rng)
                      : bn || ends(".bias")                           ? 0.1 * normal(rng)
                                                                      : std::sqrt(2.0 / fan_in) * normal(rng));
  });
}

// forward with conv2d's Winograd path on, and with it switched off (every conv through im2col).
template <class T>
std::pair<Tensor<T, 2>, Tensor<T, 2>> with_and_without_winograd(const ResNet<T>& model, const Tensor<T, 4>& x,
                                                                 const Context& ctx) {
  Tensor<T, 2> with = model.forward(x, ctx);
  detail::conv2d_winograd_enabled() = false;
  Tensor<T, 2> without = model.forward(x, ctx);
  detail::conv2d_winograd_enabled() = true;
  return {with, without};
}

template <class T>
void check_winograd_model(double rtol) {
  // layer1 (16 channels at 24x24, 72 tiles) and layer2's second conv (32 at 12x12, 18 tiles) take the
  // Winograd path; the stride-2 convs, 1x1 downsamples and layers 3-4 (4 tiles or fewer) do not.
  ResNetConfig c = ResNetConfig::resnet18();
  c.layers = {2, 1, 1, 1};
  c.widths = {16, 32, 32, 32};
  c.stem_width = 16;
  c.num_classes = 5;
  ResNet<T> model(c);
  randomize(model, 5);
  Tensor<T, 4> x(2, 3, 96, 96);
  std::mt19937 rng(6);
  std::normal_distribution<double> normal;
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = T(normal(rng));
  const auto layer1 = detail::conv2d_check({2, 16, 24, 24}, {16, 16, 3, 3}, -1, Conv2dOptions().padding(1));
  const auto layer2 = detail::conv2d_check({2, 32, 12, 12}, {32, 32, 3, 3}, -1, Conv2dOptions().padding(1));
  ASSERT_EQ(detail::conv2d_algorithm(layer1, true), detail::Conv2dAlgorithm::winograd);
  ASSERT_EQ(detail::conv2d_algorithm(layer2, true), detail::Conv2dAlgorithm::winograd);

  Context two(2);
  auto [with, without] = with_and_without_winograd(model, x, two);
  EXPECT_TRUE(test::all_close(with, without, rtol, 0));
  EXPECT_FALSE(test::all_close(with, without, 0, 0)) << "both runs took the same path";
  // The second forward runs on the cached transforms: the same numbers.
  EXPECT_TRUE(test::all_close(model.forward(x, two), with, 0, 0));
  // New weights are transformed anew (a stale transform would differ from the im2col run).
  model.update_parameters([](const std::string& name, auto& t) {
    if (name == "layer1.1.conv2.weight" || name == "layer2.0.conv2.weight") t = t * T(-1.5);
  });
  auto [with2, without2] = with_and_without_winograd(model, x, two);
  EXPECT_TRUE(test::all_close(with2, without2, rtol, 0));
  EXPECT_FALSE(test::all_close(with2, with, 1e-3, 0));
}

// A net wide enough for conv2d's Winograd path (3x3 stride-1 convs with >= 16 channels and tiles), whole,
// against the same model with Winograd switched off: the im2col path the torchvision tests above prove.
// Tolerances as there (float 1e-4 of the largest logit: Winograd's per-layer error is ~3e-6 of the scale;
// double 1e-10).
TEST(ResNet, WinogradLayersMatchIm2col) {
  check_winograd_model<float>(1e-4);
  check_winograd_model<double>(1e-10);
}

}  // namespace test_resnet

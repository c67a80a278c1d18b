// nn modules (Conv2d, BatchNorm2d, Linear) against torch.nn with the same state dict, and WeightLoader.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/reference.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/weights.hpp"
#include "fovea/nn/batch_norm.hpp"
#include "fovea/nn/conv2d.hpp"
#include "fovea/nn/linear.hpp"

namespace test_modules {  // one per test file: a directory's tests build as one translation unit

using namespace fovea;

const std::string kModules = std::string(FOVEA_REF_DIR) + "/resnet/modules.safetensors";

// torch.nn modules saved by ref_resnet.py under the prefixes conv, bn, fc.
template <class T>
struct Modules {
  Conv2d<T> conv{4, 6, {3, 2}, Conv2dOptions().stride({2, 1}).padding({1, 0}).dilation({1, 2}).groups(2)};
  BatchNorm2d<T> bn{5};
  Linear<T> fc{7, 5};

  void load(const SafeTensors& file) {
    WeightLoader<T> loader(file, "test modules");
    loader.expect_module(conv, "conv");
    loader.expect_module(bn, "bn");
    loader.expect_module(fc, "fc");
    loader.load();
  }
};

template <class T>
std::vector<std::string> names_of(const T& module, const std::string& prefix) {
  std::vector<std::string> out;
  module.named_tensors(prefix, [&](const std::string& name, const auto&) { out.push_back(name); });
  return out;
}

// Float tolerances: inputs are exact in float, so the error is float rounding of sums of at most 12 terms
// (conv) or 7 (linear) of size ~1, a few ulps of the output scale: 1e-5 relative leaves a wide margin and
// is still far below any indexing or parameter mix-up, which moves outputs by O(1).
template <class T>
void check_reference(double rtol) {
  Modules<T> m;
  m.load(SafeTensors::open(kModules));
  const auto conv_x = test::load_ref<T, 4>("resnet", "module_conv_input");
  const auto bn_x = test::load_ref<T, 4>("resnet", "module_bn_input");
  const auto fc_x = test::load_ref<T, 3>("resnet", "module_fc_input");
  EXPECT_TRUE(test::all_close(m.conv.forward(conv_x), test::load_ref<double, 4>("resnet", "module_conv_output"), rtol, 0));
  EXPECT_TRUE(test::all_close(m.bn.forward(bn_x), test::load_ref<double, 4>("resnet", "module_bn_output"), rtol, 0));
  EXPECT_TRUE(test::all_close(m.fc.forward(fc_x), test::load_ref<double, 3>("resnet", "module_fc_output"), rtol, 0));
  // Thread count must not matter beyond rounding.
  Context one(1);
  EXPECT_TRUE(test::all_close(m.conv.forward(conv_x, one), test::load_ref<double, 4>("resnet", "module_conv_output"),
                              rtol, 0));
}

TEST(Modules, MatchTorchFloat) { check_reference<float>(1e-5); }
// Double: the reference is float64 PyTorch on the same values; only summation order differs.
TEST(Modules, MatchTorchDouble) { check_reference<double>(1e-12); }

TEST(Modules, DefaultsAreTorchs) {
  BatchNorm2d<float> bn(3);
  Tensor<float, 4> x(2, 3, 2, 2);
  x.setRandom();
  // Fresh BatchNorm2d: weight 1, bias 0, mean 0, var 1, so y = x / sqrt(1 + eps).
  const Tensor<float, 4> y = bn.forward(x);
  for (Index i = 0; i < x.size(); ++i) EXPECT_NEAR(y.data()[i], x.data()[i] / std::sqrt(1.0f + 1e-5f), 1e-6f);
  EXPECT_FLOAT_EQ(bn.eps, 1e-5f);
  Conv2d<double> conv(3, 4, 5);
  EXPECT_EQ(conv.weight.dimensions(), (std::array<Index, 4>{4, 3, 5, 5}));
  EXPECT_TRUE(conv.has_bias());
  EXPECT_EQ(conv.in_channels(), 3);
  EXPECT_EQ(conv.out_channels(), 4);
  Linear<float> fc(6, 2, false);
  EXPECT_FALSE(fc.has_bias());
  EXPECT_EQ(fc.in_features(), 6);
  EXPECT_EQ(fc.out_features(), 2);
}

TEST(Modules, NamedTensorsUseTorchNames) {
  EXPECT_EQ(names_of(Conv2d<float>(3, 4, 3), "layer1.0.conv1"),
            (std::vector<std::string>{"layer1.0.conv1.weight", "layer1.0.conv1.bias"}));
  EXPECT_EQ(names_of(Conv2d<float>(3, 4, 3, {}, false), "conv1"), (std::vector<std::string>{"conv1.weight"}));
  EXPECT_EQ(names_of(BatchNorm2d<float>(4), "bn1"),
            (std::vector<std::string>{"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"}));
  EXPECT_EQ(BatchNorm2d<float>(4).ignored_names("bn1"), (std::vector<std::string>{"bn1.num_batches_tracked"}));
  EXPECT_EQ(names_of(Linear<double>(3, 2), ""), (std::vector<std::string>{"weight", "bias"}));
  EXPECT_TRUE(Linear<double>(3, 2).ignored_names("fc").empty());
}

TEST(Modules, NoBiasForwardMatchesZeroBias) {
  Conv2d<double> a(2, 3, 3, Conv2dOptions().padding(1), false), b(2, 3, 3, Conv2dOptions().padding(1), true);
  a.weight.setRandom();
  b.weight = a.weight;
  Tensor<double, 4> x(1, 2, 5, 4);
  x.setRandom();
  EXPECT_TRUE(test::all_close(a.forward(x), b.forward(x), 0, 1e-14));
  Linear<double> la(4, 3, false), lb(4, 3, true);
  la.weight.setRandom();
  lb.weight = la.weight;
  Tensor<double, 2> v(2, 4);
  v.setRandom();
  EXPECT_TRUE(test::all_close(la.forward(v), lb.forward(v), 0, 1e-14));
}

TEST(Modules, BadConstructionThrows) {
  EXPECT_TRUE(test::throws_with<ShapeError>([] { Conv2d<float>(4, 6, 3, Conv2dOptions().groups(4)); },
                                            {"Conv2d:", "groups dividing", "in_channels 4", "out_channels 6", "groups 4"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([] { Conv2d<float>(0, 6, 3); }, {"Conv2d:", "in_channels 0"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([] { Conv2d<float>(3, 6, {3, 0}); }, {"Conv2d:", "kernel_size (3, 0)"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([] { BatchNorm2d<float>(0); }, {"BatchNorm2d:", "num_features >= 1", "got 0"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([] { BatchNorm2d<float>(3, 0.f); }, {"BatchNorm2d:", "eps > 0"}));
  EXPECT_TRUE(test::throws_with<ShapeError>([] { Linear<double>(0, 3); }, {"Linear:", "in_features 0", "out_features 3"}));
}

TEST(Modules, BadInputThrowsFromTheOp) {
  Conv2d<float> conv(3, 4, 3);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { conv.forward(Tensor<float, 4>(1, 2, 8, 8)); },
                                            {"conv2d", "(1, 2, 8, 8)", "(4, 3, 3, 3)"}));
  BatchNorm2d<float> bn(3);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { bn.forward(Tensor<float, 4>(1, 4, 2, 2)); },
                                            {"batch_norm", "(1, 4, 2, 2)"}));
  Linear<float> fc(5, 2);
  EXPECT_TRUE(test::throws_with<ShapeError>([&] { fc.forward(Tensor<float, 2>(3, 4)); }, {"linear", "(3, 4)", "(2, 5)"}));
}

// WeightLoader: every missing, unexpected, mis-shaped and non-float entry in one message, nothing copied.
TEST(WeightLoader, ReportsEveryProblemAtOnce) {
  Tensor<float, 4> w4(6, 2, 3, 2);
  w4.setConstant(1);
  Tensor<float, 1> six(6), five(5), wrong(4);
  six.setConstant(2);
  five.setConstant(3);
  wrong.setConstant(4);
  SafeTensorsWriter writer;
  writer.add("conv.weight", w4).add("conv.bias", six);             // conv: fine
  writer.add("bn.weight", wrong).add("bn.bias", five);              // bn.weight mis-shaped
  writer.add("bn.running_var", five);                               // bn.running_mean missing
  writer.add("extra.thing", five).add("fc.junk", six);              // two unexpected; fc.* missing
  const SafeTensors file = SafeTensors::from_bytes(writer.to_bytes(), "'bad.safetensors'");
  Modules<float> m;
  const auto before = m.conv.weight;
  EXPECT_TRUE(test::throws_with<FormatError>(
      [&] { m.load(file); },
      {"'bad.safetensors' does not match test modules", "3 missing [bn.running_mean, fc.weight, fc.bias]",
       "2 unexpected [", "extra.thing", "fc.junk", "1 shape mismatch [bn.weight: expected (5), file has (4)]"}));
  // All or nothing: the conv's fine tensors were not copied either.
  EXPECT_TRUE(test::all_close(m.conv.weight, before, 0, 0));
}

TEST(WeightLoader, AcceptsIgnoredNamesAndOtherFloatDtypes) {
  // num_batches_tracked (I64 in torch's files) is accepted; F64 parameters convert to float.
  Tensor<double, 1> w(3), b(3), mean(3), var(3);
  w.setValues({1, 2, 3});
  b.setValues({0.5, 0, -0.5});
  mean.setValues({0, 1, 2});
  var.setValues({1, 4, 9});
  SafeTensorsWriter writer;
  writer.add("norm.weight", w).add("norm.bias", b).add("norm.running_mean", mean).add("norm.running_var", var);
  const std::string bytes = writer.to_bytes();
  BatchNorm2d<float> bn(3);
  WeightLoader<float> loader(SafeTensors::from_bytes(bytes), "bn");  // the loader keeps the file alive
  loader.expect_module(bn, "norm");
  loader.load();
  EXPECT_FLOAT_EQ(bn.weight(2), 3.f);
  EXPECT_FLOAT_EQ(bn.running_var(1), 4.f);
  // The torch file with int64 num_batches_tracked loads too (the reference test above) ...
  // ... and a non-float parameter is reported, not read as garbage.
  BatchNorm2d<float> bn2(5);
  const SafeTensors torch_file = SafeTensors::open(kModules);
  WeightLoader<float> bad(torch_file, "BatchNorm2d(5)");
  bad.expect_module(bn2, "bn");
  Tensor<float, 0> nbt;
  bad.expect("bn.num_batches_tracked", nbt);  // asked for as a float tensor: it is I64
  EXPECT_TRUE(test::throws_with<FormatError>([&] { bad.load(); },
                                             {"bn.num_batches_tracked: I64", "unexpected [conv.weight, conv.bias"}));
}

}  // namespace test_modules

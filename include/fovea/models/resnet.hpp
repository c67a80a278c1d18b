#pragma once
// torchvision's ResNet family (resnet18..152, ResNeXt, wide ResNet) in inference mode, loading torchvision
// state_dict names from SafeTensors.
//
// The model keeps the modules with PyTorch's names and parameters (what is loaded and can be edited), and a
// fused copy for speed: every BatchNorm is folded into the conv before it, so each conv runs once through
// detail::conv2d_into with its bias, the block's residual add and its ReLU in one pass over the output.
// A fused 3x3 stride-1 conv that conv2d runs with Winograd keeps its transformed weights (made on first
// use, 4x the conv's weights) for the model's lifetime, so a forward transforms no weights; they are
// dropped with the fused copy whenever the parameters change.
#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/weights.hpp"
#include "fovea/nn/batch_norm.hpp"
#include "fovea/nn/conv2d.hpp"
#include "fovea/nn/linear.hpp"
#include "fovea/ops/conv2d.hpp"
#include "fovea/ops/linear.hpp"
#include "fovea/ops/norm.hpp"
#include "fovea/ops/pooling.hpp"

namespace fovea {

enum class ResNetBlock { basic, bottleneck };

// torchvision.models.ResNet(block, layers, num_classes, groups, width_per_group) plus what its constructor
// hard-codes (stem and stage widths, input channels), so that narrow test models use the same code.
struct ResNetConfig {
  ResNetBlock block = ResNetBlock::basic;
  std::array<Index, 4> layers{2, 2, 2, 2};          // blocks per stage
  std::array<Index, 4> widths{64, 128, 256, 512};   // torchvision's `planes` per stage
  Index stem_width = 64;                            // conv1's output channels
  Index num_classes = 1000;
  Index in_channels = 3;
  Index groups = 1;             // of the bottleneck's 3x3 conv (ResNeXt)
  Index width_per_group = 64;   // bottleneck width = planes * width_per_group / 64 * groups
  double eps = 1e-5;            // every BatchNorm2d's

  static ResNetConfig resnet18() { return {ResNetBlock::basic, {2, 2, 2, 2}}; }
  static ResNetConfig resnet34() { return {ResNetBlock::basic, {3, 4, 6, 3}}; }
  static ResNetConfig resnet50() { return {ResNetBlock::bottleneck, {3, 4, 6, 3}}; }
  static ResNetConfig resnet101() { return {ResNetBlock::bottleneck, {3, 4, 23, 3}}; }
  static ResNetConfig resnet152() { return {ResNetBlock::bottleneck, {3, 8, 36, 3}}; }
  static ResNetConfig resnext50_32x4d() {
    ResNetConfig c = resnet50();
    c.groups = 32;
    c.width_per_group = 4;
    return c;
  }
  static ResNetConfig wide_resnet50_2() {
    ResNetConfig c = resnet50();
    c.width_per_group = 128;
    return c;
  }

  Index expansion() const { return block == ResNetBlock::bottleneck ? 4 : 1; }
  // Channels inside a block of `stage` (0..3): Bottleneck's int(planes * (width_per_group / 64.)) * groups.
  Index inner_width(int stage) const {
    return block == ResNetBlock::bottleneck ? widths[stage] * width_per_group / 64 * groups : widths[stage];
  }
  Index out_channels(int stage) const { return widths[stage] * expansion(); }
  Index num_features() const { return out_channels(3); }  // fc's input

  // f(stage 0..3, block, in_channels, inner width, out_channels, stride, has downsample) for every block,
  // as torchvision's _make_layer builds them: stride 2 and a downsample on the first block of stages 1-3,
  // and on layer1's first block when the channel count changes (every bottleneck net).
  template <class F>
  void for_each_block(F&& f) const {
    Index in = stem_width;
    for (int s = 0; s < 4; ++s)
      for (Index b = 0; b < layers[s]; ++b) {
        const Index stride = b == 0 && s > 0 ? 2 : 1, out = out_channels(s);
        f(s, b, in, inner_width(s), out, stride, stride != 1 || in != out);
        in = out;
      }
  }

  std::string str() const {
    return detail::cat("ResNet(", block == ResNetBlock::bottleneck ? "bottleneck" : "basic", ", layers ",
                       list(layers), ", widths ", list(widths), ", stem_width ", stem_width, ", in_channels ",
                       in_channels, ", num_classes ", num_classes, ", groups ", groups, ", width_per_group ",
                       width_per_group, ")");
  }

  // Throws ShapeError on a configuration torchvision would refuse or that builds an empty layer.
  void validate() const {
    auto bad = [&](const std::string& why) { detail::throw_shape("ResNetConfig: ", why, "; config ", str()); };
    for (int s = 0; s < 4; ++s) {
      if (layers[s] < 1) bad(detail::cat("expected layers[", s, "] >= 1, but got ", layers[s]));
      if (widths[s] < 1) bad(detail::cat("expected widths[", s, "] >= 1, but got ", widths[s]));
    }
    if (stem_width < 1 || num_classes < 1 || in_channels < 1 || groups < 1 || width_per_group < 1)
      bad("expected stem_width, num_classes, in_channels, groups and width_per_group >= 1");
    if (block == ResNetBlock::basic && (groups != 1 || width_per_group != 64))
      bad(detail::cat("BasicBlock supports only groups 1 and width_per_group 64 (as torchvision), but got groups ",
                      groups, ", width_per_group ", width_per_group));
    for (int s = 0; s < 4; ++s)
      if (inner_width(s) < 1)
        bad(detail::cat("stage ", s, " has bottleneck width ", widths[s], " * ", width_per_group, " / 64 * ", groups,
                        " = 0"));
    if (!(eps > 0)) bad(detail::cat("expected eps > 0, but got ", eps));
  }

 private:
  static std::string list(const std::array<Index, 4>& a) {
    return detail::cat('[', a[0], ", ", a[1], ", ", a[2], ", ", a[3], ']');
  }
};

// Reads a ResNetConfig off torchvision state_dict names and shapes: block type from layer1.0.conv3's
// presence, blocks per stage from the layerS.B names, widths and groups from the conv shapes, classes
// from fc. Throws FormatError naming what is absent or inconsistent. The shapes are then still checked in
// full by the loader, so inference may trust the first block of each stage.
inline ResNetConfig infer_resnet_config(const std::map<std::string, std::vector<Index>>& shapes,
                                        const std::string& source = "the state dict") {
  const char* op = "infer_resnet_config";
  auto shape = [&](const std::string& name, std::size_t rank) -> const std::vector<Index>& {
    auto it = shapes.find(name);
    if (it == shapes.end())
      detail::throw_format(op, ": ", source, " has no '", name, "', so it is not a torchvision ResNet state dict");
    if (it->second.size() != rank)
      detail::throw_format(op, ": ", source, ": expected '", name, "' of rank ", rank, ", but got shape ",
                           detail::dims_str(it->second));
    return it->second;
  };
  ResNetConfig c;
  const auto& stem = shape("conv1.weight", 4);
  c.stem_width = stem[0];
  c.in_channels = stem[1];
  c.num_classes = shape("fc.weight", 2)[0];
  c.block = shapes.count("layer1.0.conv3.weight") ? ResNetBlock::bottleneck : ResNetBlock::basic;
  for (int s = 0; s < 4; ++s) {
    const std::string layer = detail::cat("layer", s + 1, ".");
    Index blocks = 0;
    while (shapes.count(detail::cat(layer, blocks, ".conv1.weight"))) ++blocks;
    if (blocks == 0) shape(layer + "0.conv1.weight", 4);  // throws, naming it
    c.layers[s] = blocks;
    if (c.block == ResNetBlock::basic) {
      c.widths[s] = shape(layer + "0.conv1.weight", 4)[0];
    } else {
      const Index out = shape(layer + "0.conv3.weight", 4)[0];
      if (out % 4 != 0)
        detail::throw_format(op, ": ", source, ": ", layer, "0.conv3.weight has ", out,
                             " output channels, not a multiple of the bottleneck expansion 4");
      c.widths[s] = out / 4;
    }
  }
  if (c.block == ResNetBlock::bottleneck) {
    // groups from the 3x3 conv's input channels per group; width_per_group as the smallest value that
    // reproduces torchvision's int(planes * width_per_group / 64) per group in every stage.
    const Index width = shape("layer1.0.conv1.weight", 4)[0], per_group = shape("layer1.0.conv2.weight", 4)[1];
    if (per_group < 1 || width % per_group != 0)
      detail::throw_format(op, ": ", source, ": layer1.0.conv1.weight has ", width,
                           " output channels, not a multiple of layer1.0.conv2.weight.size(1) = ", per_group);
    c.groups = width / per_group;
    c.width_per_group = (per_group * 64 + c.widths[0] - 1) / c.widths[0];
    for (int s = 0; s < 4; ++s) {
      const Index got = shape(detail::cat("layer", s + 1, ".0.conv1.weight"), 4)[0];
      if (c.inner_width(s) != got)
        detail::throw_format(op, ": ", source, ": no groups / width_per_group fits every stage: layer", s + 1,
                             ".0.conv1.weight has ", got, " output channels, but groups ", c.groups,
                             " and width_per_group ", c.width_per_group, " give ", c.inner_width(s));
    }
  }
  return c;
}

inline ResNetConfig infer_resnet_config(const SafeTensors& file) {
  std::map<std::string, std::vector<Index>> shapes;
  for (const auto& info : file.tensors()) shapes[info.name] = std::vector<Index>(info.shape.begin(), info.shape.end());
  return infer_resnet_config(shapes, file.label());
}

// Every state_dict name of the config's model (without num_batches_tracked) and its shape, allocating no
// weights: to check a file, or to reason about full-size models cheaply.
inline std::map<std::string, std::vector<Index>> resnet_state_dict_shapes(const ResNetConfig& c) {
  c.validate();
  std::map<std::string, std::vector<Index>> m;
  auto bn = [&](const std::string& p, Index ch) {
    for (const char* n : {".weight", ".bias", ".running_mean", ".running_var"}) m[p + n] = {ch};
  };
  m["conv1.weight"] = {c.stem_width, c.in_channels, 7, 7};
  bn("bn1", c.stem_width);
  c.for_each_block([&](int s, Index b, Index in, Index width, Index out, Index, bool downsample) {
    const std::string p = detail::cat("layer", s + 1, ".", b, ".");
    if (c.block == ResNetBlock::basic) {
      m[p + "conv1.weight"] = {width, in, 3, 3};
      m[p + "conv2.weight"] = {out, width, 3, 3};
    } else {
      m[p + "conv1.weight"] = {width, in, 1, 1};
      m[p + "conv2.weight"] = {width, width / c.groups, 3, 3};
      m[p + "conv3.weight"] = {out, width, 1, 1};
      bn(p + "bn3", out);
    }
    bn(p + "bn1", width);
    bn(p + "bn2", c.block == ResNetBlock::basic ? out : width);
    if (downsample) {
      m[p + "downsample.0.weight"] = {out, in, 1, 1};
      bn(p + "downsample.1", out);
    }
  });
  m["fc.weight"] = {c.num_classes, c.num_features()};
  m["fc.bias"] = {c.num_classes};
  return m;
}

// One torchvision BasicBlock or Bottleneck, with its state_dict names.
template <class T>
struct ResNetUnit {
  Conv2d<T> conv1;
  BatchNorm2d<T> bn1;
  Conv2d<T> conv2;
  BatchNorm2d<T> bn2;
  std::optional<Conv2d<T>> conv3;       // bottleneck only
  std::optional<BatchNorm2d<T>> bn3;
  std::optional<Conv2d<T>> downsample_conv;  // downsample.0, when the shape or stride changes
  std::optional<BatchNorm2d<T>> downsample_bn;  // downsample.1

  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  std::vector<std::string> ignored_names(const std::string& prefix) const {
    std::vector<std::string> out;
    auto add = [&](const BatchNorm2d<T>& bn, const char* name) {
      for (auto& n : bn.ignored_names(prefix + "." + name)) out.push_back(n);
    };
    add(bn1, "bn1");
    add(bn2, "bn2");
    if (bn3) add(*bn3, "bn3");
    if (downsample_bn) add(*downsample_bn, "downsample.1");
    return out;
  }

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& p, F& f) {
    self.conv1.named_tensors(p + ".conv1", f);
    self.bn1.named_tensors(p + ".bn1", f);
    self.conv2.named_tensors(p + ".conv2", f);
    self.bn2.named_tensors(p + ".bn2", f);
    if (self.conv3) self.conv3->named_tensors(p + ".conv3", f);
    if (self.bn3) self.bn3->named_tensors(p + ".bn3", f);
    if (self.downsample_conv) self.downsample_conv->named_tensors(p + ".downsample.0", f);
    if (self.downsample_bn) self.downsample_bn->named_tensors(p + ".downsample.1", f);
  }
};

template <class T>
class ResNet {
 public:
  // Built from a config with torch's module defaults (zero convs and fc, identity BatchNorm); load or
  // update_parameters fill it.
  explicit ResNet(const ResNetConfig& config) : config_(checked(config)), conv1_(make_stem(config_)),
                                                  bn1_(config_.stem_width, T(config_.eps)),
                                                  fc_(config_.num_features(), config_.num_classes) {
    for (int s = 0; s < 4; ++s)  // reserved: units are not nothrow-movable, so growth would copy weights
      units_[s].reserve(std::size_t(config_.layers[s]));
    const T eps = T(config_.eps);
    config_.for_each_block([&](int s, Index, Index in, Index width, Index out, Index stride, bool downsample) {
      if (config_.block == ResNetBlock::basic) {
        units_[s].push_back({Conv2d<T>(in, width, 3, Conv2dOptions().stride(stride).padding(1), false),
                             BatchNorm2d<T>(width, eps), Conv2d<T>(width, out, 3, Conv2dOptions().padding(1), false),
                             BatchNorm2d<T>(out, eps), std::nullopt, std::nullopt, std::nullopt, std::nullopt});
      } else {
        units_[s].push_back(
            {Conv2d<T>(in, width, 1, {}, false), BatchNorm2d<T>(width, eps),
             Conv2d<T>(width, width, 3, Conv2dOptions().stride(stride).padding(1).groups(config_.groups), false),
             BatchNorm2d<T>(width, eps), std::nullopt, std::nullopt, std::nullopt, std::nullopt});
        units_[s].back().conv3.emplace(width, out, 1, Conv2dOptions(), false);
        units_[s].back().bn3.emplace(out, eps);
      }
      if (downsample) {
        units_[s].back().downsample_conv.emplace(in, out, 1, Conv2dOptions().stride(stride), false);
        units_[s].back().downsample_bn.emplace(out, eps);
      }
    });
    fold();
  }

  // A model whose config is read off the file's names and shapes, with the file's weights.
  static ResNet from_safetensors(const SafeTensors& file) {
    const ResNetConfig config = infer_resnet_config(file);
    check_model_fits(file, resnet_state_dict_shapes(config), config.str());  // before a size read off it is allocated
    ResNet m(config);
    m.load(file);
    return m;
  }
  static ResNet from_safetensors(const std::string& path) { return from_safetensors(SafeTensors::open(path)); }

  // Fills every parameter and running statistic from torchvision state_dict names. The file must hold
  // exactly this config's tensors (num_batches_tracked may be present): otherwise one FormatError lists
  // every missing and unexpected name and every shape mismatch, and the model is left unchanged.
  void load(const SafeTensors& file) {
    WeightLoader<T> loader(file, config_.str());
    named_tensors_impl(*this, [&](const std::string& name, auto& t) { loader.expect(name, t); });
    for (const std::string& n : bn1_.ignored_names("bn1")) loader.ignore(n);
    for (int s = 0; s < 4; ++s)
      for (std::size_t b = 0; b < units_[s].size(); ++b)
        for (const std::string& n : units_[s][b].ignored_names(unit_name(s, b))) loader.ignore(n);
    loader.load();
    fold();
  }

  // f(name, const tensor&) for every state_dict tensor, in torchvision's order.
  template <class F>
  void named_tensors(F&& f) const { named_tensors_impl(*this, f); }

  // f(name, tensor&) for every state_dict tensor, to edit values in place; the fused copy is rebuilt
  // after. Shapes are fixed by the config: if f resizes a tensor, ShapeError names it and forward keeps
  // running the previous fused weights until an update or load succeeds.
  template <class F>
  void update_parameters(F&& f) {
    detail::update_keeping_shapes([&](auto&& g) { named_tensors_impl(*this, g); }, f, "ResNet", config_.str());
    fold();
  }

  const ResNetConfig& config() const { return config_; }
  const Conv2d<T>& conv1() const { return conv1_; }
  const BatchNorm2d<T>& bn1() const { return bn1_; }
  const std::vector<ResNetUnit<T>>& layer(int stage) const { return units_.at(std::size_t(stage)); }
  const Linear<T>& fc() const { return fc_; }

  // x (N, C, H, W) -> logits (N, num_classes), as torchvision's model.eval()(x).
  Tensor<T, 2> forward(const Tensor<T, 4>& x, const Context& ctx = default_context()) const {
    Tensor<T, 4> feats;
    Tensor<T, 2> logits;
    run(x, feats, &logits, ctx);
    return logits;
  }

  // x (N, C, H, W) -> layer4's output (N, num_features, h, w), before pooling.
  Tensor<T, 4> features(const Tensor<T, 4>& x, const Context& ctx = default_context()) const {
    Tensor<T, 4> feats;
    run(x, feats, nullptr, ctx);
    return feats;
  }

  // Both at the cost of one forward: logits (N, classes) and layer4's output (N, C, h, w).
  std::pair<Tensor<T, 2>, Tensor<T, 4>> forward_with_features(const Tensor<T, 4>& x,
                                                              const Context& ctx = default_context()) const {
    std::pair<Tensor<T, 2>, Tensor<T, 4>> out;
    run(x, out.second, &out.first, ctx);
    return out;
  }

  // Layer4's spatial size for an input of H x W.
  Size2 feature_size(Size2 input) const {
    Index h = input.h, w = input.w;
    h = conv_output_size(h, 7, 2, 3, 1), w = conv_output_size(w, 7, 2, 3, 1);
    h = conv_output_size(h, 3, 2, 1, 1), w = conv_output_size(w, 3, 2, 1, 1);  // max pool, same arithmetic
    for (int s = 1; s < 4; ++s) h = conv_output_size(h, 3, 2, 1, 1), w = conv_output_size(w, 3, 2, 1, 1);
    return {h, w};
  }

 private:
  struct FusedConv {
    Tensor<T, 4> weight;
    Tensor<T, 1> bias;
    Conv2dOptions options;
    detail::WinogradWeights<T> winograd;  // weight transformed, when Winograd runs this conv
  };
  struct FusedUnit {
    FusedConv c1, c2;
    std::optional<FusedConv> c3, downsample;
  };

  static const ResNetConfig& checked(const ResNetConfig& c) {
    c.validate();
    return c;
  }
  static Conv2d<T> make_stem(const ResNetConfig& c) {
    return Conv2d<T>(c.in_channels, c.stem_width, 7, Conv2dOptions().stride(2).padding(3), false);
  }
  static std::string unit_name(int s, std::size_t b) { return detail::cat("layer", s + 1, ".", b); }

  template <class Self, class F>
  static void named_tensors_impl(Self& self, F&& f) {
    self.conv1_.named_tensors("conv1", f);
    self.bn1_.named_tensors("bn1", f);
    for (int s = 0; s < 4; ++s)
      for (std::size_t b = 0; b < self.units_[s].size(); ++b) self.units_[s][b].named_tensors(unit_name(s, b), f);
    self.fc_.named_tensors("fc", f);
  }

  static FusedConv fuse(const Conv2d<T>& conv, const BatchNorm2d<T>& bn) {
    auto f = detail::fold_batch_norm(conv.weight, conv.has_bias() ? &conv.bias : nullptr, bn.running_mean,
                                     bn.running_var, bn.weight, bn.bias, bn.eps);
    return {std::move(f.weight), std::move(f.bias), conv.options, {}};
  }

  // Rebuilds the fused convs from the modules; all or nothing, so a failed fold leaves the old copy.
  void fold() {
    FusedConv stem = fuse(conv1_, bn1_);
    std::array<std::vector<FusedUnit>, 4> units;
    for (int s = 0; s < 4; ++s) {
      units[s].reserve(units_[s].size());  // as in the constructor: growth would copy
      for (const ResNetUnit<T>& u : units_[s]) {
        FusedUnit f{fuse(u.conv1, u.bn1), fuse(u.conv2, u.bn2), std::nullopt, std::nullopt};
        if (u.conv3) f.c3 = fuse(*u.conv3, *u.bn3);
        if (u.downsample_conv) f.downsample = fuse(*u.downsample_conv, *u.downsample_bn);
        units[s].push_back(std::move(f));
      }
    }
    stem_ = std::move(stem);
    fused_ = std::move(units);
  }

  // (N, C, H, W) -> (N, O, OH, OW) for one fused conv; the output size.
  static std::array<Index, 3> out_shape(const FusedConv& c, Index h, Index w) {
    const Conv2dOptions& o = c.options;
    return {c.weight.dimension(0),
            conv_output_size(h, c.weight.dimension(2), o.stride_.h, o.padding_.h, o.dilation_.h),
            conv_output_size(w, c.weight.dimension(3), o.stride_.w, o.padding_.w, o.dilation_.w)};
  }

  void run(const Tensor<T, 4>& x, Tensor<T, 4>& features, Tensor<T, 2>* logits, const Context& ctx) const {
    const Index n = x.dimension(0), c = x.dimension(1), h = x.dimension(2), w = x.dimension(3);
    if (c != config_.in_channels)
      detail::throw_shape("ResNet.forward: expected input channels == conv1.weight.size(1) (", config_.in_channels,
                          "), but got ", c, "; input ", detail::shape_str(x), ", conv1.weight ",
                          detail::shape_str(conv1_.weight));
    // The 7x7/2 stem (padding 3) and the 3x3/2 max pool (padding 1) each turn any size >= 1 into >= 1,
    // and so does every later stage: like torchvision, any non-empty image runs.
    if (n < 1 || h < 1 || w < 1)
      detail::throw_shape("ResNet.forward: expected a non-empty input (N, C, H, W) with N, H, W >= 1, but got ",
                          detail::shape_str(x));

    // Stem: conv1 + bn1 + relu fused, then the max pool op.
    const auto s0 = out_shape(stem_, h, w);
    Tensor<T, 4> stem_out(n, s0[0], s0[1], s0[2]);
    detail::conv2d_into(x.data(), n, c, h, w, stem_.weight, stem_.bias.data(), stem_.options, stem_out.data(), true,
                        static_cast<const T*>(nullptr), ctx, &stem_.winograd);
    const Tensor<T, 4> pooled = max_pool2d(stem_out, Pool2dOptions(3).stride(2).padding(1), ctx);

    // Four buffers sized for the largest activation: the block input is one, the other three hold the
    // block's intermediates and its output, which then becomes the next input.
    Index largest = 0;
    {
      Index hh = pooled.dimension(2), ww = pooled.dimension(3);
      for (int s = 0; s < 4; ++s)
        for (const FusedUnit& u : fused_[s]) {
          const auto o1 = out_shape(u.c1, hh, ww);
          auto o = out_shape(u.c2, o1[1], o1[2]);
          largest = std::max({largest, o1[0] * o1[1] * o1[2], o[0] * o[1] * o[2]});
          if (u.c3) o = out_shape(*u.c3, o[1], o[2]);
          largest = std::max(largest, o[0] * o[1] * o[2]);
          if (u.downsample) {
            const auto d = out_shape(*u.downsample, hh, ww);
            largest = std::max(largest, d[0] * d[1] * d[2]);
          }
          hh = o[1], ww = o[2];
        }
    }
    std::array<Tensor<T, 1>, 4> buf;
    for (auto& b : buf) b.resize(largest * n);

    const T* cur = pooled.data();
    int cur_buf = -1;  // index into buf, or -1 for `pooled`
    Index ch = pooled.dimension(1), hh = pooled.dimension(2), ww = pooled.dimension(3);
    const T* none = nullptr;
    for (int s = 0; s < 4; ++s)
      for (std::size_t b = 0; b < fused_[s].size(); ++b) {
        const FusedUnit& u = fused_[s][b];
        const bool last = s == 3 && b + 1 == fused_[s].size();
        int free[3], k = 0;
        for (int i = 0; i < 4 && k < 3; ++i)
          if (i != cur_buf) free[k++] = i;
        T* t0 = buf[free[0]].data();
        T* t1 = buf[free[1]].data();
        T* t2 = buf[free[2]].data();

        const auto o1 = out_shape(u.c1, hh, ww);
        detail::conv2d_into(cur, n, ch, hh, ww, u.c1.weight, u.c1.bias.data(), u.c1.options, t0, true, none, ctx,
                            &u.c1.winograd);
        const auto o2 = out_shape(u.c2, o1[1], o1[2]);
        const T* identity = cur;
        if (u.downsample) {
          detail::conv2d_into(cur, n, ch, hh, ww, u.downsample->weight, u.downsample->bias.data(),
                              u.downsample->options, t2, false, none, ctx, &u.downsample->winograd);
          identity = t2;
        }
        std::array<Index, 3> out_dims;
        T* out;
        if (u.c3) {
          // Bottleneck: t0 -> conv2 -> t1 -> conv3 (+identity, relu) -> t0 (t0 is free again by then).
          detail::conv2d_into(t0, n, o1[0], o1[1], o1[2], u.c2.weight, u.c2.bias.data(), u.c2.options, t1, true, none,
                              ctx, &u.c2.winograd);
          out_dims = out_shape(*u.c3, o2[1], o2[2]);
          if (last) features.resize(n, out_dims[0], out_dims[1], out_dims[2]);
          out = last ? features.data() : t0;
          detail::conv2d_into(t1, n, o2[0], o2[1], o2[2], u.c3->weight, u.c3->bias.data(), u.c3->options, out, true,
                              identity, ctx, &u.c3->winograd);
          cur_buf = free[0];
        } else {
          // Basic: t0 -> conv2 (+identity, relu) -> t1.
          out_dims = o2;
          if (last) features.resize(n, out_dims[0], out_dims[1], out_dims[2]);
          out = last ? features.data() : t1;
          detail::conv2d_into(t0, n, o1[0], o1[1], o1[2], u.c2.weight, u.c2.bias.data(), u.c2.options, out, true,
                              identity, ctx, &u.c2.winograd);
          cur_buf = free[1];
        }
        cur = out;
        ch = out_dims[0], hh = out_dims[1], ww = out_dims[2];
      }

    if (!logits) return;
    // avgpool + flatten + fc, through the ops torchvision's forward names.
    const Tensor<T, 4> pooled_features = adaptive_avg_pool2d(features, {1, 1}, ctx);
    const Tensor<T, 2> flat = pooled_features.reshape(std::array<Index, 2>{n, ch});
    *logits = fc_.forward(flat, ctx);
  }

  ResNetConfig config_;
  Conv2d<T> conv1_;
  BatchNorm2d<T> bn1_;
  std::array<std::vector<ResNetUnit<T>>, 4> units_;
  Linear<T> fc_;
  FusedConv stem_;
  std::array<std::vector<FusedUnit>, 4> fused_;
};

}  // namespace fovea

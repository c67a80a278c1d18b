#pragma once
// Conv2d module: torch.nn.Conv2d's parameters (weight (O, C/groups, kH, kW), bias (O)) around the conv2d op.
// When conv2d runs a call with Winograd (3x3 stride-1 convs, see ops/winograd.hpp), the module keeps the
// transformed weights for the next calls; they are checked against `weight` on every call, so editing
// `weight` in place (a loader does) is always seen.
#include <algorithm>
#include <string>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/ops/conv2d.hpp"

namespace fovea {

template <class T>
class Conv2d {
 public:
  // As torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias),
  // with stride..groups in `options`. Parameters start at zero: the module holds loaded weights.
  Conv2d(Index in_channels, Index out_channels, Size2 kernel_size, const Conv2dOptions& opts = {},
         bool with_bias = true)
      : options(opts) {
    const Index g = opts.groups_;
    if (in_channels < 1 || out_channels < 1 || kernel_size.h < 1 || kernel_size.w < 1 || g < 1 ||
        in_channels % g != 0 || out_channels % g != 0)
      detail::throw_shape("Conv2d: expected in_channels, out_channels, kernel_size and groups >= 1 with groups "
                          "dividing both channel counts, but got in_channels ", in_channels, ", out_channels ",
                          out_channels, ", kernel_size ", detail::size2_str(kernel_size), ", groups ", g);
    weight.resize(out_channels, in_channels / g, kernel_size.h, kernel_size.w);
    weight.setZero();
    bias.resize(with_bias ? out_channels : 0);
    bias.setZero();
  }

  Index in_channels() const { return weight.dimension(1) * options.groups_; }
  Index out_channels() const { return weight.dimension(0); }
  Size2 kernel_size() const { return {weight.dimension(2), weight.dimension(3)}; }
  bool has_bias() const { return bias.size() > 0; }

  // x (N, C, H, W) -> (N, O, OH, OW)
  Tensor<T, 4> forward(const Tensor<T, 4>& x, const Context& ctx = default_context()) const {
    return detail::conv2d_impl(x, weight, has_bias() ? &bias : nullptr, options, ctx, &winograd_);
  }

  // f(name, tensor) for each of torch's state_dict entries: `prefix.weight`, `prefix.bias`.
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  // state_dict entries a file may hold that this module accepts and does not use: none.
  std::vector<std::string> ignored_names(const std::string& /*prefix*/) const { return {}; }

  Conv2dOptions options;
  Tensor<T, 4> weight;  // (O, C/groups, kH, kW)
  Tensor<T, 1> bias;    // (O), or empty when built without bias

 private:
  detail::WinogradWeights<T> winograd_{true};  // verified on every use: `weight` is public

  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    f(p + "weight", self.weight);
    if (self.has_bias()) f(p + "bias", self.bias);
  }
};

}  // namespace fovea

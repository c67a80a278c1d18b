#pragma once
// Linear module: torch.nn.Linear's parameters (weight (out, in), bias (out)) around the linear op.
#include <string>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/ops/linear.hpp"

namespace fovea {

template <class T>
class Linear {
 public:
  // Parameters start at zero: the module holds loaded weights; it is not a trainer's initialiser.
  Linear(Index in_features, Index out_features, bool with_bias = true)
      : weight(std::max<Index>(out_features, 0), std::max<Index>(in_features, 0)),
        bias(with_bias ? std::max<Index>(out_features, 0) : 0) {
    if (in_features < 1 || out_features < 1)
      detail::throw_shape("Linear: expected in_features >= 1 and out_features >= 1, but got in_features ",
                          in_features, ", out_features ", out_features);
    weight.setZero();
    bias.setZero();
  }

  Index in_features() const { return weight.dimension(1); }
  Index out_features() const { return weight.dimension(0); }
  bool has_bias() const { return bias.size() > 0; }

  // x (..., in) -> (..., out)
  template <int R>
  Tensor<T, R> forward(const Tensor<T, R>& x, const Context& ctx = default_context()) const {
    return has_bias() ? linear(x, weight, bias, ctx) : linear(x, weight, ctx);
  }

  // f(name, tensor) for each of torch's state_dict entries: `prefix.weight`, `prefix.bias`.
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  // state_dict entries a file may hold that this module accepts and does not use: none.
  std::vector<std::string> ignored_names(const std::string& /*prefix*/) const { return {}; }

  Tensor<T, 2> weight;  // (out, in)
  Tensor<T, 1> bias;    // (out), or empty when built without bias

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    f(p + "weight", self.weight);
    if (self.has_bias()) f(p + "bias", self.bias);
  }
};

}  // namespace fovea

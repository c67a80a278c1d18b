#pragma once
// LayerNorm module: torch.nn.LayerNorm(dim, eps)'s parameters (weight (D), bias (D)) around layer_norm.
#include <string>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/ops/norm.hpp"

namespace fovea {

template <class T>
class LayerNorm {
 public:
  // Starts as torch's default (weight 1, bias 0), so an unloaded module is the plain normalisation.
  explicit LayerNorm(Index dim, double epsilon = 1e-5)
      : weight(std::max<Index>(dim, 0)), bias(std::max<Index>(dim, 0)), eps(T(epsilon)) {
    if (dim < 1) detail::throw_shape("LayerNorm: expected dim >= 1, but got ", dim);
    if (!(epsilon >= 0)) detail::throw_shape("LayerNorm: expected eps >= 0, but got ", epsilon, "; dim ", dim);
    weight.setConstant(T(1));
    bias.setZero();
  }

  Index dim() const { return weight.dimension(0); }

  // x (..., D) -> (..., D)
  template <int R>
  Tensor<T, R> forward(const Tensor<T, R>& x, const Context& ctx = default_context()) const {
    return layer_norm(x, weight, bias, eps, ctx);
  }

  // x (..., D) -> out (..., D), out resized only when its shape differs; mean and rstd (rows) are scratch.
  template <int R>
  void forward_into(const Tensor<T, R>& x, Tensor<T, R>& out, Tensor<T, 1>& mean, Tensor<T, 1>& rstd,
                    const Context& ctx = default_context()) const {
    detail::layer_norm_forward(x, weight, bias, eps, out, mean, rstd, ctx);
  }

  // f(name, tensor) for `prefix.weight`, `prefix.bias`.
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  std::vector<std::string> ignored_names(const std::string& /*prefix*/) const { return {}; }

  Tensor<T, 1> weight;  // (D)
  Tensor<T, 1> bias;    // (D)
  T eps;

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    f(p + "weight", self.weight);
    f(p + "bias", self.bias);
  }
};

}  // namespace fovea

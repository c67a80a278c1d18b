#pragma once
// BatchNorm2d module: torch.nn.BatchNorm2d's parameters and running statistics, in inference (eval) mode.
#include <string>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/ops/norm.hpp"

namespace fovea {

template <class T>
class BatchNorm2d {
 public:
  // Starts as torch does: weight 1, bias 0, running_mean 0, running_var 1 (the identity up to eps).
  explicit BatchNorm2d(Index num_features, T eps_ = T(1e-5))
      : eps(eps_),
        weight(std::max<Index>(num_features, 0)),
        bias(std::max<Index>(num_features, 0)),
        running_mean(std::max<Index>(num_features, 0)),
        running_var(std::max<Index>(num_features, 0)) {
    if (num_features < 1) detail::throw_shape("BatchNorm2d: expected num_features >= 1, but got ", num_features);
    if (!(eps_ > T(0))) detail::throw_shape("BatchNorm2d: expected eps > 0, but got ", eps_);
    weight.setConstant(T(1));
    bias.setZero();
    running_mean.setZero();
    running_var.setConstant(T(1));
  }

  Index num_features() const { return weight.dimension(0); }

  // x (N, C, H, W) -> same shape, normalised with the running statistics (model.eval() semantics).
  Tensor<T, 4> forward(const Tensor<T, 4>& x, const Context& ctx = default_context()) const {
    return batch_norm(x, running_mean, running_var, weight, bias, eps, ctx);
  }

  // f(name, tensor) for each of torch's state_dict entries: weight, bias, running_mean, running_var.
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  // num_batches_tracked only counts training steps; files carry it, inference has no use for it.
  std::vector<std::string> ignored_names(const std::string& prefix) const {
    return {prefix.empty() ? std::string("num_batches_tracked") : prefix + ".num_batches_tracked"};
  }

  T eps;
  Tensor<T, 1> weight, bias;               // (C): gamma, beta
  Tensor<T, 1> running_mean, running_var;  // (C)

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    f(p + "weight", self.weight);
    f(p + "bias", self.bias);
    f(p + "running_mean", self.running_mean);
    f(p + "running_var", self.running_var);
  }
};

}  // namespace fovea

#pragma once
// Mlp module: fc1 -> activation -> fc2, the transformer's feed-forward block (timm's Mlp, torchvision's
// MLPBlock, Hugging Face's CLIPMLP / SiglipMLP). Both products run through detail::fused_linear
// (ops/attention.hpp): fc1's bias and activation are applied tile by tile while the tile is in cache, and
// fc2 can accumulate onto a residual stream, so neither GELU nor the residual add costs a pass of its own.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/gemm.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/nn/linear.hpp"
#include "fovea/ops/activation.hpp"
#include "fovea/ops/attention.hpp"  // detail::fused_linear

namespace fovea {

// The activation choice of Mlp, EncoderBlock and AttentionPoolHead: gelu (erf form), gelu_tanh, quick_gelu
// (CLIP), and the others ops/activation.hpp knows.
using Activation = detail::Activation;

// A config's hidden_act -> Activation: "gelu"; "gelu_pytorch_tanh", "gelu_new", "gelu_fast" (all the tanh
// form); "quick_gelu"; "relu"; "silu" / "swish". ShapeError for anything else.
inline Activation activation_from_name(std::string_view name) {
  if (name == "gelu") return Activation::gelu;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast" || name == "gelu_tanh")
    return Activation::gelu_tanh;
  if (name == "quick_gelu") return Activation::quick_gelu;
  if (name == "relu") return Activation::relu;
  if (name == "silu" || name == "swish") return Activation::silu;
  detail::throw_shape("activation_from_name: expected one of gelu, gelu_pytorch_tanh, gelu_new, gelu_fast, quick_gelu, "
                      "relu, silu, but got '", name, "'");
}

// fc1 and fc2 names inside an Mlp, per family.
struct MlpNames {
  std::string fc1 = "fc1", fc2 = "fc2";
  static MlpNames timm() { return {}; }                          // mlp.fc1, mlp.fc2 (also Hugging Face CLIP/SigLIP)
  static MlpNames torchvision() { return {"0", "3"}; }           // MLPBlock: mlp.0, mlp.3
  static MlpNames torchvision_legacy() { return {"linear_1", "linear_2"}; }  // checkpoints before torchvision 0.12
};

template <class T>
class Mlp {
 public:
  // Parameters start at zero: the module holds loaded weights.
  Mlp(Index in_features, Index hidden_features, Index out_features, Activation activation = Activation::gelu,
      MlpNames mlp_names = {}, bool bias = true)
      : fc1(checked(in_features, hidden_features, out_features), hidden_features, bias),
        fc2(hidden_features, out_features, bias),
        act(activation),
        names(std::move(mlp_names)) {}

  Index in_features() const { return fc1.in_features(); }
  Index hidden_features() const { return fc1.out_features(); }
  Index out_features() const { return fc2.out_features(); }

  // x (..., in) -> (..., out): fc2(act(fc1(x))).
  template <int R>
  Tensor<T, R> forward(const Tensor<T, R>& x, const Context& ctx = default_context()) const {
    check_input(x);
    auto dims = x.dimensions();
    dims[R - 1] = out_features();
    Tensor<T, R> out(dims);
    std::vector<T> hidden;
    forward_rows(x.data(), x.size() / in_features(), out.data(), false, hidden, ctx);
    return out;
  }

  // x rows (M, in) -> out rows (M, out); with accumulate, out += the result (a residual connection).
  // `hidden` is scratch (M, hidden), grown as needed. No checks: for modules that checked already.
  void forward_rows(const T* x, Index m, T* out, bool accumulate, std::vector<T>& hidden, const Context& ctx) const {
    const Index in = in_features(), h = hidden_features(), o = out_features();
    if (hidden.size() < std::size_t(m * h)) hidden.resize(std::size_t(m * h));
    detail::fused_linear(x, in, m, in, fc1.weight.data(), h, fc1.has_bias() ? fc1.bias.data() : nullptr, act, false,
                         hidden.data(), h, ctx);
    detail::fused_linear(hidden.data(), h, m, h, fc2.weight.data(), o, fc2.has_bias() ? fc2.bias.data() : nullptr,
                         Activation::identity, accumulate, out, o, ctx);
  }

  // f(name, tensor) for `prefix.<fc1>.weight`, `.bias`, `prefix.<fc2>.weight`, `.bias` (names per MlpNames).
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  std::vector<std::string> ignored_names(const std::string& /*prefix*/) const { return {}; }

  Linear<T> fc1;  // (hidden, in)
  Linear<T> fc2;  // (out, hidden)
  Activation act;
  MlpNames names;

 private:
  static Index checked(Index in, Index hidden, Index out) {
    if (in < 1 || hidden < 1 || out < 1)
      detail::throw_shape("Mlp: expected in_features, hidden_features and out_features >= 1, but got ", in, ", ",
                          hidden, ", ", out);
    return in;
  }
  template <int R>
  void check_input(const Tensor<T, R>& x) const {
    static_assert(R >= 1, "Mlp: input of rank >= 1");
    if (x.dimension(R - 1) != in_features())
      detail::throw_shape("Mlp: expected input.size(-1) == in_features (", in_features(), "), but got ",
                          x.dimension(R - 1), "; input ", detail::shape_str(x));
    if (x.size() == 0)
      detail::throw_shape("Mlp: expected a non-empty input, but got a zero dimension; input ", detail::shape_str(x));
  }
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    self.fc1.named_tensors(p + self.names.fc1, f);
    self.fc2.named_tensors(p + self.names.fc2, f);
  }
};

}  // namespace fovea

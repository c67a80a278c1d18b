#pragma once
// PatchEmbed module: a ViT's patch projection, the Conv2d(C, D, kernel_size=P, stride=P) of every family
// (torchvision conv_proj, timm patch_embed.proj, Hugging Face embeddings.patch_embedding), around the
// patch_embed op. The class token and position embeddings are the model's (their names and shapes differ
// per family: (1, 1, D) vs (D), (1, S, D) vs (S, D)); forward takes them to build the sequence in one pass.
#include <string>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/ops/patch_embed.hpp"

namespace fovea {

template <class T>
class PatchEmbed {
 public:
  // Parameters start at zero: the module holds loaded weights.
  PatchEmbed(Index in_channels, Index embed_dim, Size2 patch_size, bool with_bias = true) {
    if (in_channels < 1 || embed_dim < 1 || patch_size.h < 1 || patch_size.w < 1)
      detail::throw_shape("PatchEmbed: expected in_channels, embed_dim and patch_size >= 1, but got in_channels ",
                          in_channels, ", embed_dim ", embed_dim, ", patch_size ", detail::size2_str(patch_size));
    weight.resize(embed_dim, in_channels, patch_size.h, patch_size.w);
    weight.setZero();
    bias.resize(with_bias ? embed_dim : 0);
    bias.setZero();
  }

  Index in_channels() const { return weight.dimension(1); }
  Index embed_dim() const { return weight.dimension(0); }
  Size2 patch_size() const { return {weight.dimension(2), weight.dimension(3)}; }
  bool has_bias() const { return bias.size() > 0; }
  // The patch grid of an image (remainders dropped, as the conv does).
  Size2 grid(Size2 image) const { return {image.h / weight.dimension(2), image.w / weight.dimension(3)}; }

  // images (N, C, H, W) -> tokens (N, gh * gw, D)
  Tensor<T, 3> forward(const Tensor<T, 4>& images, const Context& ctx = default_context()) const {
    return patch_embed(images, weight, bias, ctx);
  }

  // images (N, C, H, W), prefix tokens (P, D), pos_embed (P + L, D) | (L, D) | (0, D) -> (N, P + L, D); see
  // patch_embed in ops/patch_embed.hpp.
  Tensor<T, 3> forward(const Tensor<T, 4>& images, const Tensor<T, 2>& prefix_tokens, const Tensor<T, 2>& pos_embed,
                       const Context& ctx = default_context()) const {
    return patch_embed(images, weight, bias, prefix_tokens, pos_embed, ctx);
  }

  // f(name, tensor) for `prefix.weight`, `prefix.bias`, as the family's Conv2d names them.
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  std::vector<std::string> ignored_names(const std::string& /*prefix*/) const { return {}; }

  Tensor<T, 4> weight;  // (D, C, P, P)
  Tensor<T, 1> bias;    // (D), or empty (CLIP's patch embedding has none)

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    f(p + "weight", self.weight);
    if (self.has_bias()) f(p + "bias", self.bias);
  }
};

}  // namespace fovea

#pragma once
// EncoderBlock: the pre-norm transformer block of every ViT family,
//   x = x + attn(norm1(x));  x = x + mlp(norm2(x))
// (torchvision's EncoderBlock, timm's Block without layer scale, Hugging Face's CLIPEncoderLayer and
// SiglipEncoderLayer).
//
// How it runs, per block: LayerNorm into scratch -> one fused QKV product -> the streaming attention kernel
// reading q, k, v in place -> out_proj accumulated onto x (the residual add is the GEMM's beta = 1) ->
// LayerNorm -> fc1 with bias and GELU applied tile by tile -> fc2 accumulated onto x. x is updated in place
// and nothing of size N x N or per-call weight copies exist; scratch lives in an EncoderWorkspace that a
// model shares across its blocks, so a forward allocates nothing after the first.
//
// For the ViT model: names are a per-family table, not a copy of the weights. Build every block with the
// family's EncoderBlockNames and let the loader visit it under the block's prefix:
//   EncoderBlock<T> blk(D, H, mlp_hidden, Activation::gelu, 1e-6, EncoderBlockNames::torchvision());
//   loader.expect_module(blk, "encoder.layers.encoder_layer_0");   // torchvision
//   // timm: EncoderBlockNames::timm(), "blocks.0"; HF CLIP / SigLIP: EncoderBlockNames::hf(),
//   // "vision_model.encoder.layers.0" (q_proj / k_proj / v_proj stay three (D, D) tensors: see nn/attention.hpp)
// then run the stack in place with one workspace:
//   EncoderWorkspace<T> ws;  for (auto& b : blocks) b.forward_(x, ws, mask, ctx);
// Torchvision checkpoints from before 0.12 name the MLP mlp.linear_1 / mlp.linear_2:
// EncoderBlockNames::torchvision_legacy() (or set names.mlp_names after looking at the file).
#include <string>
#include <utility>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/nn/attention.hpp"
#include "fovea/nn/layer_norm.hpp"
#include "fovea/nn/mlp.hpp"
#include "fovea/ops/attention.hpp"

namespace fovea {

// Submodule names of an EncoderBlock, and the names inside its attention and MLP.
struct EncoderBlockNames {
  std::string norm1 = "ln_1", attn = "self_attention", norm2 = "ln_2", mlp = "mlp";
  AttentionNames attn_names = AttentionNames::torch();
  MlpNames mlp_names = MlpNames::torchvision();

  // torchvision.models.vision_transformer.EncoderBlock: ln_1, self_attention.in_proj_weight, ...,
  // self_attention.out_proj, ln_2, mlp.0, mlp.3.
  static EncoderBlockNames torchvision() { return {}; }
  static EncoderBlockNames torchvision_legacy() {
    EncoderBlockNames n;
    n.mlp_names = MlpNames::torchvision_legacy();
    return n;
  }
  // timm.models.vision_transformer.Block: norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2.
  static EncoderBlockNames timm() { return {"norm1", "attn", "norm2", "mlp", AttentionNames::timm(), MlpNames::timm()}; }
  // Hugging Face CLIPEncoderLayer / SiglipEncoderLayer: layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2,
  // mlp.fc1, mlp.fc2.
  static EncoderBlockNames hf() {
    return {"layer_norm1", "self_attn", "layer_norm2", "mlp", AttentionNames::hf(), MlpNames::timm()};
  }
};

// Scratch shared by every block (and pooling head) of a model: sized by the first forward, reused after.
template <class T>
struct EncoderWorkspace {
  Tensor<T, 3> normed;
  Tensor<T, 1> mean, rstd;
  detail::AttentionBuffers<T> attn;
  std::vector<T> hidden;
};

template <class T>
class EncoderBlock {
 public:
  // dim D, heads H (dividing D), MLP width, the MLP's activation and both LayerNorms' eps; parameters start
  // at zero (LayerNorms at weight 1, bias 0).
  EncoderBlock(Index dim, Index num_heads, Index mlp_hidden, Activation act = Activation::gelu, double eps = 1e-6,
               EncoderBlockNames block_names = EncoderBlockNames::torchvision())
      : norm1(dim, eps),
        attn(dim, num_heads, true, block_names.attn_names),
        norm2(dim, eps),
        mlp(dim, mlp_hidden, dim, act, block_names.mlp_names),
        names(std::move(block_names)) {}

  Index dim() const { return norm1.dim(); }
  Index num_heads() const { return attn.num_heads(); }

  // x (B, N, D) -> (B, N, D); mask broadcast to (B, H, N, N).
  Tensor<T, 3> forward(const Tensor<T, 3>& x, const AttentionMask<T>& mask = {}, const Context& ctx = default_context()) const {
    Tensor<T, 3> y = x;
    EncoderWorkspace<T> ws;
    forward_(y, ws, mask, ctx);
    return y;
  }
  Tensor<T, 3> forward(const Tensor<T, 3>& x, const Context& ctx) const { return forward(x, AttentionMask<T>(), ctx); }

  // In place: x (B, N, D) becomes the block's output; ws holds the scratch between calls.
  void forward_(Tensor<T, 3>& x, EncoderWorkspace<T>& ws, const AttentionMask<T>& mask = {},
                const Context& ctx = default_context()) const {
    const Index B = x.dimension(0), N = x.dimension(1), D = dim();
    const std::string shapes = detail::cat("; input ", detail::shape_str(x));
    if (x.dimension(2) != D)
      detail::throw_shape("EncoderBlock: expected input.size(2) == dim (", D, "), but got ", x.dimension(2), shapes);
    if (x.size() == 0) detail::throw_shape("EncoderBlock: expected a non-empty input, but got a zero dimension", shapes);
    detail::check_attention_mask("EncoderBlock", mask, B, num_heads(), N, N,
                                 mask.empty() ? shapes : detail::cat(shapes, ", attn_mask ", mask.str()));
    // x = x + attn(norm1(x))
    norm1.forward_into(x, ws.normed, ws.mean, ws.rstd, ctx);
    attn.self_attention_rows(ws.normed.data(), B, N, mask, x.data(), true, ws.attn, ctx);
    // x = x + mlp(norm2(x))
    norm2.forward_into(x, ws.normed, ws.mean, ws.rstd, ctx);
    mlp.forward_rows(ws.normed.data(), B * N, x.data(), true, ws.hidden, ctx);
  }

  // f(name, tensor) for every parameter, named per EncoderBlockNames under `prefix`.
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  std::vector<std::string> ignored_names(const std::string& /*prefix*/) const { return {}; }

  LayerNorm<T> norm1;
  MultiheadAttention<T> attn;
  LayerNorm<T> norm2;
  Mlp<T> mlp;
  EncoderBlockNames names;

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    self.norm1.named_tensors(p + self.names.norm1, f);
    self.attn.named_tensors(p + self.names.attn, f);
    self.norm2.named_tensors(p + self.names.norm2, f);
    self.mlp.named_tensors(p + self.names.mlp, f);
  }
};

}  // namespace fovea

#pragma once
// Pooling of a token sequence (B, N, D) into one vector per image:
//   token_pool            a single token (the class token of torchvision, timm and CLIP)
//   mean_pool             the mean over tokens [start, N) (timm's global_pool="avg", skipping prefix tokens)
//   AttentionPoolHead     SigLIP's multihead attention pooling (MAP) head: a learned probe attends over the
//                         tokens, then a pre-norm MLP residual (Hugging Face's
//                         SiglipMultiheadAttentionPoolingHead, names probe, attention.in_proj_weight, ...,
//                         layernorm, mlp.fc1, mlp.fc2)
// Projections after pooling (CLIP's visual_projection) are a bias-free Linear (nn/linear.hpp).
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/nn/attention.hpp"
#include "fovea/nn/encoder_block.hpp"
#include "fovea/nn/layer_norm.hpp"
#include "fovea/nn/mlp.hpp"

namespace fovea {

// x (B, N, D) -> (B, D): x[:, index].
template <class T>
Tensor<T, 2> token_pool(const Tensor<T, 3>& x, Index index = 0) {
  const Index B = x.dimension(0), N = x.dimension(1), D = x.dimension(2);
  if (index < 0 || index >= N || B == 0 || D == 0)
    detail::throw_shape("token_pool: expected 0 <= index < x.size(1) (", N, ") and a non-empty x, but got index ", index,
                        "; x ", detail::shape_str(x));
  Tensor<T, 2> out(B, D);
  for (Index b = 0; b < B; ++b) std::copy_n(x.data() + (b * N + index) * D, D, out.data() + b * D);
  return out;
}

// x (B, N, D) -> (B, D): the mean of x[:, start:] (start = the number of prefix tokens to leave out).
// Sums in double, so float keeps full precision for any N.
template <class T>
Tensor<T, 2> mean_pool(const Tensor<T, 3>& x, Index start = 0, const Context& ctx = default_context()) {
  const Index B = x.dimension(0), N = x.dimension(1), D = x.dimension(2);
  if (start < 0 || start >= N || B == 0 || D == 0)
    detail::throw_shape("mean_pool: expected 0 <= start < x.size(1) (", N, ") and a non-empty x, but got start ", start,
                        "; x ", detail::shape_str(x));
  Tensor<T, 2> out(B, D);
  ctx.parallel_for(B, [&](Index b) {
    std::vector<double> acc(std::size_t(D), 0.0);
    for (Index n = start; n < N; ++n) {
      const T* row = x.data() + (b * N + n) * D;
      for (Index d = 0; d < D; ++d) acc[std::size_t(d)] += double(row[d]);
    }
    for (Index d = 0; d < D; ++d) out(b, d) = T(acc[std::size_t(d)] / double(N - start));
  });
  return out;
}

template <class T>
class AttentionPoolHead {
 public:
  // SigLIP's head: width D, heads H, MLP width, LayerNorm eps, MLP activation (SigLIP's hidden_act is
  // gelu_pytorch_tanh). Parameters start at zero (LayerNorm at weight 1, bias 0).
  AttentionPoolHead(Index dim, Index num_heads, Index mlp_hidden, double eps = 1e-6,
                    Activation act = Activation::gelu_tanh)
      : probe(1, 1, std::max<Index>(dim, 0)),
        attention(dim, num_heads, true, AttentionNames::torch()),
        layernorm(dim, eps),
        mlp(dim, mlp_hidden, dim, act, MlpNames::timm()) {
    probe.setZero();
  }

  Index dim() const { return layernorm.dim(); }

  // x (B, N, D) -> (B, D): out = attention(probe, x, x); out = out + mlp(layernorm(out)); out[:, 0]. The mask,
  // if any, broadcasts to (B, H, 1, N) (e.g. a key-padding mask (B, 1, 1, N)).
  Tensor<T, 2> forward(const Tensor<T, 3>& x, const AttentionMask<T>& mask = {}, const Context& ctx = default_context()) const {
    EncoderWorkspace<T> ws;
    return forward(x, ws, mask, ctx);
  }
  Tensor<T, 2> forward(const Tensor<T, 3>& x, const Context& ctx) const { return forward(x, AttentionMask<T>(), ctx); }

  // The same with a model's shared scratch.
  Tensor<T, 2> forward(const Tensor<T, 3>& x, EncoderWorkspace<T>& ws, const AttentionMask<T>& mask = {},
                       const Context& ctx = default_context()) const {
    const Index B = x.dimension(0), N = x.dimension(1), D = dim();
    const std::string shapes = detail::cat("; input ", detail::shape_str(x), ", probe ", detail::shape_str(probe));
    if (x.dimension(2) != D)
      detail::throw_shape("AttentionPoolHead: expected input.size(2) == dim (", D, "), but got ", x.dimension(2), shapes);
    if (x.size() == 0)
      detail::throw_shape("AttentionPoolHead: expected a non-empty input, but got a zero dimension", shapes);
    if (probe.dimension(0) != 1 || probe.dimension(1) != 1 || probe.dimension(2) != D)
      detail::throw_shape("AttentionPoolHead: expected probe of shape (1, 1, ", D, "), but got ", detail::shape_str(probe),
                          shapes);
    detail::check_attention_mask("AttentionPoolHead", mask, B, attention.num_heads(), 1, N,
                                 mask.empty() ? shapes : detail::cat(shapes, ", attn_mask ", mask.str()));
    // The probe is one query shared by the batch: projected once, read with batch stride 0.
    Tensor<T, 3> out(B, 1, D);
    attention.cross_attention_rows(probe.data(), 1, 1, x.data(), B, N, mask, out.data(), false, ws.attn, ctx);
    layernorm.forward_into(out, ws.normed, ws.mean, ws.rstd, ctx);
    mlp.forward_rows(ws.normed.data(), B, out.data(), true, ws.hidden, ctx);
    return Tensor<T, 2>(out.reshape(std::array<Index, 2>{B, D}));
  }

  // f(name, tensor): `prefix.probe`, `prefix.attention.in_proj_weight`, ..., `prefix.layernorm.*`,
  // `prefix.mlp.fc1.*`, `prefix.mlp.fc2.*`.
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  std::vector<std::string> ignored_names(const std::string& /*prefix*/) const { return {}; }

  Tensor<T, 3> probe;  // (1, 1, D)
  MultiheadAttention<T> attention;
  LayerNorm<T> layernorm;
  Mlp<T> mlp;

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    f(p + "probe", self.probe);
    self.attention.named_tensors(p + "attention", f);
    self.layernorm.named_tensors(p + "layernorm", f);
    self.mlp.named_tensors(p + "mlp", f);
  }
};

}  // namespace fovea

#pragma once
// MultiheadAttention module: torch.nn.MultiheadAttention(embed_dim, num_heads, bias, batch_first=True) in
// inference, with the parameter layouts of every ViT family:
//   fused     in_proj_weight (3D, D), in_proj_bias (3D): torch names, or timm's qkv.weight / qkv.bias
//   separate  q_proj, k_proj, v_proj Linear (D, D) each: Hugging Face CLIP / SigLIP
// and out_proj (torch, HF) or proj (timm). AttentionNames picks both the layout and the names.
//
// Self-attention is one fused projection: a (B N, D) x (D, 3D) product whose output rows are (3, H, Dh),
// which the attention kernel reads in place (no split, no transpose), writing its result straight into
// (B, N, H Dh) rows for out_proj. The separate layout runs three (D, D) products into the same (B N, 3D)
// buffer (column blocks of it), so it needs no concatenated copy of the weights (the file's tensors are
// loaded where they run, and named_tensors still names them as the file does) and the kernel sees the same
// layout; the flops are identical and each product keeps the GEMM rate (measured: a ViT-B block at batch 1
// takes 24.5 ms on one thread in either layout).
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/nn/linear.hpp"
#include "fovea/nn/mlp.hpp"
#include "fovea/ops/attention.hpp"

namespace fovea {

// Names (relative to the module's prefix) and layout of the q/k/v and output projections.
struct AttentionNames {
  bool separate_qkv = false;
  std::string in_proj_weight = "in_proj_weight", in_proj_bias = "in_proj_bias";  // fused layout
  std::string q_proj = "q_proj", k_proj = "k_proj", v_proj = "v_proj";           // separate layout (Linear prefixes)
  std::string out_proj = "out_proj";

  // torch.nn.MultiheadAttention (torchvision's self_attention, SigLIP's pooling head): in_proj_weight,
  // in_proj_bias, out_proj.weight, out_proj.bias.
  static AttentionNames torch() { return {}; }
  // timm's Attention: qkv.weight, qkv.bias, proj.weight, proj.bias.
  static AttentionNames timm() {
    AttentionNames n;
    n.in_proj_weight = "qkv.weight", n.in_proj_bias = "qkv.bias", n.out_proj = "proj";
    return n;
  }
  // Hugging Face CLIPAttention / SiglipAttention: q_proj, k_proj, v_proj, out_proj (each .weight, .bias).
  static AttentionNames hf() {
    AttentionNames n;
    n.separate_qkv = true;
    return n;
  }
};

namespace detail {

// Scratch of the attention modules, reused across calls and layers: projections and attention output.
template <class T>
struct AttentionBuffers {
  std::vector<T> qkv, attn;
  void reserve(std::size_t qkv_n, std::size_t attn_n) {
    if (qkv.size() < qkv_n) qkv.resize(qkv_n);
    if (attn.size() < attn_n) attn.resize(attn_n);
  }
};

}  // namespace detail

template <class T>
class MultiheadAttention {
 public:
  // As torch.nn.MultiheadAttention(embed_dim, num_heads, bias); parameters start at zero.
  MultiheadAttention(Index embed_dim, Index num_heads, bool bias = true,
                     AttentionNames attention_names = AttentionNames::torch())
      : out_proj(checked(embed_dim, num_heads), embed_dim, bias), names(std::move(attention_names)), num_heads_(num_heads) {
    if (names.separate_qkv) {
      q_proj.emplace(embed_dim, embed_dim, bias);
      k_proj.emplace(embed_dim, embed_dim, bias);
      v_proj.emplace(embed_dim, embed_dim, bias);
    } else {
      in_proj_weight.resize(3 * embed_dim, embed_dim);
      in_proj_weight.setZero();
      in_proj_bias.resize(bias ? 3 * embed_dim : 0);
      in_proj_bias.setZero();
    }
  }

  Index embed_dim() const { return out_proj.out_features(); }
  Index num_heads() const { return num_heads_; }
  Index head_dim() const { return embed_dim() / num_heads_; }
  // The parameter layout, fixed at construction (names may be respelled later, not change layout).
  bool separate_qkv() const { return q_proj.has_value(); }

  // x (B, N, D) -> (B, N, D): self-attention, mask broadcast to (B, H, N, N).
  Tensor<T, 3> forward(const Tensor<T, 3>& x, const AttentionMask<T>& mask = {}, const Context& ctx = default_context()) const {
    check_input("input", x);
    check_mask(mask, x.dimension(0), x.dimension(1), x.dimension(1), detail::cat("; input ", detail::shape_str(x)));
    Tensor<T, 3> out(x.dimensions());
    detail::AttentionBuffers<T> buf;
    self_attention_rows(x.data(), x.dimension(0), x.dimension(1), mask, out.data(), false, buf, ctx);
    return out;
  }
  Tensor<T, 3> forward(const Tensor<T, 3>& x, const Context& ctx) const { return forward(x, AttentionMask<T>(), ctx); }

  // query (B, Nq, D), key_value (B, Nk, D) -> (B, Nq, D): cross-attention (keys and values from the same
  // tensor, as the pooling heads use it), mask broadcast to (B, H, Nq, Nk).
  Tensor<T, 3> forward(const Tensor<T, 3>& query, const Tensor<T, 3>& key_value, const AttentionMask<T>& mask = {},
                       const Context& ctx = default_context()) const {
    check_input("query", query);
    check_input("key_value", key_value);
    const std::string shapes =
        detail::cat("; query ", detail::shape_str(query), ", key_value ", detail::shape_str(key_value));
    if (key_value.dimension(0) != query.dimension(0))
      detail::throw_shape("MultiheadAttention: expected key_value.size(0) == query.size(0) (", query.dimension(0),
                          "), but got ", key_value.dimension(0), shapes);
    check_mask(mask, query.dimension(0), query.dimension(1), key_value.dimension(1), shapes);
    Tensor<T, 3> out(query.dimensions());
    detail::AttentionBuffers<T> buf;
    cross_attention_rows(query.data(), query.dimension(0), query.dimension(1), key_value.data(), key_value.dimension(0),
                         key_value.dimension(1), mask, out.data(), false, buf, ctx);
    return out;
  }
  Tensor<T, 3> forward(const Tensor<T, 3>& query, const Tensor<T, 3>& key_value, const Context& ctx) const {
    return forward(query, key_value, AttentionMask<T>(), ctx);
  }

  // x rows (B, N, D) -> out rows (B, N, D), or out += (residual). No checks beyond the mask's (the caller's).
  void self_attention_rows(const T* x, Index B, Index N, const AttentionMask<T>& mask, T* out, bool accumulate,
                           detail::AttentionBuffers<T>& buf, const Context& ctx) const {
    const Index D = embed_dim(), M = B * N;
    buf.reserve(std::size_t(M * 3 * D), std::size_t(M * D));
    T* qkv = buf.qkv.data();
    project(x, M, 0, 3, qkv, 3 * D, ctx);
    const Index Dh = head_dim();
    detail::AttentionArgs<T> a{B,
                               num_heads_,
                               N,
                               N,
                               Dh,
                               Dh,
                               {qkv, N * 3 * D, Dh, 3 * D},
                               {qkv + D, N * 3 * D, Dh, 3 * D},
                               {qkv + 2 * D, N * 3 * D, Dh, 3 * D},
                               {buf.attn.data(), N * D, Dh, D},
                               detail::default_attention_scale<T>(Dh)};
    detail::attention_forward(a, mask, ctx);
    output_projection(buf.attn.data(), M, out, accumulate, ctx);
  }

  // query rows (Bq, Nq, D) with Bq == B or 1 (one query set shared by the batch, e.g. a learned probe),
  // key_value rows (B, Nk, D) -> out rows (B, Nq, D), or out += (residual). No checks beyond the mask's.
  void cross_attention_rows(const T* query, Index Bq, Index Nq, const T* key_value, Index B, Index Nk,
                            const AttentionMask<T>& mask, T* out, bool accumulate, detail::AttentionBuffers<T>& buf,
                            const Context& ctx) const {
    const Index D = embed_dim(), Dh = head_dim();
    // qkv holds q (Bq Nq, D) then k|v (B Nk, 2D); attn holds the heads' output (B Nq, D).
    buf.reserve(std::size_t(Bq * Nq * D + B * Nk * 2 * D), std::size_t(B * Nq * D));
    T* q = buf.qkv.data();
    T* kv = q + Bq * Nq * D;
    project(query, Bq * Nq, 0, 1, q, D, ctx);
    project(key_value, B * Nk, 1, 2, kv, 2 * D, ctx);
    detail::AttentionArgs<T> a{B,
                               num_heads_,
                               Nq,
                               Nk,
                               Dh,
                               Dh,
                               {q, Bq == 1 ? 0 : Nq * D, Dh, D},
                               {kv, Nk * 2 * D, Dh, 2 * D},
                               {kv + D, Nk * 2 * D, Dh, 2 * D},
                               {buf.attn.data(), Nq * D, Dh, D},
                               detail::default_attention_scale<T>(Dh)};
    detail::attention_forward(a, mask, ctx);
    output_projection(buf.attn.data(), B * Nq, out, accumulate, ctx);
  }

  // f(name, tensor) for every parameter, named per AttentionNames.
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  std::vector<std::string> ignored_names(const std::string& /*prefix*/) const { return {}; }

  Tensor<T, 2> in_proj_weight;  // (3D, D), rows q, k, v; empty in the separate layout
  Tensor<T, 1> in_proj_bias;    // (3D), or empty (no bias, or separate layout)
  std::optional<Linear<T>> q_proj, k_proj, v_proj;  // (D, D) each in the separate layout
  Linear<T> out_proj;           // (D, D)
  AttentionNames names;

 private:
  static Index checked(Index d, Index h) {
    if (d < 1 || h < 1 || d % h != 0)
      detail::throw_shape("MultiheadAttention: expected embed_dim >= 1 divisible by num_heads >= 1, but got embed_dim ", d,
                          ", num_heads ", h);
    return d;
  }

  // x (..., D) rank 3 with D == embed_dim and no zero dimension.
  void check_input(const char* what, const Tensor<T, 3>& x) const {
    if (x.dimension(2) != embed_dim())
      detail::throw_shape("MultiheadAttention: expected ", what, ".size(2) == embed_dim (", embed_dim(), "), but got ",
                          x.dimension(2), "; ", what, " ", detail::shape_str(x));
    if (x.size() == 0)
      detail::throw_shape("MultiheadAttention: expected a non-empty ", what, ", but got a zero dimension; ", what, " ",
                          detail::shape_str(x));
  }

  void check_mask(const AttentionMask<T>& mask, Index B, Index Nq, Index Nk, const std::string& shapes) const {
    detail::check_attention_mask("MultiheadAttention", mask, B, num_heads_, Nq, Nk,
                                 mask.empty() ? shapes : detail::cat(shapes, ", attn_mask ", mask.str()));
  }

  // Projections `first` .. first + count - 1 of (q, k, v) of x rows (M, D) -> out (M, count D), row stride ldo.
  void project(const T* x, Index M, int first, int count, T* out, Index ldo, const Context& ctx) const {
    const Index D = embed_dim();
    if (!separate_qkv()) {
      const T* b = in_proj_bias.size() ? in_proj_bias.data() + first * D : nullptr;
      detail::fused_linear(x, D, M, D, in_proj_weight.data() + first * D * D, count * D, b, Activation::identity, false,
                           out, ldo, ctx);
      return;
    }
    const Linear<T>* parts[3] = {&*q_proj, &*k_proj, &*v_proj};
    for (int p = 0; p < count; ++p) {
      const Linear<T>& l = *parts[first + p];
      detail::fused_linear(x, D, M, D, l.weight.data(), D, l.has_bias() ? l.bias.data() : nullptr, Activation::identity,
                           false, out + p * D, ldo, ctx);
    }
  }

  void output_projection(const T* attn, Index M, T* out, bool accumulate, const Context& ctx) const {
    const Index D = embed_dim();
    detail::fused_linear(attn, D, M, D, out_proj.weight.data(), D, out_proj.has_bias() ? out_proj.bias.data() : nullptr,
                         Activation::identity, accumulate, out, D, ctx);
  }

  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    if (self.names.separate_qkv != self.separate_qkv())
      detail::throw_shape("MultiheadAttention: names.separate_qkv is ", self.names.separate_qkv ? "true" : "false",
                          " but the module holds ", self.separate_qkv() ? "separate q/k/v" : "a fused in_proj_weight",
                          "; the layout is fixed at construction: build the module with the names it will load");
    if (self.separate_qkv()) {
      self.q_proj->named_tensors(p + self.names.q_proj, f);
      self.k_proj->named_tensors(p + self.names.k_proj, f);
      self.v_proj->named_tensors(p + self.names.v_proj, f);
    } else {
      f(p + self.names.in_proj_weight, self.in_proj_weight);
      if (self.in_proj_bias.size()) f(p + self.names.in_proj_bias, self.in_proj_bias);
    }
    self.out_proj.named_tensors(p + self.names.out_proj, f);
  }

  Index num_heads_;
};

}  // namespace fovea

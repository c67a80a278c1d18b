#pragma once
// NaViT ("Patch n' Pack", Dehghani et al. 2023) as lucidrains' vit_pytorch/na_vit.py builds it (version >= 1.6.7:
// padding keys masked out, tokens dropped only in training), in inference, loaded from that module's own
// state_dict names. Images keep their resolution and aspect ratio; their patches are packed into a few
// sequences and each image attends only to itself.
//
// The pipeline (S packed sequences of L tokens, D = dim, H heads of Dh = dim_head, I = H Dh, K = C P P):
//   patches  each image (C, H, W) -> (n_i, K) rows, (row, col) positions (navit/patchify.hpp); in training,
//            max(1, floor(n_i (1 - p))) of them kept
//   pack     greedily in input order into sequences of at most max_seq_len tokens (navit/pack.hpp)
//   x        = LayerNorm_D(Linear(LayerNorm_K(patches))) + pos_embed_height[row] + pos_embed_width[col]
//   layer    x = x + Attention(x);  x = x + FeedForward(x)          (depth times)
//            Attention(x): xn = LayerNorm(x); q = rms(xn W_q), (k, v) = xn W_kv split, k = rms(k);
//                          softmax(q k^T) v (no 1/sqrt(Dh): the norms carry the scale) W_out, each image's
//                          queries over its own keys only
//            rms(t) per head = t / max(||t||, 1e-12) * sqrt(Dh) * gamma_head (the query-key norm of ViT-22B)
//            FeedForward(x) = Linear(GELU(Linear(LayerNorm(x))))
//   hidden   = transformer.norm(x)
//   pool     per image: one learned query attn_pool_queries attends over that image's hidden tokens through
//            attn_pool (an Attention whose keys and values come from `hidden` as is, not normed by
//            attn_pool.norm), plus the query itself (residual)
//   logits   = mlp_head: LayerNorm then Linear without bias -> (images, num_classes), in input order
// Every LayerNorm is na_vit's bias-free one: F.layer_norm(x, gamma, beta) with a learned `gamma` and a `beta`
// buffer of zeros that state_dict saves (and this loader reads), eps 1e-5.
//
// Attention inside an image, two ways (NaViTMask), equal up to rounding:
//   segments  (default) each packed sequence's segment ids (image index) as AttentionMask<T>::segments: the
//             kernel runs each image's queries on its own keys only, so the work is sum_i n_i^2 per
//             sequence, not L^2 (ops/attention.hpp)
//   boolean   na_vit's dense boolean masks, (1, 1, n_s, n_s) per sequence of n_s tokens: every score
//             computed, then masked (for checking the segments path)
// The pooling query of image i attends to segment i (segments(q_ids, k_ids), or (1, 1, Q, n_s) booleans).
// na_vit fills masked scores with -finfo.max rather than -inf; every real query keeps at least its own
// token, so the two give the same softmax. Each sequence runs on its own n_s tokens: the padding after them
// (and, in na_vit, pooling queries past a sequence's last image) is never computed, where na_vit computes
// it and throws it away.
//
// Names (as na_vit.py's modules register them):
//   to_patch_embedding.{0.gamma, 0.beta, 1.weight, 1.bias, 2.gamma, 2.beta}, pos_embed_height (gh, D),
//   pos_embed_width (gw, D), transformer.layers.<i>.0.{norm.gamma, norm.beta, q_norm.gamma (H, 1, Dh),
//   k_norm.gamma, to_q.weight (I, D), to_kv.weight (2I, D), to_out.0.weight (D, I)},
//   transformer.layers.<i>.1.{0.gamma, 0.beta, 1.weight, 1.bias, 4.weight, 4.bias}, transformer.norm.{gamma,
//   beta}, attn_pool_queries (D), attn_pool.* (as an attention layer), mlp_head.{0.gamma, 0.beta, 1.weight}.
// Everything but channels vs patch size is read off the shapes (heads and dim_head from q_norm.gamma); an
// HF-style config.json subset (models/config.hpp: num_channels, patch_size, ...) settles the rest and is
// checked against the shapes. See docs/navit.md.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/config.hpp"
#include "fovea/models/weights.hpp"
#include "fovea/navit/pack.hpp"
#include "fovea/navit/patchify.hpp"
#include "fovea/nn/layer_norm.hpp"
#include "fovea/nn/linear.hpp"
#include "fovea/nn/mlp.hpp"
#include "fovea/ops/activation.hpp"
#include "fovea/ops/attention.hpp"

namespace fovea {

// na_vit.NaViT's constructor arguments (dropout rates aside: inference has none; token dropping is a
// forward option).
struct NaViTConfig {
  Size2 image_size{256, 256};  // the position tables cover image_size / patch_size rows and columns
  Index patch_size = 32;
  Index num_classes = 1000;
  Index dim = 1024;
  Index depth = 6;
  Index heads = 16;
  Index mlp_dim = 2048;
  Index channels = 3;
  Index dim_head = 64;
  double eps = 1e-5;                          // F.layer_norm's default, which every na_vit LayerNorm uses
  Activation activation = Activation::gelu;  // nn.GELU(): the erf form

  Size2 grid() const { return {image_size.h / patch_size, image_size.w / patch_size}; }
  Index inner_dim() const { return heads * dim_head; }
  Index patch_dim() const { return channels * patch_size * patch_size; }

  std::string str() const {
    return detail::cat("NaViTConfig(image ", image_size.h, "x", image_size.w, ", patch ", patch_size, ", channels ",
                       channels, ", dim ", dim, ", depth ", depth, ", heads ", heads, ", dim_head ", dim_head, ", mlp ",
                       mlp_dim, ", classes ", num_classes, ", eps ", eps, ")");
  }

  // Throws ShapeError for a configuration na_vit cannot build (it asserts the same divisibility).
  void validate() const {
    auto bad = [&](const auto&... why) { detail::throw_shape("NaViTConfig: ", why..., "; config ", str()); };
    if (patch_size < 1 || dim < 1 || depth < 0 || heads < 1 || dim_head < 1 || mlp_dim < 1 || channels < 1 ||
        num_classes < 1)
      bad("expected patch_size, dim, heads, dim_head, mlp_dim, channels, num_classes >= 1 and depth >= 0");
    if (image_size.h < patch_size || image_size.w < patch_size || image_size.h % patch_size || image_size.w % patch_size)
      bad("expected image_size sides that are multiples of patch_size (", patch_size, "), but got ", image_size.h, "x",
          image_size.w);
    if (!(eps >= 0)) bad("expected eps >= 0, but got ", eps);
  }
};

namespace detail {

// The model's large weights (projections, MLPs, position tables, head): fewer elements than its whole state
// dict, so check_model_fits with them never refuses a file that holds the model, yet refuses one whose few
// small tensors imply a large model (a file's sizes are read off its shapes).
inline std::map<std::string, std::vector<Index>> navit_large_shapes(const NaViTConfig& c) {
  std::map<std::string, std::vector<Index>> s;
  s["to_patch_embedding"] = {c.dim, c.patch_dim()};
  s["pos_embed_height"] = {c.grid().h, c.dim};
  s["pos_embed_width"] = {c.grid().w, c.dim};
  s["mlp_head"] = {c.num_classes, c.dim};
  for (Index i = 0; i < c.depth; ++i) {
    const std::string p = cat("layers.", i, ".");
    s[p + "to_q"] = {c.inner_dim(), c.dim};
    s[p + "to_kv"] = {2 * c.inner_dim(), c.dim};
    s[p + "to_out"] = {c.dim, c.inner_dim()};
    s[p + "ff.1"] = {c.mlp_dim, c.dim};
    s[p + "ff.2"] = {c.dim, c.mlp_dim};
  }
  return s;
}

}  // namespace detail

// How attention is kept inside each image.
enum class NaViTMask {
  segments,  // segment ids: each image's queries against its own keys only (sum n_i^2 work)
  boolean    // na_vit's dense boolean masks: every score of a sequence computed, then masked
};

// Options of a forward: packing, training-time token dropping, the mask path.
struct NaViTOptions {
  Index max_seq_len_ = 2048;        // tokens per packed sequence (na_vit's group_max_seq_len default)
  double token_dropout_ = 0.0;      // training: share of each image's patches dropped; 0 (inference) keeps all
  std::uint64_t seed_ = 0;          // the dropping generator's seed (navit/patchify.hpp)
  NaViTMask mask_ = NaViTMask::segments;

  NaViTOptions& max_seq_len(Index n) {
    max_seq_len_ = n;
    return *this;
  }
  // na_vit's token_dropout_prob in training mode: keep max(1, floor(n (1 - p))) of n patches, p in [0, 1).
  NaViTOptions& token_dropout(double p, std::uint64_t seed = 0) {
    token_dropout_ = p;
    seed_ = seed;
    return *this;
  }
  NaViTOptions& mask(NaViTMask m) {
    mask_ = m;
    return *this;
  }
};

// What forward_with_hidden returns.
template <class T>
struct NaViTOutput {
  Tensor<T, 2> logits;              // (images, num_classes): what forward() returns, na_vit's model(images)
  Tensor<T, 2> pooled;              // (images, dim): the attention-pool output, before mlp_head (to_latent)
  std::vector<Tensor<T, 2>> hidden; // per image (n_i, dim): transformer output (after transformer.norm),
                                    // in the image's token order (row-major patches, or the kept ones)
  PackPlan plan;                    // how the images were packed
};

// na_vit's Attention (also its attention pool): LayerNorm, q/k RMS norms, bias-free projections.
template <class T>
class NaViTAttention {
 public:
  NaViTAttention(Index dim, Index heads, Index dim_head, double eps = 1e-5)
      : norm(dim, eps),
        q_norm_gamma(heads, 1, dim_head),
        k_norm_gamma(heads, 1, dim_head),
        to_q(dim, heads * dim_head, false),
        to_kv(dim, 2 * heads * dim_head, false),
        to_out(heads * dim_head, dim, false) {
    q_norm_gamma.setConstant(T(1));
    k_norm_gamma.setConstant(T(1));
  }

  Index heads() const { return q_norm_gamma.dimension(0); }
  Index dim_head() const { return q_norm_gamma.dimension(2); }
  Index inner_dim() const { return heads() * dim_head(); }
  Index dim() const { return norm.dim(); }

  // f(name, tensor): `prefix.norm.gamma`, `.norm.beta`, `.q_norm.gamma`, `.k_norm.gamma`, `.to_q.weight`,
  // `.to_kv.weight`, `.to_out.0.weight`.
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  std::vector<std::string> ignored_names(const std::string& /*prefix*/) const { return {}; }

  LayerNorm<T> norm;           // gamma, beta
  Tensor<T, 3> q_norm_gamma;   // (H, 1, Dh)
  Tensor<T, 3> k_norm_gamma;   // (H, 1, Dh)
  Linear<T> to_q;              // (I, D)
  Linear<T> to_kv;             // (2I, D): k rows, then v rows
  Linear<T> to_out;            // (D, I)

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    f(p + "norm.gamma", self.norm.weight);
    f(p + "norm.beta", self.norm.bias);
    f(p + "q_norm.gamma", self.q_norm_gamma);
    f(p + "k_norm.gamma", self.k_norm_gamma);
    f(p + "to_q.weight", self.to_q.weight);
    f(p + "to_kv.weight", self.to_kv.weight);
    f(p + "to_out.0.weight", self.to_out.weight);
  }
};

// na_vit's FeedForward: nn.Sequential(LayerNorm, Linear, GELU, Dropout, Linear, Dropout).
template <class T>
class NaViTFeedForward {
 public:
  NaViTFeedForward(Index dim, Index hidden, Activation act = Activation::gelu, double eps = 1e-5)
      : norm(dim, eps), mlp(dim, hidden, dim, act, MlpNames{"1", "4"}) {}

  // f(name, tensor): `prefix.0.gamma`, `.0.beta`, `.1.weight`, `.1.bias`, `.4.weight`, `.4.bias`.
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) { visit(*this, prefix, f); }
  template <class F>
  void named_tensors(const std::string& prefix, F&& f) const { visit(*this, prefix, f); }
  std::vector<std::string> ignored_names(const std::string& /*prefix*/) const { return {}; }

  LayerNorm<T> norm;
  Mlp<T> mlp;

 private:
  template <class Self, class F>
  static void visit(Self& self, const std::string& prefix, F& f) {
    const std::string p = prefix.empty() ? prefix : prefix + ".";
    f(p + "0.gamma", self.norm.weight);
    f(p + "0.beta", self.norm.bias);
    self.mlp.named_tensors(prefix, f);
  }
};

namespace detail {

// rows (M, ld) holding H heads of Dh values from column 0: each head's t = t / max(||t||, 1e-12) * sqrt(Dh) *
// gamma[h] (F.normalize then RMSNorm's scale and gamma, in that order), in place.
template <class T>
void navit_rms_heads(T* rows, Index M, Index ld, const Tensor<T, 3>& gamma, const Context& ctx) {
  const Index H = gamma.dimension(0), Dh = gamma.dimension(2);
  const T scale = T(std::sqrt(double(Dh)));
  ctx.parallel_range(M, std::max<Index>(1, (Index(1) << 13) / (H * Dh)), [&](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r)
      for (Index h = 0; h < H; ++h) {
        T* t = rows + r * ld + h * Dh;
        const T* g = gamma.data() + h * Dh;
        T ss = 0;
        for (Index j = 0; j < Dh; ++j) ss += t[j] * t[j];
        const T denom = std::max(std::sqrt(ss), T(1e-12));
        for (Index j = 0; j < Dh; ++j) t[j] = t[j] / denom * scale * g[j];
      }
  });
}

// Scratch of one forward, reused by every layer.
template <class T>
struct NaViTWorkspace {
  Tensor<T, 3> normed;
  Tensor<T, 1> mean, rstd;
  std::vector<T> qkv, attn, hidden;
};

inline bool navit_is_square(Index n, Index& side) {
  side = Index(std::llround(std::sqrt(double(n))));
  return side >= 1 && side * side == n;
}

}  // namespace detail

// Reads a NaViTConfig off a state dict's names and shapes, with `hf` (a config.json's keys) for what shapes
// cannot settle: num_channels / patch_size when C P P has more than one reading (3 channels are assumed when
// K / 3 is a square, else 1). Keys the shapes also give are checked against them. FormatError names `source`.
inline NaViTConfig infer_navit_config(const std::map<std::string, std::vector<Index>>& shapes, const HfVisionConfig& hf = {},
                                      const std::string& source = "state dict") {
  auto shape = [&](const std::string& name, std::size_t rank) -> const std::vector<Index>& {
    auto it = shapes.find(name);
    if (it == shapes.end())
      detail::throw_format("NaViT: ", source, " has no tensor '", name,
                           "'; expected a vit_pytorch na_vit.NaViT state dict (to_patch_embedding, pos_embed_height, "
                           "transformer.layers.<i>, attn_pool, mlp_head)");
    if (it->second.size() != rank)
      detail::throw_format("NaViT: ", source, ": '", name, "' has shape ", detail::dims_str(it->second), ", expected rank ",
                           rank);
    return it->second;
  };
  NaViTConfig c;
  const std::vector<Index>& pe = shape("to_patch_embedding.1.weight", 2);
  c.dim = pe[0];
  const Index K = pe[1];
  const std::vector<Index>& qn = shape("attn_pool.q_norm.gamma", 3);
  c.heads = qn[0], c.dim_head = qn[2];
  c.num_classes = shape("mlp_head.1.weight", 2)[0];
  const Index gh = shape("pos_embed_height", 2)[0], gw = shape("pos_embed_width", 2)[0];
  c.depth = 0;
  while (shapes.count(detail::cat("transformer.layers.", c.depth, ".0.to_q.weight"))) ++c.depth;
  if (c.depth > 0) {
    c.mlp_dim = shape("transformer.layers.0.1.1.weight", 2)[0];
  } else if (hf.intermediate_size) {
    c.mlp_dim = *hf.intermediate_size;
  }

  // Channels and patch size: K = C P P.
  Index side = 0;
  if (hf.num_channels && hf.patch_size) {
    c.channels = *hf.num_channels, c.patch_size = hf.patch_size->h;
  } else if (hf.patch_size) {
    c.patch_size = hf.patch_size->h;
    c.channels = K / std::max<Index>(1, c.patch_size * c.patch_size);
  } else if (hf.num_channels) {
    c.channels = *hf.num_channels;
    if (K % c.channels || !detail::navit_is_square(K / c.channels, side))
      detail::throw_format("NaViT: ", source, ": to_patch_embedding.1.weight.size(1) = ", K, " is not num_channels (",
                           c.channels, ") times a square patch");
    c.patch_size = side;
  } else if (K % 3 == 0 && detail::navit_is_square(K / 3, side)) {
    c.channels = 3, c.patch_size = side;
  } else if (detail::navit_is_square(K, side)) {
    c.channels = 1, c.patch_size = side;
  } else {
    detail::throw_format("NaViT: ", source, ": to_patch_embedding.1.weight.size(1) = ", K,
                         " is neither 3 nor 1 channels times a square patch; give num_channels and patch_size in a "
                         "config");
  }
  if (hf.patch_size && hf.patch_size->h != hf.patch_size->w)
    detail::throw_format(hf.source, ": \"patch_size\" must be square for NaViT, but got [", hf.patch_size->h, ", ",
                         hf.patch_size->w, "]");
  if (c.channels * c.patch_size * c.patch_size != K)
    detail::throw_format(hf.source, ": num_channels ", c.channels, " x patch_size ", c.patch_size, "^2 = ",
                         c.channels * c.patch_size * c.patch_size, " disagrees with ", source,
                         " (to_patch_embedding.1.weight.size(1) = ", K, ")");
  c.image_size = {gh * c.patch_size, gw * c.patch_size};

  auto agree = [&](const char* key, const std::optional<Index>& value, Index from_shapes, const char* where) {
    if (value && *value != from_shapes)
      detail::throw_format(hf.source, ": \"", key, "\" is ", *value, " but ", source, " says ", from_shapes, " (", where,
                           ")");
  };
  agree("hidden_size", hf.hidden_size, c.dim, "to_patch_embedding.1.weight.size(0)");
  agree("num_attention_heads", hf.num_attention_heads, c.heads, "attn_pool.q_norm.gamma.size(0)");
  agree("num_hidden_layers", hf.num_hidden_layers, c.depth, "layers in transformer.layers");
  if (c.depth > 0) agree("intermediate_size", hf.intermediate_size, c.mlp_dim, "transformer.layers.0.1.1.weight.size(0)");
  if (hf.image_size && (hf.image_size->h / c.patch_size != gh || hf.image_size->w / c.patch_size != gw))
    detail::throw_format(hf.source, ": \"image_size\" ", hf.image_size->h, "x", hf.image_size->w, " gives a ",
                         hf.image_size->h / c.patch_size, " x ", hf.image_size->w / c.patch_size, " grid, but ", source,
                         " has position tables of ", gh, " x ", gw);
  if (hf.layer_norm_eps) c.eps = *hf.layer_norm_eps;
  if (hf.hidden_act) c.activation = hf_activation(*hf.hidden_act, hf.source);
  return c;
}

template <class T>
class NaViT {
 public:
  // Built from a config with torch's module defaults (norm gammas 1, betas 0, everything else zero);
  // load() or update_parameters() fill it.
  explicit NaViT(const NaViTConfig& config)
      : config_(checked(config)),
        patch_norm_(config_.patch_dim(), config_.eps),
        patch_linear_(config_.patch_dim(), config_.dim, true),
        patch_norm_out_(config_.dim, config_.eps),
        pos_h_(config_.grid().h, config_.dim),
        pos_w_(config_.grid().w, config_.dim),
        norm_(config_.dim, config_.eps),
        pool_queries_(config_.dim),
        pool_(config_.dim, config_.heads, config_.dim_head, config_.eps),
        head_norm_(config_.dim, config_.eps),
        head_(config_.dim, config_.num_classes, false) {
    pos_h_.setZero();
    pos_w_.setZero();
    pool_queries_.setZero();
    attn_.reserve(std::size_t(config_.depth));
    ff_.reserve(std::size_t(config_.depth));
    for (Index i = 0; i < config_.depth; ++i) {
      attn_.emplace_back(config_.dim, config_.heads, config_.dim_head, config_.eps);
      ff_.emplace_back(config_.dim, config_.mlp_dim, config_.activation, config_.eps);
    }
  }

  // A model whose config is read off the file (and `hf`, a config.json, when given), with the file's weights.
  static NaViT from_safetensors(const SafeTensors& file, const HfVisionConfig& hf = {}) {
    std::map<std::string, std::vector<Index>> shapes;
    for (const auto& info : file.tensors()) shapes[info.name] = std::vector<Index>(info.shape.begin(), info.shape.end());
    return from_safetensors(file, infer_navit_config(shapes, hf, file.label()));
  }
  // The config as given (the file must hold exactly its tensors), with the file's weights.
  static NaViT from_safetensors(const SafeTensors& file, const NaViTConfig& config) {
    config.validate();
    check_model_fits(file, detail::navit_large_shapes(config), config.str());  // before anything is allocated
    NaViT m(config);
    m.load(file);
    return m;
  }
  static NaViT from_safetensors(const std::string& path, const HfVisionConfig& hf = {}) {
    return from_safetensors(SafeTensors::open(path), hf);
  }
  static NaViT from_safetensors(const std::string& path, const NaViTConfig& config) {
    return from_safetensors(SafeTensors::open(path), config);
  }

  // Fills every weight from na_vit's names. The file must hold exactly this config's tensors; otherwise one
  // FormatError lists every missing and unexpected name and every shape mismatch, and the model is unchanged.
  void load(const SafeTensors& file) {
    WeightLoader<T> loader(file, config_.str());
    visit_parameters(*this, [&](const std::string& name, auto& t) { loader.expect(name, t); });
    loader.load();
  }

  const NaViTConfig& config() const { return config_; }

  // f(name, const tensor&) for every tensor of na_vit's state_dict (beta buffers included).
  template <class F>
  void named_parameters(F&& f) const {
    visit_parameters(*this, f);
  }

  // The same with mutable tensors, to fill weights without a file. Shapes are fixed by the config: if f
  // resizes a tensor, ShapeError names it.
  template <class F>
  void update_parameters(F&& f) {
    detail::update_keeping_shapes([&](auto&& g) { visit_parameters(*this, g); }, f, "NaViT", config_.str());
  }

  // images, each (C, H, W) of its own size (sides multiples of patch_size, grid within the position tables)
  // -> (images, num_classes) logits in input order, as na_vit's model(images, group_images=True,
  // group_max_seq_len=max_seq_len) in eval mode (or, with options.token_dropout, in training mode).
  Tensor<T, 2> forward(const std::vector<Tensor<T, 3>>& images, const NaViTOptions& options = {},
                       const Context& ctx = default_context()) const {
    return run(prepare(images, options, "NaViT.forward", ctx), options, false, ctx).logits;
  }
  Tensor<T, 2> forward(const std::vector<Tensor<T, 3>>& images, Index max_seq_len,
                       const Context& ctx = default_context()) const {
    return forward(images, NaViTOptions().max_seq_len(max_seq_len), ctx);
  }
  // The same for images given as (1, C, H, W) each (a batch of one, as fovea-embed's --input files are).
  Tensor<T, 2> forward(const std::vector<Tensor<T, 4>>& images, const NaViTOptions& options = {},
                       const Context& ctx = default_context()) const {
    return forward(squeeze(images, "NaViT.forward"), options, ctx);
  }
  Tensor<T, 2> forward(const std::vector<Tensor<T, 4>>& images, Index max_seq_len,
                       const Context& ctx = default_context()) const {
    return forward(squeeze(images, "NaViT.forward"), NaViTOptions().max_seq_len(max_seq_len), ctx);
  }

  // Logits, pooled vectors, every image's hidden tokens and the packing plan of one forward.
  NaViTOutput<T> forward_with_hidden(const std::vector<Tensor<T, 3>>& images, const NaViTOptions& options = {},
                                     const Context& ctx = default_context()) const {
    return run(prepare(images, options, "NaViT.forward_with_hidden", ctx), options, true, ctx);
  }
  NaViTOutput<T> forward_with_hidden(const std::vector<Tensor<T, 4>>& images, const NaViTOptions& options = {},
                                     const Context& ctx = default_context()) const {
    return forward_with_hidden(squeeze(images, "NaViT.forward_with_hidden"), options, ctx);
  }

  // The model on images already patchified (and perhaps thinned: keep_tokens), e.g. to choose the dropped
  // tokens yourself. options.token_dropout must be 0 here (the tokens are taken as given).
  NaViTOutput<T> forward_patches(const std::vector<ImagePatches<T>>& images, const NaViTOptions& options = {},
                                 const Context& ctx = default_context()) const {
    const char* op = "NaViT.forward_patches";
    if (options.token_dropout_ != 0)
      detail::throw_shape(op, ": expected token_dropout 0 (patches are used as given; drop them with keep_tokens), but "
                          "got ", options.token_dropout_);
    check_options(op, options);
    if (images.empty()) detail::throw_shape(op, ": expected at least one image, but got none");
    const Size2 g = config_.grid();
    for (std::size_t i = 0; i < images.size(); ++i) {
      const ImagePatches<T>& im = images[i];
      const Index n = im.size();
      if (n < 1 || im.patches.dimension(1) != config_.patch_dim() || im.positions.dimension(0) != n ||
          im.positions.dimension(1) != 2)
        detail::throw_shape(op, ": expected image ", i, " as patches (n >= 1, ", config_.patch_dim(),
                            ") with positions (n, 2), but got patches ", detail::shape_str(im.patches), ", positions ",
                            detail::shape_str(im.positions), "; ", config_.str());
      for (Index t = 0; t < n; ++t)
        if (im.positions(t, 0) < 0 || im.positions(t, 0) >= g.h || im.positions(t, 1) < 0 || im.positions(t, 1) >= g.w)
          detail::throw_shape(op, ": image ", i, " token ", t, " is at grid position (", im.positions(t, 0), ", ",
                              im.positions(t, 1), "), outside the position tables (pos_embed_height ", g.h,
                              " rows, pos_embed_width ", g.w, " rows)");
      check_fits(op, n, n, options, detail::cat("image ", i, " has ", n, " tokens"));
    }
    return run(images, options, true, ctx);
  }

  // Floating-point operations of one forward over the images `plan` packs (a multiply-add counts 2), split
  // into what the images' tokens cost in the linear layers (patch embedding, every layer, the pooling's keys
  // and values; padding rows are never computed) and what attention scores and values cost when each image
  // meets only itself (sum_i n_i^2 pairs: NaViTMask::segments) or every token of its sequence (sum_s n_s^2,
  // n_s the sequence's tokens: NaViTMask::boolean).
  struct Flops {
    double per_token, attention_images, attention_sequences;
  };
  Flops flops(const PackPlan& plan) const {
    const double D = double(config_.dim), I = double(config_.inner_dim()), M = double(config_.mlp_dim);
    const double K = double(config_.patch_dim()), depth = double(config_.depth);
    Flops f{};
    double tokens = 0, pairs = 0, seq_pairs = 0;
    std::vector<double> used(static_cast<std::size_t>(plan.sequences), 0.0);
    for (const PackedSlot& s : plan.slots) {
      tokens += double(s.length), pairs += double(s.length) * double(s.length);
      used[std::size_t(s.sequence)] += double(s.length);
    }
    for (double n : used) seq_pairs += n * n;
    // per token: patch embedding; per layer q, kv, out, two MLP products; pooling k, v
    f.per_token = tokens * (2 * K * D + depth * (2 * D * 3 * I + 2 * I * D + 2 * 2 * D * M) + 2 * D * 2 * I);
    const double per_pair = depth * 2 * 2 * I;  // q k^T and p v, every layer
    f.attention_images = pairs * per_pair;
    f.attention_sequences = seq_pairs * per_pair;
    return f;
  }

 private:
  static const NaViTConfig& checked(const NaViTConfig& c) {
    c.validate();
    return c;
  }

  template <class Self, class F>
  static void visit_parameters(Self& self, F&& f) {
    f("to_patch_embedding.0.gamma", self.patch_norm_.weight);
    f("to_patch_embedding.0.beta", self.patch_norm_.bias);
    f("to_patch_embedding.1.weight", self.patch_linear_.weight);
    f("to_patch_embedding.1.bias", self.patch_linear_.bias);
    f("to_patch_embedding.2.gamma", self.patch_norm_out_.weight);
    f("to_patch_embedding.2.beta", self.patch_norm_out_.bias);
    f("pos_embed_height", self.pos_h_);
    f("pos_embed_width", self.pos_w_);
    for (std::size_t i = 0; i < self.attn_.size(); ++i) {
      const std::string p = detail::cat("transformer.layers.", i, ".");
      self.attn_[i].named_tensors(p + "0", f);
      self.ff_[i].named_tensors(p + "1", f);
    }
    f("transformer.norm.gamma", self.norm_.weight);
    f("transformer.norm.beta", self.norm_.bias);
    f("attn_pool_queries", self.pool_queries_);
    self.pool_.named_tensors("attn_pool", f);
    f("mlp_head.0.gamma", self.head_norm_.weight);
    f("mlp_head.0.beta", self.head_norm_.bias);
    f("mlp_head.1.weight", self.head_.weight);
  }

  void check_options(const char* op, const NaViTOptions& o) const {
    if (o.max_seq_len_ < 1) detail::throw_shape(op, ": expected max_seq_len >= 1, but got ", o.max_seq_len_);
    if (!(o.token_dropout_ >= 0.0 && o.token_dropout_ < 1.0))
      detail::throw_shape(op, ": expected token_dropout in [0, 1), but got ", o.token_dropout_,
                          " (0 keeps every token; 1 would drop them all)");
  }

  // Throws unless an image of n patches keeping `kept` fits in one sequence.
  void check_fits(const char* op, Index n, Index kept, const NaViTOptions& o, const std::string& what) const {
    if (kept > o.max_seq_len_)
      detail::throw_shape(op, ": ", what, n == kept ? std::string() : detail::cat(" (", kept, " kept of ", n,
                                                                                     " at token_dropout ", o.token_dropout_, ")"),
                          ", more than max_seq_len = ", o.max_seq_len_,
                          " allows (an image is never split across sequences); raise max_seq_len or use a smaller image");
  }

  std::vector<Tensor<T, 3>> squeeze(const std::vector<Tensor<T, 4>>& images, const char* op) const {
    std::vector<Tensor<T, 3>> out;
    out.reserve(images.size());
    for (std::size_t i = 0; i < images.size(); ++i) {
      const auto& d = images[i].dimensions();
      if (d[0] != 1)
        detail::throw_shape(op, ": expected every image as (1, C, H, W), but image ", i, " is ", detail::dims_str(d));
      out.emplace_back(ConstTensorMap<T, 3>(images[i].data(), d[1], d[2], d[3]));
    }
    return out;
  }

  // Every check on the images and options, then their patches (thinned in training).
  std::vector<ImagePatches<T>> prepare(const std::vector<Tensor<T, 3>>& images, const NaViTOptions& o, const char* op,
                                       const Context& ctx) const {
    check_options(op, o);
    if (images.empty()) detail::throw_shape(op, ": expected at least one image, but got none");
    const Index P = config_.patch_size, C = config_.channels;
    const Size2 g = config_.grid();
    for (std::size_t i = 0; i < images.size(); ++i) {
      const auto& d = images[i].dimensions();
      const std::string what = detail::cat("image ", i, " ", detail::dims_str(d));
      if (d[0] != C) detail::throw_shape(op, ": expected ", C, " channels (C, H, W), but ", what, " has ", d[0]);
      if (d[1] < 1 || d[2] < 1) detail::throw_shape(op, ": expected a non-empty image, but ", what, " has a zero side");
      if (d[1] % P || d[2] % P)
        detail::throw_shape(op, ": expected height and width to be multiples of the patch size ", P, ", but ", what,
                            " leaves ", d[1] % P, " and ", d[2] % P, " pixels over; resize or crop it first");
      if (d[1] / P > g.h || d[2] / P > g.w)
        detail::throw_shape(op, ": ", what, " has a ", d[1] / P, " x ", d[2] / P,
                            " patch grid, larger than the position tables allow (pos_embed_height ", g.h,
                            " rows, pos_embed_width ", g.w, " rows: images up to ", g.h * P, " x ", g.w * P, ")");
      const Index n = (d[1] / P) * (d[2] / P);
      const Index kept = o.token_dropout_ > 0 ? tokens_kept(n, o.token_dropout_) : n;
      check_fits(op, n, kept, o, detail::cat(what, " has ", d[1] / P, " x ", d[2] / P, " = ", n, " patches"));
    }
    std::vector<ImagePatches<T>> out;
    out.reserve(images.size());
    for (std::size_t i = 0; i < images.size(); ++i) {
      ImagePatches<T> p = patchify_image(images[i], P, ctx, op);
      if (o.token_dropout_ > 0) p = keep_tokens(p, sample_kept_tokens(p.size(), o.token_dropout_, o.seed_, Index(i)));
      out.push_back(std::move(p));
    }
    return out;
  }

  // One mask per packed sequence over its own tokens (padding excluded): segment ids, or na_vit's dense
  // booleans, for the encoder layers (keys = queries = the sequence's tokens) and for the pooling (one query
  // per image of the sequence).
  struct SequenceMasks {
    NaViTMask mode;
    std::vector<Tensor<Index, 2>> ids, pool_ids;  // (1, n_s), (1, Q) per sequence
    std::vector<Tensor<bool, 4>> self, pool;       // (1, 1, n_s, n_s), (1, 1, Q, n_s) per sequence (boolean only)
    AttentionMask<T> layer(Index s) const {
      if (mode == NaViTMask::boolean) return AttentionMask<T>::boolean(self[std::size_t(s)]);
      return AttentionMask<T>::segments(ids[std::size_t(s)]);
    }
    AttentionMask<T> pooling(Index s) const {
      if (mode == NaViTMask::boolean) return AttentionMask<T>::boolean(pool[std::size_t(s)]);
      return AttentionMask<T>::segments(pool_ids[std::size_t(s)], ids[std::size_t(s)]);
    }
  };

  // x (S, L, D): x += Attention(x) on each sequence's n_s tokens (its padding rows are left alone), each
  // image attending to itself. One sequence at a time, so the q, k, v scratch is one sequence's (n_s, 3I),
  // reused by every sequence and layer: it stays below glibc's mmap threshold at ViT-B width and L = 2048, so
  // it is not returned to the system and faulted in again each time (measured: with whole-batch buffers a
  // third of a depth-1 forward went to page faults).
  void self_attention(const NaViTAttention<T>& a, Tensor<T, 3>& x, detail::NaViTWorkspace<T>& ws,
                      const SequenceMasks& masks, const std::vector<Index>& used, const Context& ctx) const {
    const Index S = x.dimension(0), L = x.dimension(1), D = config_.dim;
    const Index H = config_.heads, Dh = config_.dim_head, I = H * Dh;
    a.norm.forward_into(x, ws.normed, ws.mean, ws.rstd, ctx);
    T* qkv = ws.qkv.data();  // (n, 3I) rows: q | k | v, each (H, Dh), which the kernel reads in place
    T* out = ws.attn.data();  // (n, I)
    for (Index s = 0; s < S; ++s) {
      const Index n = used[std::size_t(s)];
      const T* xn = ws.normed.data() + s * L * D;
      detail::fused_linear(xn, D, n, D, a.to_q.weight.data(), I, static_cast<const T*>(nullptr), Activation::identity,
                           false, qkv, 3 * I, ctx);
      detail::fused_linear(xn, D, n, D, a.to_kv.weight.data(), 2 * I, static_cast<const T*>(nullptr),
                           Activation::identity, false, qkv + I, 3 * I, ctx);
      detail::navit_rms_heads(qkv, n, 3 * I, a.q_norm_gamma, ctx);
      detail::navit_rms_heads(qkv + I, n, 3 * I, a.k_norm_gamma, ctx);
      detail::AttentionArgs<T> args{1,
                                    H,
                                    n,
                                    n,
                                    Dh,
                                    Dh,
                                    {qkv, 0, Dh, 3 * I},
                                    {qkv + I, 0, Dh, 3 * I},
                                    {qkv + 2 * I, 0, Dh, 3 * I},
                                    {out, 0, Dh, I},
                                    T(1)};
      detail::attention_forward(args, masks.layer(s), ctx);
      // x += attn W_out^T (the residual add is the product's accumulation)
      detail::fused_linear(out, I, n, I, a.to_out.weight.data(), D, static_cast<const T*>(nullptr), Activation::identity,
                           true, x.data() + s * L * D, D, ctx);
    }
  }

  // Rows of the MLP's hidden activations computed at once: (1024, mlp_dim) scratch is 12 MiB at ViT-B, reused
  // chunk after chunk, where all rows at once would be a fresh (M, mlp_dim) block every forward.
  static constexpr Index kMlpRows = 1024;

  NaViTOutput<T> run(const std::vector<ImagePatches<T>>& images, const NaViTOptions& o, bool keep_hidden,
                     const Context& ctx) const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "NaViT: float or double");
    const Index D = config_.dim, K = config_.patch_dim(), H = config_.heads, Dh = config_.dim_head, I = H * Dh;
    std::vector<Index> lengths;
    for (const ImagePatches<T>& im : images) lengths.push_back(im.size());
    NaViTOutput<T> out;
    out.plan = plan_packing(lengths, o.max_seq_len_);
    const PackPlan& plan = out.plan;
    const Index S = plan.sequences, L = plan.seq_len, M = S * L, B = plan.images();
    // Tokens of each sequence: its images are laid end to end from row 0, padding after them. Everything
    // below runs on rows [0, used[s]) of each sequence; padding rows are never computed.
    std::vector<Index> used(static_cast<std::size_t>(S), 0), rank(static_cast<std::size_t>(B));
    std::vector<Index> per_sequence(static_cast<std::size_t>(S), 0);
    for (Index i = 0; i < B; ++i) {
      const PackedSlot& s = plan.slots[std::size_t(i)];
      used[std::size_t(s.sequence)] = std::max(used[std::size_t(s.sequence)], s.offset + s.length);
      rank[std::size_t(i)] = per_sequence[std::size_t(s.sequence)]++;
    }
    const Index Q = *std::max_element(per_sequence.begin(), per_sequence.end());

    // Packed patches (S, L, K), padding zero, and every token's position.
    Tensor<T, 3> x(S, L, K);
    x.setZero();
    std::vector<Index> pos(static_cast<std::size_t>(M * 2), 0);
    for (Index i = 0; i < B; ++i) {
      const PackedSlot& s = plan.slots[std::size_t(i)];
      const Index row0 = s.sequence * L + s.offset;
      std::copy_n(images[std::size_t(i)].patches.data(), s.length * K, x.data() + row0 * K);
      std::copy_n(images[std::size_t(i)].positions.data(), s.length * 2, pos.data() + row0 * 2);
    }

    detail::NaViTWorkspace<T> ws;
    ws.qkv.resize(std::size_t(L * 3 * I));
    ws.attn.resize(std::size_t(L * I));
    // to_patch_embedding: LayerNorm(K) -> Linear(K, D) -> LayerNorm(D); then x + h_pos + w_pos. Padding rows
    // stay zero through the linear (norms of them are finite: beta).
    patch_norm_.forward_into(x, ws.normed, ws.mean, ws.rstd, ctx);
    x.resize(S, L, D);
    x.setZero();
    for (Index s = 0; s < S; ++s)
      detail::fused_linear(ws.normed.data() + s * L * K, K, used[std::size_t(s)], K, patch_linear_.weight.data(), D,
                           patch_linear_.bias.data(), Activation::identity, false, x.data() + s * L * D, D, ctx);
    patch_norm_out_.forward_into(x, ws.normed, ws.mean, ws.rstd, ctx);
    std::swap(x, ws.normed);
    ctx.parallel_range(M, std::max<Index>(1, (Index(1) << 14) / D), [&](Index r0, Index r1) {
      for (Index r = r0; r < r1; ++r) {
        T* row = x.data() + r * D;
        const T* ph = pos_h_.data() + pos[std::size_t(2 * r)] * D;
        const T* pw = pos_w_.data() + pos[std::size_t(2 * r + 1)] * D;
        for (Index d = 0; d < D; ++d) row[d] = (row[d] + ph[d]) + pw[d];
      }
    });

    // Per sequence: its tokens' segment ids, the pooling slots (slot q of sequence s is the q-th image packed
    // there, -1 past its last), and na_vit's boolean masks if asked.
    SequenceMasks masks;
    masks.mode = o.mask_;
    const Tensor<Index, 2> ids = plan.segment_ids();
    for (Index s = 0; s < S; ++s) {
      Tensor<Index, 2> sid(1, used[std::size_t(s)]), qid(1, Q);
      std::copy_n(ids.data() + s * L, used[std::size_t(s)], sid.data());
      qid.setConstant(-1);
      masks.ids.push_back(sid);
      masks.pool_ids.push_back(qid);
    }
    for (Index i = 0; i < B; ++i) masks.pool_ids[std::size_t(plan.slots[std::size_t(i)].sequence)](0, rank[std::size_t(i)]) = i;
    if (o.mask_ == NaViTMask::boolean) {
      for (Index s = 0; s < S; ++s) {
        const Tensor<Index, 2>& sid = masks.ids[std::size_t(s)];
        const Tensor<Index, 2>& qid = masks.pool_ids[std::size_t(s)];
        const Index n = used[std::size_t(s)];
        Tensor<bool, 4> self(1, 1, n, n), pool(1, 1, Q, n);
        for (Index i = 0; i < n; ++i)
          for (Index j = 0; j < n; ++j) self(0, 0, i, j) = sid(0, i) == sid(0, j);
        for (Index q = 0; q < Q; ++q)
          for (Index j = 0; j < n; ++j) pool(0, 0, q, j) = qid(0, q) == sid(0, j);
        masks.self.push_back(std::move(self));
        masks.pool.push_back(std::move(pool));
      }
    }

    for (std::size_t l = 0; l < attn_.size(); ++l) {
      self_attention(attn_[l], x, ws, masks, used, ctx);
      ff_[l].norm.forward_into(x, ws.normed, ws.mean, ws.rstd, ctx);
      for (Index s = 0; s < S; ++s)
        for (Index r0 = 0; r0 < used[std::size_t(s)]; r0 += kMlpRows)
          ff_[l].mlp.forward_rows(ws.normed.data() + (s * L + r0) * D, std::min(kMlpRows, used[std::size_t(s)] - r0),
                                  x.data() + (s * L + r0) * D, true, ws.hidden, ctx);
    }
    norm_.forward_into(x, ws.normed, ws.mean, ws.rstd, ctx);
    std::swap(x, ws.normed);  // x: the hidden state (S, L, D)

    // Attention pooling. Every query is attn_pool_queries: normed, projected and RMS-normed once, then
    // repeated; keys and values come from the hidden state as it is (attn_pool.norm acts on the queries).
    Tensor<T, 2> query(1, D);
    std::copy_n(pool_queries_.data(), D, query.data());
    const Tensor<T, 2> qn = pool_.norm.forward(query, ctx);
    std::vector<T> qrow(static_cast<std::size_t>(I));
    detail::fused_linear(qn.data(), D, 1, D, pool_.to_q.weight.data(), I, static_cast<const T*>(nullptr),
                         Activation::identity, false, qrow.data(), I, ctx);
    detail::navit_rms_heads(qrow.data(), 1, I, pool_.q_norm_gamma, ctx);
    std::vector<T> qbuf(static_cast<std::size_t>(Q * I));
    for (Index r = 0; r < Q; ++r) std::copy_n(qrow.data(), I, qbuf.data() + r * I);
    Tensor<T, 2> gathered(B, I);  // each image's attention output, in input order
    T* kv = ws.qkv.data();        // (n_s, 2I)
    for (Index s = 0; s < S; ++s) {
      const Index n = used[std::size_t(s)];
      detail::fused_linear(x.data() + s * L * D, D, n, D, pool_.to_kv.weight.data(), 2 * I,
                           static_cast<const T*>(nullptr), Activation::identity, false, kv, 2 * I, ctx);
      detail::navit_rms_heads(kv, n, 2 * I, pool_.k_norm_gamma, ctx);
      detail::AttentionArgs<T> args{1,
                                    H,
                                    Q,
                                    n,
                                    Dh,
                                    Dh,
                                    {qbuf.data(), 0, Dh, I},
                                    {kv, 0, Dh, 2 * I},
                                    {kv + I, 0, Dh, 2 * I},
                                    {ws.attn.data(), 0, Dh, I},
                                    T(1)};
      detail::attention_forward(args, masks.pooling(s), ctx);
      for (Index q = 0; q < Q; ++q) {
        const Index i = masks.pool_ids[std::size_t(s)](0, q);
        if (i >= 0) std::copy_n(ws.attn.data() + q * I, I, gathered.data() + i * I);
      }
    }
    // pooled = to_out(attention) + query; logits = mlp_head (LayerNorm, then Linear without bias)
    out.pooled.resize(B, D);
    for (Index i = 0; i < B; ++i) std::copy_n(pool_queries_.data(), D, out.pooled.data() + i * D);
    detail::fused_linear(gathered.data(), I, B, I, pool_.to_out.weight.data(), D, static_cast<const T*>(nullptr),
                         Activation::identity, true, out.pooled.data(), D, ctx);
    const Tensor<T, 2> hn = head_norm_.forward(out.pooled, ctx);
    out.logits = head_.forward(hn, ctx);
    if (keep_hidden) out.hidden = unpack_tokens(x, plan);
    return out;
  }

  NaViTConfig config_;
  LayerNorm<T> patch_norm_;       // to_patch_embedding.0 (K)
  Linear<T> patch_linear_;        // to_patch_embedding.1 (D, K)
  LayerNorm<T> patch_norm_out_;   // to_patch_embedding.2 (D)
  Tensor<T, 2> pos_h_, pos_w_;    // (gh, D), (gw, D)
  std::vector<NaViTAttention<T>> attn_;
  std::vector<NaViTFeedForward<T>> ff_;
  LayerNorm<T> norm_;             // transformer.norm
  Tensor<T, 1> pool_queries_;     // attn_pool_queries (D)
  NaViTAttention<T> pool_;        // attn_pool
  LayerNorm<T> head_norm_;        // mlp_head.0
  Linear<T> head_;                // mlp_head.1 (classes, D), no bias
};

}  // namespace fovea

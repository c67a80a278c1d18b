#pragma once
// VisionTransformer: ViT image encoders in inference mode, loaded from four weight families' own safetensors
// names: torchvision (vit_b_16, vit_b_32, vit_l_16, ...), timm (vit_*), Hugging Face CLIPVisionModel(With-
// Projection) and SiglipVisionModel, and the vision half of full CLIPModel / SiglipModel files.
//
// One pipeline covers them all (B batch, N tokens, D width, G = gh * gw patches, P patch size):
//   tokens  = [prefix tokens; patch_embed(x)] + position table     (B, N, D), N = prefix + G
//   tokens  = pre_norm(tokens)                                     CLIP pre_layrnorm, timm norm_pre
//   tokens  = block_i(tokens) for each block                       pre-norm: x += attn(ln1(x)); x += mlp(ln2(x))
//   hidden  = final_norm(tokens)                                   torchvision encoder.ln, timm norm,
//                                                                  SigLIP post_layernorm
//   pooled  = class token | mean of the patch tokens | attention-pool head (SigLIP)
//   pooled  = fc_norm(pooled)                                      timm fc_norm, CLIP post_layernorm
//   output  = head(tanh(pre_logits(pooled))) | head(pooled) | visual_projection(pooled) | pooled
// and a family is a setting of it:
//   torchvision  class token, final norm, token pool, head (pre_logits + tanh with representation_size)
//                eps 1e-6, exact GELU
//   timm         cls_token and reg_token(s), position rows for them or not (no_embed_class), norm_pre,
//                final norm or fc_norm, token or avg pool, head or none                eps 1e-6, exact GELU
//   hf-clip      class_embedding, patch conv without bias, pre_layrnorm, token pool, post_layernorm on the
//                pooled token, optional visual_projection                              eps 1e-5, QuickGELU
//   hf-siglip    no class token, post_layernorm on every token, attention-pool head    eps 1e-6, tanh GELU
// The last hidden state is what the family's model returns: after the final norm for torchvision, timm and
// SigLIP; before post_layernorm for CLIP (its last_hidden_state).
//
// An input whose size differs from the configured one gets a resized position table, as each family does it
// today (position_embedding(grid)); the grid is (H / P, W / P) rounded down, as the patch conv drops the rest:
//   torchvision  forward asserts the size. Its interpolate_embeddings() helper, which fine-tuning at another
//                size uses, resizes the square grid bicubic with align_corners=True; fovea applies exactly
//                that, per axis, so a non-square grid (which no torchvision model accepts) is the same rule.
//   timm         dynamic_img_size: resample_abs_pos_embed, bicubic with antialias=True (PyTorch's separable
//                antialiased kernel: Keys a = -0.5, support widened by the scale when shrinking, weights
//                renormalised at the borders), align_corners=False; prefix rows kept apart.
//   hf-clip/siglip  interpolate_pos_encoding: bicubic, align_corners=False, to (H // P, W // P).
// A grid equal to the table's own is used as is (every family's resize is then the identity).
//
// The parts are fovea's nn modules under each family's names (nn/encoder_block.hpp's name tables): PatchEmbed
// builds the token sequence (prefix tokens, patches, position rows) in one pass, EncoderBlock runs in place
// on it with one workspace shared by every block and the pooling head (fused QKV product, streaming
// attention reading Q, K, V in place, residual adds as GEMM accumulation, GELU in fc1's tile epilogue;
// HF's separate q, k, v weights stay three products into the same buffer), so a forward allocates its
// buffers once.
//
// Mixed-size batches (forward_packed): images of different sizes run in one pass. Each image gets its own
// grid, its family's resized position table and its own prefix tokens, exactly as if it ran alone; the
// token sequences are then laid end to end into a few sequences of at most max_seq_len tokens
// (navit/pack.hpp's plan_packing, greedy in input order) and every block runs once on them with
// AttentionMask::segments, so attention stays inside each image and skips other images' key blocks.
// LayerNorms, MLPs and projections act per token, so they run on the packed tensor as is; padding tokens
// (zeros) stay finite through every block (LayerNorm of a zero row is its bias; a padding query attends to
// nothing and gives zeros), so nothing 0 * inf or NaN can reach a real token through a masked product.
// Pooling is per image: its class token, the mean of its own patch tokens, or SigLIP's probe with one query
// per image attending to that image's tokens only. Results equal running each image alone up to float
// rounding (the products see other row counts, so sums split differently).
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/config.hpp"
#include "fovea/models/weights.hpp"
#include "fovea/navit/pack.hpp"
#include "fovea/nn/attention_pool.hpp"
#include "fovea/nn/encoder_block.hpp"
#include "fovea/nn/layer_norm.hpp"
#include "fovea/nn/linear.hpp"
#include "fovea/nn/patch_embed.hpp"
#include "fovea/ops/activation.hpp"
#include "fovea/ops/interpolate.hpp"

namespace fovea {

enum class VitFamily { torchvision, timm, hf_clip, hf_siglip };

// The fovea-embed --arch name of a family.
inline const char* vit_family_name(VitFamily f) {
  switch (f) {
    case VitFamily::torchvision: return "torchvision-vit";
    case VitFamily::timm: return "timm-vit";
    case VitFamily::hf_clip: return "hf-clip";
    case VitFamily::hf_siglip: return "hf-siglip";
  }
  return "?";
}

// How the hidden tokens become one vector per image.
enum class VitPool {
  token,      // the class token (row 0)
  avg,        // mean of the patch tokens (prefix tokens excluded), timm global_pool='avg'
  attention,  // SigLIP's multi-head attention pooling head (probe, attention, layernorm, mlp)
  none        // no pooled output (SigLIP with vision_use_head = false): forward() is not available
};

// Which hidden states forward_with_hidden keeps besides the last one.
enum class VitHidden { last, every_layer };

struct VitConfig {
  VitFamily family = VitFamily::torchvision;
  Size2 image_size{224, 224};  // the position table covers (image_size / patch_size) patches
  Index patch_size = 16;
  Index in_channels = 3;
  Index width = 768;           // hidden_dim, embed_dim, hidden_size
  Index depth = 12;            // blocks
  Index heads = 12;
  Index mlp_dim = 3072;        // the MLP's hidden width (intermediate_size)
  double eps = 1e-6;           // every LayerNorm's
  Activation activation = Activation::gelu;
  bool class_token = true;
  Index register_tokens = 0;   // timm reg_token
  bool pos_embed_prefix = true;  // the position table has rows for the prefix tokens (timm no_embed_class = false)
  bool patch_bias = true;
  bool qkv_bias = true;
  bool pre_norm = false;       // a LayerNorm on the tokens before the first block
  bool final_norm = true;      // a LayerNorm on every token after the last block
  VitPool pool = VitPool::token;
  bool fc_norm = false;        // a LayerNorm on the pooled vector
  Index representation_size = 0;  // torchvision heads.pre_logits (+ tanh); 0 for none
  Index num_classes = 1000;       // the classifier head's outputs; 0 for none
  Index projection_dim = 0;       // CLIP visual_projection (no bias); 0 for none

  Size2 grid() const { return {image_size.h / patch_size, image_size.w / patch_size}; }
  Index num_prefix_tokens() const { return (class_token ? 1 : 0) + register_tokens; }
  Index num_positions() const { return (pos_embed_prefix ? num_prefix_tokens() : 0) + grid().h * grid().w; }
  Index head_dim() const { return width / heads; }
  // The width of what forward() returns.
  Index output_dim() const {
    if (num_classes > 0) return num_classes;
    if (projection_dim > 0) return projection_dim;
    return width;
  }

  // torchvision's models (num_classes 1000, eps 1e-6, exact GELU, image 224).
  static VitConfig vit_b_16() { return torchvision(16, 768, 12, 12, 3072); }
  static VitConfig vit_b_32() { return torchvision(32, 768, 12, 12, 3072); }
  static VitConfig vit_l_16() { return torchvision(16, 1024, 24, 16, 4096); }
  static VitConfig vit_l_32() { return torchvision(32, 1024, 24, 16, 4096); }
  static VitConfig vit_h_14() { return torchvision(14, 1280, 32, 16, 5120); }
  // timm's vit_small_patch16_224 and vit_base_patch16_224 (ImageNet-21k fine-tuned heads, 1000 classes).
  static VitConfig vit_small_patch16_224() {
    VitConfig c = torchvision(16, 384, 12, 6, 1536);
    c.family = VitFamily::timm;
    return c;
  }
  static VitConfig vit_base_patch16_224() {
    VitConfig c = vit_b_16();
    c.family = VitFamily::timm;
    return c;
  }
  // OpenAI CLIP towers as CLIPVisionModelWithProjection.
  static VitConfig clip_vit_b_32() { return clip(32, 224, 768, 12, 12, 3072, 512); }
  static VitConfig clip_vit_b_16() { return clip(16, 224, 768, 12, 12, 3072, 512); }
  static VitConfig clip_vit_l_14() { return clip(14, 224, 1024, 24, 16, 4096, 768); }
  // google/siglip-base-patch16-224's vision tower.
  static VitConfig siglip_base_patch16_224() {
    VitConfig c = torchvision(16, 768, 12, 12, 3072);
    c.family = VitFamily::hf_siglip;
    c.activation = Activation::gelu_tanh;
    c.class_token = false;
    c.pool = VitPool::attention;
    c.num_classes = 0;
    return c;
  }

  std::string str() const {
    const char* pools[] = {"token", "avg", "attention", "none"};
    std::string s = detail::cat("VitConfig(", vit_family_name(family), ", image ", image_size.h, "x", image_size.w,
                                ", patch ", patch_size, ", width ", width, ", depth ", depth, ", heads ", heads,
                                ", mlp ", mlp_dim, ", eps ", eps, ", ", activation_name(), ", pool ",
                                pools[int(pool)]);
    if (!class_token) s += ", no class token";
    if (register_tokens) s += detail::cat(", ", register_tokens, " register tokens");
    if (!pos_embed_prefix && num_prefix_tokens()) s += ", no position rows for prefix tokens";
    if (pre_norm) s += ", pre_norm";
    if (!final_norm) s += ", no final norm";
    if (fc_norm) s += ", fc_norm";
    if (!patch_bias) s += ", no patch bias";
    if (!qkv_bias) s += ", no qkv bias";
    if (in_channels != 3) s += detail::cat(", in_channels ", in_channels);
    if (representation_size) s += detail::cat(", representation ", representation_size);
    if (num_classes) s += detail::cat(", classes ", num_classes);
    if (projection_dim) s += detail::cat(", projection ", projection_dim);
    return s + ")";
  }

  const char* activation_name() const {
    switch (activation) {
      case Activation::gelu: return "gelu";
      case Activation::gelu_tanh: return "gelu_tanh";
      case Activation::quick_gelu: return "quick_gelu";
      default: return "other";
    }
  }

  // Throws ShapeError for a configuration no family builds (every check names the config).
  void validate() const {
    auto bad = [&](const auto&... why) { detail::throw_shape("VitConfig: ", why..., "; config ", str()); };
    if (width < 1 || depth < 1 || heads < 1 || mlp_dim < 1 || patch_size < 1 || in_channels < 1)
      bad("expected width, depth, heads, mlp_dim, patch_size and in_channels >= 1");
    if (width % heads != 0)
      bad("expected width divisible by heads (", width, " / ", heads, " is not whole), so that every head has ",
          "the same width");
    if (image_size.h < patch_size || image_size.w < patch_size)
      bad("expected image_size >= patch_size (", patch_size, "), but got ", image_size.h, "x", image_size.w);
    if (register_tokens < 0 || representation_size < 0 || num_classes < 0 || projection_dim < 0)
      bad("expected register_tokens, representation_size, num_classes and projection_dim >= 0");
    if (!(eps > 0) || !std::isfinite(eps)) bad("expected eps > 0, but got ", eps);
    if (activation != Activation::gelu && activation != Activation::gelu_tanh &&
        activation != Activation::quick_gelu)
      bad("expected activation gelu, gelu_tanh or quick_gelu");
    if (pool == VitPool::token && !class_token) bad("token pooling needs a class token");
    if (pool == VitPool::avg && grid().h * grid().w < 1) bad("avg pooling needs patch tokens");
    if (representation_size && !num_classes) bad("representation_size needs a classifier head (num_classes > 0)");
    if (projection_dim && num_classes) bad("expected a classifier head or a projection, not both");
    if (pool == VitPool::none && (fc_norm || representation_size || num_classes || projection_dim))
      bad("a model without pooling has no fc_norm, head or projection");
    // What each family's module tree can hold (its names exist only for these parts).
    const char* fam = vit_family_name(family);
    auto need = [&](bool ok, const char* what) {
      if (!ok) bad(fam, " models have ", what);
    };
    switch (family) {
      case VitFamily::torchvision:
        need(class_token && !register_tokens && pos_embed_prefix, "a class token with a position row, no registers");
        need(patch_bias && qkv_bias && !pre_norm && final_norm && !fc_norm,
             "biases, no pre_norm, a final norm, no fc_norm");
        need(pool == VitPool::token && num_classes > 0 && !projection_dim,
             "token pooling and a head (num_classes > 0)");
        break;
      case VitFamily::timm:
        need(pool == VitPool::token || pool == VitPool::avg, "token or avg pooling");
        need(!representation_size && !projection_dim, "no representation layer or projection");
        break;
      case VitFamily::hf_clip:
        need(class_token && !register_tokens && pos_embed_prefix, "a class embedding with a position row");
        need(pre_norm && !final_norm && fc_norm && pool == VitPool::token,
             "pre_layrnorm and post_layernorm on the class token");
        need(!num_classes && !representation_size, "no classifier (a projection at most)");
        break;
      case VitFamily::hf_siglip:
        need(!class_token && !register_tokens, "no class or register tokens");
        need(!pre_norm && final_norm && !fc_norm, "post_layernorm on every token only");
        need(pool == VitPool::attention || pool == VitPool::none, "the attention-pool head or none");
        need(!num_classes && !representation_size && !projection_dim, "no classifier or projection");
        break;
    }
  }

 private:
  static VitConfig torchvision(Index patch, Index width, Index depth, Index heads, Index mlp) {
    VitConfig c;
    c.patch_size = patch, c.width = width, c.depth = depth, c.heads = heads, c.mlp_dim = mlp;
    return c;
  }
  static VitConfig clip(Index patch, Index image, Index width, Index depth, Index heads, Index mlp, Index proj) {
    VitConfig c = torchvision(patch, width, depth, heads, mlp);
    c.family = VitFamily::hf_clip;
    c.image_size = image;
    c.eps = 1e-5;
    c.activation = Activation::quick_gelu;
    c.patch_bias = false;
    c.pre_norm = true;
    c.final_norm = false;
    c.fc_norm = true;
    c.num_classes = 0;
    c.projection_dim = proj;
    return c;
  }
};

namespace detail {

// How a particular file spells the family's names: HF towers with or without "vision_model.", torchvision's
// MLP as mlp.0 / mlp.3 or the legacy mlp.linear_1 / mlp.linear_2.
struct VitNaming {
  std::string hf_prefix = "vision_model.";
  bool legacy_mlp = false;
};

// The names of a model's parts in its family's file. Modules (PatchEmbed, EncoderBlock, LayerNorm, Linear,
// AttentionPoolHead) add their own suffixes under these prefixes; an empty name means the part is absent.
// The class token, register tokens and position table are the model's own tensors, whose shapes differ per
// family: (1, 1, D) or (D); (1, R, D); (1, L, D) or (L, D).
struct VitNames {
  std::string patch, cls, reg, pos, norm_pre, norm, fc_norm, pool, pre_logits, head, projection;
  std::string block_prefix;  // + the layer index
  EncoderBlockNames block;
  std::vector<Index> cls_shape, reg_shape, pos_shape;

  std::string block_name(Index i) const { return cat(block_prefix, i); }
};

inline VitNames vit_names(const VitConfig& c, const VitNaming& naming) {
  VitNames n;
  const Index D = c.width, L = c.num_positions();
  switch (c.family) {
    case VitFamily::torchvision:
      n.patch = "conv_proj", n.cls = "class_token", n.pos = "encoder.pos_embedding";
      n.block_prefix = "encoder.layers.encoder_layer_";
      n.block = naming.legacy_mlp ? EncoderBlockNames::torchvision_legacy() : EncoderBlockNames::torchvision();
      n.norm = "encoder.ln";
      if (c.representation_size) n.pre_logits = "heads.pre_logits";
      n.head = "heads.head";
      n.cls_shape = {1, 1, D}, n.pos_shape = {1, L, D};
      break;
    case VitFamily::timm:
      n.patch = "patch_embed.proj", n.pos = "pos_embed";
      if (c.class_token) n.cls = "cls_token";
      if (c.register_tokens) n.reg = "reg_token";
      if (c.pre_norm) n.norm_pre = "norm_pre";
      n.block_prefix = "blocks.";
      n.block = EncoderBlockNames::timm();
      if (c.final_norm) n.norm = "norm";
      if (c.fc_norm) n.fc_norm = "fc_norm";
      if (c.num_classes) n.head = "head";
      n.cls_shape = {1, 1, D}, n.reg_shape = {1, c.register_tokens, D}, n.pos_shape = {1, L, D};
      break;
    case VitFamily::hf_clip:
    case VitFamily::hf_siglip: {
      const std::string& v = naming.hf_prefix;
      n.patch = v + "embeddings.patch_embedding", n.pos = v + "embeddings.position_embedding.weight";
      if (c.family == VitFamily::hf_clip) n.cls = v + "embeddings.class_embedding";
      if (c.pre_norm) n.norm_pre = v + "pre_layrnorm";
      n.block_prefix = v + "encoder.layers.";
      n.block = EncoderBlockNames::hf();
      // CLIP's post_layernorm acts on the pooled class token (fc_norm); SigLIP's on every token (final norm).
      if (c.final_norm) n.norm = v + "post_layernorm";
      if (c.fc_norm) n.fc_norm = v + "post_layernorm";
      if (c.pool == VitPool::attention) n.pool = v + "head";
      if (c.projection_dim) n.projection = "visual_projection";
      n.cls_shape = {D}, n.pos_shape = {L, D};
      break;
    }
  }
  return n;
}

inline bool is_perfect_square(Index n, Index& side) {
  side = Index(std::llround(std::sqrt(double(n))));
  return n >= 0 && side * side == n;
}

// Heads when neither the shapes nor a config say: the published models' counts by width (ViT-Ti/S/B/L/H/g,
// SigLIP so400m, OpenCLIP bigG), else one head per 64 channels.
inline Index default_heads(Index width) {
  switch (width) {
    case 192: return 3;
    case 384: return 6;
    case 768: return 12;
    case 1024: case 1152: case 1280: case 1408: case 1664: return 16;
    default: return width % 64 == 0 ? width / 64 : 0;
  }
}

// PyTorch's antialiased bicubic weights for one axis (F.interpolate(mode="bicubic", antialias=True,
// align_corners=False)): output i reads inputs [first[i], first[i] + count[i]) with weights[i * taps + j].
struct AxisWeights {
  std::vector<Index> first, count;
  std::vector<double> weights;
  Index taps = 0;
};

inline AxisWeights antialias_bicubic_weights(Index in, Index out) {
  // Keys' cubic with a = -0.5 (PyTorch's antialias filter, as PIL's), zero beyond |x| >= 2.
  auto filter = [](double x) {
    const double a = -0.5;
    x = std::abs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
  };
  const double scale = double(in) / double(out);
  const double support = scale >= 1.0 ? 2.0 * scale : 2.0;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  AxisWeights w;
  w.taps = Index(std::ceil(support)) * 2 + 1;
  w.first.resize(std::size_t(out));
  w.count.resize(std::size_t(out));
  w.weights.assign(std::size_t(out * w.taps), 0.0);
  for (Index i = 0; i < out; ++i) {
    const double center = scale * (double(i) + 0.5);
    // int64 casts truncate toward zero, as PyTorch's static_cast<int64_t>.
    const Index lo = std::max<Index>(Index(center - support + 0.5), 0);
    const Index n = std::min<Index>(Index(center + support + 0.5), in) - lo;
    double total = 0;
    double* wi = w.weights.data() + i * w.taps;
    for (Index j = 0; j < n; ++j) total += (wi[j] = filter((double(j + lo) - center + 0.5) * invscale));
    if (total != 0)
      for (Index j = 0; j < n; ++j) wi[j] /= total;
    w.first[std::size_t(i)] = lo;
    w.count[std::size_t(i)] = n;
  }
  return w;
}

// grid (h, w, D) rows of `src` (row-major, row = y * w + x) -> (nh, nw, D): antialiased bicubic, width
// first, then height, each pass rounded to T as PyTorch's separable kernel does.
template <class T>
void resample_grid_antialias(const T* src, Size2 from, Size2 to, Index D, T* dst) {
  const AxisWeights ww = antialias_bicubic_weights(from.w, to.w), wh = antialias_bicubic_weights(from.h, to.h);
  std::vector<T> mid(std::size_t(from.h * to.w * D));
  std::vector<double> acc(static_cast<std::size_t>(D));
  // One output row of D values = sum_j k[j] * input row (first + j) * stride, accumulated in double.
  auto pass = [&](const T* in, Index stride, const AxisWeights& w, Index i, T* out) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const double* k = w.weights.data() + i * w.taps;
    for (Index j = 0; j < w.count[std::size_t(i)]; ++j) {
      const T* row = in + (w.first[std::size_t(i)] + j) * stride * D;
      for (Index d = 0; d < D; ++d) acc[std::size_t(d)] += k[j] * double(row[d]);
    }
    for (Index d = 0; d < D; ++d) out[d] = T(acc[std::size_t(d)]);
  };
  for (Index y = 0; y < from.h; ++y)
    for (Index x = 0; x < to.w; ++x) pass(src + y * from.w * D, 1, ww, x, mid.data() + (y * to.w + x) * D);
  for (Index y = 0; y < to.h; ++y)
    for (Index x = 0; x < to.w; ++x) pass(mid.data() + x * D, to.w, wh, y, dst + (y * to.w + x) * D);
}

}  // namespace detail

// Every tensor name of c's model in its family's canonical spelling (HF with "vision_model.", torchvision
// with mlp.0 / mlp.3) and its shape, allocating no weights.
inline std::map<std::string, std::vector<Index>> vit_state_dict_shapes(const VitConfig& c);

// The family a state dict's names belong to, or nullopt.
inline std::optional<VitFamily> detect_vit_family(const std::map<std::string, std::vector<Index>>& shapes) {
  auto has = [&](const std::string& n) { return shapes.count(n) != 0; };
  if (has("conv_proj.weight") && has("encoder.pos_embedding")) return VitFamily::torchvision;
  if (has("patch_embed.proj.weight") && has("pos_embed")) return VitFamily::timm;
  for (const char* p : {"vision_model.", ""}) {
    const std::string v = p;
    if (!has(v + "embeddings.patch_embedding.weight")) continue;
    return has(v + "embeddings.class_embedding") ? VitFamily::hf_clip : VitFamily::hf_siglip;
  }
  return std::nullopt;
}

namespace detail {

inline std::map<std::string, std::vector<Index>> safetensors_shapes(const SafeTensors& file) {
  std::map<std::string, std::vector<Index>> shapes;
  for (const auto& info : file.tensors()) shapes[info.name] = std::vector<Index>(info.shape.begin(), info.shape.end());
  return shapes;
}

// How this state dict spells the family's names.
inline VitNaming vit_naming(const std::map<std::string, std::vector<Index>>& shapes, VitFamily family) {
  VitNaming n;
  if (family == VitFamily::hf_clip || family == VitFamily::hf_siglip)
    n.hf_prefix = shapes.count("vision_model.embeddings.patch_embedding.weight") ||
                          !shapes.count("embeddings.patch_embedding.weight")
                      ? "vision_model."
                      : "";
  if (family == VitFamily::torchvision)
    n.legacy_mlp = shapes.count("encoder.layers.encoder_layer_0.mlp.linear_1.weight") != 0;
  return n;
}

}  // namespace detail

// Reads a VitConfig off a state dict's names and shapes (width, patch, channels, depth, MLP width, the
// position grid and so the image size, class and register tokens, norms, biases, head, projection,
// pooling head), fills what shapes cannot say from `hf` (a config.json: heads, eps, activation, pooling,
// a non-square image size), else from the family's defaults; keys that shapes also give are checked against
// them. `family` defaults to the one the names belong to. FormatError names the source and what is wrong.
inline VitConfig infer_vit_config(const std::map<std::string, std::vector<Index>>& shapes,
                                  std::optional<VitFamily> family = std::nullopt, const HfVisionConfig& hf = {},
                                  const std::string& source = "the state dict") {
  const char* op = "infer_vit_config";
  if (!family) family = detect_vit_family(shapes);
  if (!family)
    detail::throw_format(op, ": ", source, " is not a ViT state dict of a known family (no conv_proj.weight + "
                         "encoder.pos_embedding (torchvision), patch_embed.proj.weight + pos_embed (timm) or "
                         "[vision_model.]embeddings.patch_embedding.weight (Hugging Face CLIP / SigLIP))");
  const detail::VitNaming naming = detail::vit_naming(shapes, *family);
  const std::string v = naming.hf_prefix;
  auto shape = [&](const std::string& name, std::size_t rank) -> const std::vector<Index>& {
    auto it = shapes.find(name);
    if (it == shapes.end())
      detail::throw_format(op, ": ", source, " has no '", name, "', which every ", vit_family_name(*family),
                           " state dict has");
    if (it->second.size() != rank)
      detail::throw_format(op, ": ", source, ": expected '", name, "' of rank ", rank, ", but got shape ",
                           detail::dims_str(it->second));
    return it->second;
  };
  auto has = [&](const std::string& n) { return shapes.count(n) != 0; };
  auto count_layers = [&](const std::string& before, const std::string& after) {
    Index n = 0;
    while (has(detail::cat(before, n, after))) ++n;
    return n;
  };

  VitConfig c;
  c.family = *family;
  std::string patch_name, pos_name, block0, fc1_suffix;
  switch (*family) {
    case VitFamily::torchvision:
      patch_name = "conv_proj.weight", pos_name = "encoder.pos_embedding";
      c.depth = count_layers("encoder.layers.encoder_layer_", ".ln_1.weight");
      block0 = "encoder.layers.encoder_layer_0.";
      fc1_suffix = naming.legacy_mlp ? "mlp.linear_1.weight" : "mlp.0.weight";
      c.num_classes = shape("heads.head.weight", 2)[0];
      if (has("heads.pre_logits.weight")) c.representation_size = shape("heads.pre_logits.weight", 2)[0];
      break;
    case VitFamily::timm:
      patch_name = "patch_embed.proj.weight", pos_name = "pos_embed";
      c.depth = count_layers("blocks.", ".norm1.weight");
      block0 = "blocks.0.";
      fc1_suffix = "mlp.fc1.weight";
      c.patch_bias = has("patch_embed.proj.bias");
      c.class_token = has("cls_token");
      c.register_tokens = has("reg_token") ? shape("reg_token", 3)[1] : 0;
      c.pre_norm = has("norm_pre.weight");
      c.final_norm = has("norm.weight");
      c.fc_norm = has("fc_norm.weight");
      c.qkv_bias = has("blocks.0.attn.qkv.bias");
      c.num_classes = has("head.weight") ? shape("head.weight", 2)[0] : 0;
      // timm's rule: fc_norm replaces the final norm when pooling averages; the class token otherwise.
      c.pool = hf.global_pool ? (*hf.global_pool == "avg" ? VitPool::avg : VitPool::token)
                              : (c.fc_norm || !c.class_token ? VitPool::avg : VitPool::token);
      break;
    case VitFamily::hf_clip:
    case VitFamily::hf_siglip: {
      const bool clip = *family == VitFamily::hf_clip;
      patch_name = v + "embeddings.patch_embedding.weight", pos_name = v + "embeddings.position_embedding.weight";
      c.depth = count_layers(v + "encoder.layers.", ".layer_norm1.weight");
      block0 = v + "encoder.layers.0.";
      fc1_suffix = "mlp.fc1.weight";
      c.patch_bias = has(v + "embeddings.patch_embedding.bias");
      c.qkv_bias = has(block0 + "self_attn.q_proj.bias");
      c.class_token = clip;
      c.num_classes = 0;
      c.eps = clip ? 1e-5 : 1e-6;
      c.activation = clip ? Activation::quick_gelu : Activation::gelu_tanh;
      c.pre_norm = clip;
      c.final_norm = !clip;
      c.fc_norm = clip;
      if (clip) {
        c.pool = VitPool::token;
        if (has("visual_projection.weight")) c.projection_dim = shape("visual_projection.weight", 2)[0];
      } else {
        const bool head = hf.vision_use_head.value_or(has(v + "head.probe"));
        c.pool = head ? VitPool::attention : VitPool::none;
      }
      break;
    }
  }
  const std::vector<Index>& pw = shape(patch_name, 4);
  c.width = pw[0], c.in_channels = pw[1], c.patch_size = pw[2];
  if (pw[2] != pw[3])
    detail::throw_format(op, ": ", source, ": '", patch_name, "' has a ", pw[2], "x", pw[3],
                         " kernel; only square patches are supported");
  if (c.depth < 1) shape(block0 + (*family == VitFamily::timm ? "norm1.weight" : "layer_norm1.weight"), 1);
  c.mlp_dim = shape(block0 + fc1_suffix, 2)[0];

  // The position grid: the table's rows minus the prefix rows it holds.
  const bool hf_family = *family == VitFamily::hf_clip || *family == VitFamily::hf_siglip;
  const std::vector<Index>& ps = shape(pos_name, hf_family ? 2 : 3);
  const Index rows = ps[ps.size() - 2];
  Index side = 0;
  const Index prefix = c.num_prefix_tokens();
  if (*family == VitFamily::timm && prefix) {
    // no_embed_class: the table has no rows for the prefix tokens. A config.json image size decides when
    // both readings are squares.
    const bool with = rows >= prefix && detail::is_perfect_square(rows - prefix, side);
    Index side_without = 0;
    const bool without = detail::is_perfect_square(rows, side_without);
    bool use_without = without && !with;
    if (with && without && hf.image_size && hf.patch_size)
      use_without = hf.image_size->h / hf.patch_size->h == side_without;
    c.pos_embed_prefix = !use_without;
    if (use_without) side = side_without;
  }
  Size2 grid;
  const Index grid_rows = rows - (c.pos_embed_prefix ? prefix : 0);
  if (hf.image_size && hf.image_size->h / c.patch_size * (hf.image_size->w / c.patch_size) == grid_rows) {
    grid = {hf.image_size->h / c.patch_size, hf.image_size->w / c.patch_size};
  } else if (detail::is_perfect_square(grid_rows, side) && side > 0) {
    grid = {side, side};
  } else {
    detail::throw_format(op, ": ", source, ": '", pos_name, "' has ", rows, " rows; minus ",
                         c.pos_embed_prefix ? prefix : 0, " prefix rows that is not a square grid of patches",
                         hf.image_size ? detail::cat(" nor the config's image size ", hf.image_size->h, "x",
                                                     hf.image_size->w, " / patch ", c.patch_size)
                                       : std::string(" (give the image size in a config)"));
  }
  c.image_size = {grid.h * c.patch_size, grid.w * c.patch_size};
  // HF keeps the configured image size even where the patch does not divide it (the grid rounds down).
  if (hf.image_size && hf.image_size->h / c.patch_size == grid.h && hf.image_size->w / c.patch_size == grid.w)
    c.image_size = *hf.image_size;

  // What only a config (or the family's default) can say; what the shapes said must agree with it.
  auto agree = [&](const char* key, std::optional<Index> value, Index from_shapes, const std::string& where) {
    if (value && *value != from_shapes)
      detail::throw_format(op, ": ", hf.source, " says \"", key, "\" = ", *value, ", but ", source, " has ",
                           from_shapes, " (", where, ")");
  };
  agree("hidden_size", hf.hidden_size, c.width, patch_name + ".size(0)");
  agree("num_channels", hf.num_channels, c.in_channels, patch_name + ".size(1)");
  agree("num_hidden_layers", hf.num_hidden_layers, c.depth, "blocks in the file");
  agree("intermediate_size", hf.intermediate_size, c.mlp_dim, block0 + fc1_suffix + ".size(0)");
  if (hf.patch_size && (hf.patch_size->h != c.patch_size || hf.patch_size->w != c.patch_size))
    agree("patch_size", hf.patch_size->h != c.patch_size ? hf.patch_size->h : hf.patch_size->w, c.patch_size,
          patch_name + " kernel");
  if (hf.image_size && !(hf.image_size->h / c.patch_size == grid.h && hf.image_size->w / c.patch_size == grid.w))
    detail::throw_format(op, ": ", hf.source, " says \"image_size\" = ", hf.image_size->h, "x", hf.image_size->w,
                         ", a ", hf.image_size->h / c.patch_size, "x", hf.image_size->w / c.patch_size,
                         " patch grid, but ", source, "'s '", pos_name, "' holds a ", grid.h, "x", grid.w, " grid");
  if (hf.projection_dim && c.projection_dim && *hf.projection_dim != c.projection_dim) {
    // A CLIPConfig's projection_dim describes CLIPModel's visual_projection, which the file then holds.
    agree("projection_dim", hf.projection_dim, c.projection_dim, "visual_projection.weight.size(0)");
  }
  if (hf.layer_norm_eps) c.eps = *hf.layer_norm_eps;
  if (hf.hidden_act) c.activation = hf_activation(*hf.hidden_act, hf.source);
  if (hf.num_attention_heads) {
    c.heads = *hf.num_attention_heads;
  } else {
    c.heads = detail::default_heads(c.width);
    if (c.heads == 0)
      detail::throw_format(op, ": ", source, " has width ", c.width, ", for which no published model fixes the "
                           "number of heads; give \"num_attention_heads\" in a config");
  }
  try {
    c.validate();
  } catch (const ShapeError& e) {
    detail::throw_format(op, ": ", hf.empty() ? source : hf.source, ": ", e.what());
  }
  return c;
}

inline VitConfig infer_vit_config(const SafeTensors& file, std::optional<VitFamily> family = std::nullopt,
                                  const HfVisionConfig& hf = {}) {
  return infer_vit_config(detail::safetensors_shapes(file), family, hf, file.label());
}

// What forward_with_hidden returns.
template <class T>
struct VitOutput {
  Tensor<T, 2> output;             // (B, output_dim): what forward() returns
  Tensor<T, 2> pooled;             // (B, D): after pooling and fc_norm (CLIP's pooler_output, SigLIP's too)
  Tensor<T, 3> last_hidden_state;  // (B, N, D), as the family defines it (see the file comment)
  // With VitHidden::every_layer: the tokens entering the first block (after the position table, before any
  // pre-norm) and every block's output, before the final norm.
  Tensor<T, 3> embeddings;
  std::vector<Tensor<T, 3>> blocks;
};

// What forward_packed_with_hidden returns: one row (or tensor) per image, in input order.
template <class T>
struct VitPackedOutput {
  Tensor<T, 2> output;  // (images, output_dim): what forward_packed() returns; empty without pooling
  Tensor<T, 2> pooled;  // (images, D): after pooling and fc_norm; empty without pooling
  // One (tokens_i, D) tensor per image, as forward_with_hidden's last_hidden_state of that image alone.
  std::vector<Tensor<T, 2>> last_hidden_state;
  PackPlan plan;  // how the images were laid out (sequences, their length, each image's slot)
};

// The token budget of a packed sequence when none is given (fovea-embed's --max-seq-len default).
inline constexpr Index kDefaultMaxSeqLen = 2048;

template <class T>
class VisionTransformer {
 public:
  // Built from a config with torch's module defaults (zero weights, LayerNorms at weight 1 and bias 0);
  // load() or update_parameters() fill it. Block and head modules carry the family's names.
  explicit VisionTransformer(const VitConfig& config, const detail::VitNaming& naming = {})
      : config_(checked(config)),
        names_(detail::vit_names(config_, naming)),
        patch_(config_.in_channels, config_.width, config_.patch_size, config_.patch_bias) {
    const Index D = config_.width;
    prefix_ = zeros<2>({config_.num_prefix_tokens(), D});
    pos_ = zeros<2>({config_.num_positions(), D});
    if (config_.pre_norm) norm_pre_.emplace(D, config_.eps);
    blocks_.reserve(std::size_t(config_.depth));
    for (Index i = 0; i < config_.depth; ++i) {
      blocks_.emplace_back(D, config_.heads, config_.mlp_dim, config_.activation, config_.eps, names_.block);
      if (!config_.qkv_bias) drop_qkv_bias(blocks_.back().attn);
    }
    if (config_.final_norm) norm_.emplace(D, config_.eps);
    if (config_.pool == VitPool::attention)
      pool_head_.emplace(D, config_.heads, config_.mlp_dim, config_.eps, config_.activation);
    if (config_.fc_norm) fc_norm_.emplace(D, config_.eps);
    const Index R = config_.representation_size;
    if (R) pre_logits_.emplace(D, R, true);
    if (config_.num_classes) head_.emplace(R ? R : D, config_.num_classes, true);
    if (config_.projection_dim) projection_.emplace(D, config_.projection_dim, false);
  }

  // A model whose config is read off the file (and `hf`, a config.json, when given), with the file's weights.
  static VisionTransformer from_safetensors(const SafeTensors& file, const HfVisionConfig& hf = {},
                                            std::optional<VitFamily> family = std::nullopt) {
    return from_safetensors(file, infer_vit_config(file, family, hf));
  }
  // The config as given (the file must hold exactly its tensors), with the file's weights.
  static VisionTransformer from_safetensors(const SafeTensors& file, const VitConfig& config) {
    check_model_fits(file, vit_state_dict_shapes(config), config.str());  // before a size read off it is allocated
    VisionTransformer m(config, detail::vit_naming(detail::safetensors_shapes(file), config.family));
    m.load(file);
    return m;
  }
  static VisionTransformer from_safetensors(const std::string& path, const HfVisionConfig& hf = {},
                                            std::optional<VitFamily> family = std::nullopt) {
    return from_safetensors(SafeTensors::open(path), hf, family);
  }
  static VisionTransformer from_safetensors(const std::string& path, const VitConfig& config) {
    return from_safetensors(SafeTensors::open(path), config);
  }

  // Fills every weight from the family's names as this file spells them (HF prefix, torchvision legacy MLP
  // names). The file must hold exactly this config's tensors, plus, for Hugging Face files, what the vision
  // tower ignores (text_model.*, text_projection, logit_scale, logit_bias, position_ids buffers); otherwise one
  // FormatError lists every missing and unexpected name and every shape mismatch, and the model is unchanged.
  void load(const SafeTensors& file) {
    const detail::VitNaming naming = detail::vit_naming(detail::safetensors_shapes(file), config_.family);
    const detail::VitNames names = detail::vit_names(config_, naming);
    // Modules are visited under the file's spelling while the loader collects its requests; the model keeps
    // its current names (and weights: the loader copies nothing unless the whole file checks out) on failure.
    const detail::VitNames before = names_;
    set_names(names);
    // The prefix tokens and the position table in the file's own ranks, copied in after the checks pass.
    Tensor<T, 1> cls1;
    Tensor<T, 3> cls3, reg3, pos3;
    WeightLoader<T> loader(file, config_.str());
    const Index D = config_.width;
    if (!names.cls.empty()) {
      if (names.cls_shape.size() == 1) loader.expect(names.cls, cls1 = Tensor<T, 1>(D));
      else loader.expect(names.cls, cls3 = Tensor<T, 3>(1, 1, D));
    }
    if (!names.reg.empty()) loader.expect(names.reg, reg3 = Tensor<T, 3>(1, config_.register_tokens, D));
    if (names.pos_shape.size() == 2) loader.expect(names.pos, pos_);
    else loader.expect(names.pos, pos3 = Tensor<T, 3>(1, config_.num_positions(), D));
    named_modules([&](const std::string& prefix, auto& module) { loader.expect_module(module, prefix); });
    set_names(before);
    if (config_.family == VitFamily::hf_clip || config_.family == VitFamily::hf_siglip) {
      for (const auto& info : file.tensors()) {
        const std::string& n = info.name;
        const bool text = n.rfind("text_model.", 0) == 0 || n.rfind("text_projection.", 0) == 0 ||
                          n == "logit_scale" || n == "logit_bias";
        if (text || n == naming.hf_prefix + "embeddings.position_ids") loader.ignore(n);
      }
    }
    loader.load();
    set_names(names);
    const Index cls_rows = config_.class_token ? 1 : 0;
    if (cls1.size()) std::copy(cls1.data(), cls1.data() + D, prefix_.data());
    if (cls3.size()) std::copy(cls3.data(), cls3.data() + D, prefix_.data());
    if (reg3.size()) std::copy(reg3.data(), reg3.data() + reg3.size(), prefix_.data() + cls_rows * D);
    if (pos3.size()) std::copy(pos3.data(), pos3.data() + pos3.size(), pos_.data());
  }

  const VitConfig& config() const { return config_; }
  const PatchEmbed<T>& patch_embed() const { return patch_; }
  const std::vector<EncoderBlock<T>>& blocks() const { return blocks_; }
  // (prefix tokens, D): the class token, then the register tokens.
  const Tensor<T, 2>& prefix_tokens() const { return prefix_; }
  // (num_positions, D): the learned position table at the configured grid.
  const Tensor<T, 2>& pos_embed() const { return pos_; }

  // f(name, const tensor&) for every parameter under the family's file names (HF separate q_proj / k_proj /
  // v_proj as the modules hold them); the class token, register tokens and position table as the model holds
  // them: prefix_tokens (P, D) and pos_embed (num_positions, D).
  template <class F>
  void named_parameters(F&& f) const {
    visit_parameters(*this, f);
  }

  // The same with mutable tensors, to fill or edit weights without a file (benchmarks, tests). Shapes are
  // fixed by the config: if f resizes a tensor, ShapeError names it.
  template <class F>
  void update_parameters(F&& f) {
    detail::update_keeping_shapes([&](auto&& g) { visit_parameters(*this, g); }, f, "VisionTransformer", config_.str());
  }

  // The position table for a grid (gh, gw) of patches, (prefix rows if the table has them + gh * gw, D),
  // resized as the family does it (see the file comment).
  Tensor<T, 2> position_embedding(Size2 grid, const Context& ctx = default_context()) const {
    if (grid.h < 1 || grid.w < 1)
      detail::throw_shape("VisionTransformer.position_embedding: expected a grid of at least 1x1 patches, but got ",
                          grid.h, "x", grid.w);
    const Size2 own = config_.grid();
    if (grid == own) return pos_;
    const Index prefix = config_.pos_embed_prefix ? config_.num_prefix_tokens() : 0, D = config_.width;
    switch (config_.family) {
      case VitFamily::torchvision:
        return interpolate_pos_embed(pos_, prefix, own, grid, "bicubic", true, ctx);
      case VitFamily::timm: {
        Tensor<T, 2> out(prefix + grid.h * grid.w, D);
        std::copy(pos_.data(), pos_.data() + prefix * D, out.data());
        detail::resample_grid_antialias(pos_.data() + prefix * D, own, grid, D, out.data() + prefix * D);
        return out;
      }
      case VitFamily::hf_clip:
      case VitFamily::hf_siglip:
        return interpolate_pos_embed(pos_, prefix, own, grid, "bicubic", false, ctx);
    }
    return pos_;
  }

  // x (B, C, H, W) -> (B, output_dim): logits (torchvision, timm with a head), image_embeds (CLIP with a
  // projection), else the pooled vector (CLIP's and SigLIP's pooler_output, timm without a head).
  Tensor<T, 2> forward(const Tensor<T, 4>& x, const Context& ctx = default_context()) const {
    return run(x, VitHidden::last, false, ctx).output;
  }

  // The output, the pooled vector and the last hidden state (and, with every_layer, the embeddings and every
  // block's output) of one forward.
  VitOutput<T> forward_with_hidden(const Tensor<T, 4>& x, VitHidden which,
                                   const Context& ctx = default_context()) const {
    return run(x, which, true, ctx);
  }
  VitOutput<T> forward_with_hidden(const Tensor<T, 4>& x, const Context& ctx = default_context()) const {
    return run(x, VitHidden::last, true, ctx);
  }

  // images[k] (N_k, C, H_k, W_k), each tensor N_k images of one size (usually 1), sizes free -> (images,
  // output_dim), images = sum N_k, rows in input order: row i equals forward() of image i alone, up to float
  // rounding. The images are packed into sequences of at most max_seq_len tokens (every token counts: an
  // image has num_tokens(its grid)) and run through the blocks once; see the file comment.
  Tensor<T, 2> forward_packed(const std::vector<Tensor<T, 4>>& images, Index max_seq_len = kDefaultMaxSeqLen,
                              const Context& ctx = default_context()) const {
    return run_packed(images, max_seq_len, false, ctx).output;
  }
  Tensor<T, 2> forward_packed(const std::vector<Tensor<T, 4>>& images, const Context& ctx) const {
    return forward_packed(images, kDefaultMaxSeqLen, ctx);
  }

  // The same with the pooled rows, each image's last hidden state (n_i, D) and the packing plan.
  VitPackedOutput<T> forward_packed_with_hidden(const std::vector<Tensor<T, 4>>& images,
                                                Index max_seq_len = kDefaultMaxSeqLen,
                                                const Context& ctx = default_context()) const {
    return run_packed(images, max_seq_len, true, ctx);
  }
  VitPackedOutput<T> forward_packed_with_hidden(const std::vector<Tensor<T, 4>>& images, const Context& ctx) const {
    return forward_packed_with_hidden(images, kDefaultMaxSeqLen, ctx);
  }

  // The tokens an image with this patch grid has in a sequence: prefix tokens (class, registers) + patches.
  Index num_tokens(Size2 grid) const { return config_.num_prefix_tokens() + grid.h * grid.w; }

  // The patch grid of an input (B, C, H, W), (H / P, W / P) rounded down, after the checks forward makes.
  Size2 grid_for(const std::array<Index, 4>& input, const char* op = "VisionTransformer.forward") const {
    const Index P = config_.patch_size;
    const std::string shapes = detail::cat("; input ", detail::dims_str(input), ", patch weight ",
                                           detail::shape_str(patch_.weight));
    if (input[1] != config_.in_channels)
      detail::throw_shape(op, ": expected input channels == ", config_.in_channels, " (the patch embedding's ",
                          "weight.size(1)), but got ", input[1], shapes);
    if (input[0] < 1) detail::throw_shape(op, ": expected a batch of at least one image, but got ", input[0], shapes);
    if (input[2] < P || input[3] < P)
      detail::throw_shape(op, ": expected an image of at least one patch (", P, "x", P, "), but got ", input[2], "x",
                          input[3], shapes);
    return {input[2] / P, input[3] / P};
  }

 private:
  template <int R>
  static Tensor<T, R> zeros(const std::array<Index, R>& dims) {
    Tensor<T, R> t(dims);
    t.setZero();
    return t;
  }
  static const VitConfig& checked(const VitConfig& c) {
    c.validate();
    return c;
  }
  // timm's qkv_bias=False keeps the output projection's bias: drop only the q, k, v biases.
  static void drop_qkv_bias(MultiheadAttention<T>& a) {
    if (a.separate_qkv()) {
      const Index D = a.embed_dim();
      a.q_proj.emplace(D, D, false), a.k_proj.emplace(D, D, false), a.v_proj.emplace(D, D, false);
    } else {
      a.in_proj_bias.resize(0);
    }
  }

  void set_names(const detail::VitNames& n) {
    names_ = n;
    for (EncoderBlock<T>& b : blocks_) {
      b.names = n.block;
      b.attn.names = n.block.attn_names;
      b.mlp.names = n.block.mlp_names;
    }
  }

  // f(prefix, module) for every module, under the family's names.
  template <class F>
  void named_modules(F&& f) {
    visit_modules(*this, f);
  }
  template <class Self, class F>
  static void visit_modules(Self& self, F&& f) {
    const detail::VitNames& n = self.names_;
    f(n.patch, self.patch_);
    if (self.norm_pre_) f(n.norm_pre, *self.norm_pre_);
    for (std::size_t i = 0; i < self.blocks_.size(); ++i) f(n.block_name(Index(i)), self.blocks_[i]);
    if (self.norm_) f(n.norm, *self.norm_);
    if (self.pool_head_) f(n.pool, *self.pool_head_);
    if (self.fc_norm_) f(n.fc_norm, *self.fc_norm_);
    if (self.pre_logits_) f(n.pre_logits, *self.pre_logits_);
    if (self.head_) f(n.head, *self.head_);
    if (self.projection_) f(n.projection, *self.projection_);
  }
  template <class Self, class F>
  static void visit_parameters(Self& self, F&& f) {
    f("prefix_tokens", self.prefix_);
    f("pos_embed", self.pos_);
    visit_modules(self, [&](const std::string& prefix, auto& module) { module.named_tensors(prefix, f); });
  }

  // x (B, C, H, W) -> everything forward and forward_with_hidden return.
  VitOutput<T> run(const Tensor<T, 4>& x, VitHidden which, bool keep_hidden, const Context& ctx) const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "VisionTransformer: float or double");
    const char* op = keep_hidden ? "VisionTransformer.forward_with_hidden" : "VisionTransformer.forward";
    const Size2 grid = grid_for(x.dimensions(), op);
    if (config_.pool == VitPool::none && !keep_hidden)
      detail::throw_shape(op, ": this model has no pooled output (", config_.str(),
                          ", SigLIP with vision_use_head = false); use forward_with_hidden for its hidden states");
    const Index B = x.dimension(0), D = config_.width, prefix = config_.num_prefix_tokens();
    const bool every = keep_hidden && which == VitHidden::every_layer;
    VitOutput<T> out;

    // tokens (B, N, D) = [prefix tokens; patch_embed(x)] + position rows, in one pass (the patch conv drops
    // rows and columns past the last whole patch, as PyTorch's does).
    Tensor<T, 3> tokens = patch_.forward(x, prefix_, position_embedding(grid, ctx), ctx);
    const Index N = tokens.dimension(1);
    if (every) out.embeddings = tokens;

    EncoderWorkspace<T> ws;  // shared by every block and the pooling head
    if (norm_pre_) {
      norm_pre_->forward_into(tokens, ws.normed, ws.mean, ws.rstd, ctx);
      std::swap(tokens, ws.normed);
    }
    for (const EncoderBlock<T>& blk : blocks_) {
      blk.forward_(tokens, ws, AttentionMask<T>(), ctx);
      if (every) out.blocks.push_back(tokens);
    }
    if (norm_) {
      norm_->forward_into(tokens, ws.normed, ws.mean, ws.rstd, ctx);
      std::swap(tokens, ws.normed);
    }

    if (config_.pool != VitPool::none) {
      switch (config_.pool) {
        case VitPool::token: out.pooled = token_pool(tokens, 0); break;
        case VitPool::avg: out.pooled = mean_pool(tokens, prefix, ctx); break;
        case VitPool::attention: out.pooled = pool_head_->forward(tokens, ws, AttentionMask<T>(), ctx); break;
        case VitPool::none: break;
      }
      if (fc_norm_) out.pooled = fc_norm_->forward(out.pooled, ctx);
      out.output = head_forward(out.pooled, ctx);
    }
    // CLIP's last_hidden_state is the blocks' output (post_layernorm acts on the pooled token only), which
    // `tokens` is: CLIP has no final norm.
    if (keep_hidden) out.last_hidden_state = std::move(tokens);
    (void)B, (void)D, (void)N;
    return out;
  }

  // pooled (B, D), after fc_norm -> (B, output_dim): head(tanh(pre_logits(pooled))) | head(pooled) |
  // projection(pooled) | pooled.
  Tensor<T, 2> head_forward(const Tensor<T, 2>& pooled, const Context& ctx) const {
    if (head_) {
      if (!pre_logits_) return head_->forward(pooled, ctx);
      Tensor<T, 2> rep = pre_logits_->forward(pooled, ctx);
      for (Index i = 0; i < rep.size(); ++i) rep.data()[i] = std::tanh(rep.data()[i]);
      return head_->forward(rep, ctx);
    }
    if (projection_) return projection_->forward(pooled, ctx);
    return pooled;
  }

  // images[k] (N_k, C, H_k, W_k) -> everything forward_packed and forward_packed_with_hidden return.
  VitPackedOutput<T> run_packed(const std::vector<Tensor<T, 4>>& images, Index max_seq_len, bool keep_hidden,
                                const Context& ctx) const {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "VisionTransformer: float or double");
    const char* op = keep_hidden ? "VisionTransformer.forward_packed_with_hidden" : "VisionTransformer.forward_packed";
    // Every check before any compute.
    if (images.empty()) detail::throw_shape(op, ": expected at least one image, but got an empty list");
    if (max_seq_len < 1) detail::throw_shape(op, ": expected max_seq_len >= 1, but got ", max_seq_len);
    if (config_.pool == VitPool::none && !keep_hidden)
      detail::throw_shape(op, ": this model has no pooled output (", config_.str(), ", SigLIP with vision_use_head = ",
                          "false); use forward_packed_with_hidden for its hidden states");
    const Index D = config_.width;
    std::vector<Size2> grids;
    std::vector<Index> lengths;
    for (std::size_t k = 0; k < images.size(); ++k) {
      const std::string where = detail::cat(op, ": images[", k, "]");
      const Size2 grid = grid_for(images[k].dimensions(), where.c_str());
      const Index n = num_tokens(grid);
      if (n > max_seq_len)
        detail::throw_shape(op, ": image ", lengths.size(), " (images[", k, "], ", detail::shape_str(images[k]),
                            ") has ", n, " tokens (", config_.num_prefix_tokens(), " prefix + ", grid.h, "x", grid.w,
                            " patches), more than max_seq_len = ", max_seq_len,
                            "; raise max_seq_len or use a smaller image");
      grids.push_back(grid);
      lengths.insert(lengths.end(), std::size_t(images[k].dimension(0)), n);
    }

    VitPackedOutput<T> out;
    out.plan = plan_packing(lengths, max_seq_len);
    const PackPlan& plan = out.plan;
    const Tensor<Index, 2> ids = plan.segment_ids();
    const AttentionMask<T> mask = AttentionMask<T>::segments(ids);

    // tokens (S, L, D): every image's sequence built as the single-image path builds it (its own grid's
    // position table, one per distinct grid), copied into its slot; padding stays zero.
    Tensor<T, 3> tokens(plan.sequences, plan.seq_len, D);
    tokens.setZero();
    std::map<std::pair<Index, Index>, Tensor<T, 2>> tables;
    std::size_t image = 0;
    for (std::size_t k = 0; k < images.size(); ++k) {
      auto table = tables.find({grids[k].h, grids[k].w});
      if (table == tables.end())
        table = tables.emplace(std::make_pair(grids[k].h, grids[k].w), position_embedding(grids[k], ctx)).first;
      const Tensor<T, 3> own = patch_.forward(images[k], prefix_, table->second, ctx);
      const Index n = own.dimension(1);
      for (Index b = 0; b < own.dimension(0); ++b, ++image) {
        const PackedSlot& s = plan.slots[image];
        std::copy_n(own.data() + b * n * D, n * D, tokens.data() + (s.sequence * plan.seq_len + s.offset) * D);
      }
    }

    EncoderWorkspace<T> ws;
    if (norm_pre_) {
      norm_pre_->forward_into(tokens, ws.normed, ws.mean, ws.rstd, ctx);
      std::swap(tokens, ws.normed);
    }
    for (const EncoderBlock<T>& blk : blocks_) blk.forward_(tokens, ws, mask, ctx);
    if (norm_) {
      norm_->forward_into(tokens, ws.normed, ws.mean, ws.rstd, ctx);
      std::swap(tokens, ws.normed);
    }

    if (config_.pool != VitPool::none) {
      switch (config_.pool) {
        case VitPool::token: out.pooled = packed_token_pool(tokens, plan); break;
        case VitPool::avg: out.pooled = packed_mean_pool(tokens, plan, ctx); break;
        case VitPool::attention: out.pooled = packed_attention_pool(tokens, plan, ids, ws, ctx); break;
        case VitPool::none: break;
      }
      if (fc_norm_) out.pooled = fc_norm_->forward(out.pooled, ctx);
      out.output = head_forward(out.pooled, ctx);
    }
    if (keep_hidden) out.last_hidden_state = unpack_tokens(tokens, plan);
    return out;
  }

  // tokens (S, L, D) -> (images, D): each image's class token (the first of its slot).
  Tensor<T, 2> packed_token_pool(const Tensor<T, 3>& tokens, const PackPlan& plan) const {
    const Index D = tokens.dimension(2);
    Tensor<T, 2> out(plan.images(), D);
    for (Index i = 0; i < plan.images(); ++i) {
      const PackedSlot& s = plan.slots[std::size_t(i)];
      std::copy_n(tokens.data() + (s.sequence * plan.seq_len + s.offset) * D, D, out.data() + i * D);
    }
    return out;
  }

  // tokens (S, L, D) -> (images, D): the mean of each image's own patch tokens, summed in double in token
  // order as mean_pool does, so a packed image pools to the same bits as its tokens alone would.
  Tensor<T, 2> packed_mean_pool(const Tensor<T, 3>& tokens, const PackPlan& plan, const Context& ctx) const {
    const Index D = tokens.dimension(2), prefix = config_.num_prefix_tokens();
    Tensor<T, 2> out(plan.images(), D);
    ctx.parallel_for(plan.images(), [&](Index i) {
      const PackedSlot& s = plan.slots[std::size_t(i)];
      std::vector<double> acc(std::size_t(D), 0.0);
      for (Index n = prefix; n < s.length; ++n) {
        const T* row = tokens.data() + (s.sequence * plan.seq_len + s.offset + n) * D;
        for (Index d = 0; d < D; ++d) acc[std::size_t(d)] += double(row[d]);
      }
      for (Index d = 0; d < D; ++d) out(i, d) = T(acc[std::size_t(d)] / double(s.length - prefix));
    });
    return out;
  }

  // tokens (S, L, D), ids (S, L) -> (images, D): SigLIP's head with one probe query per image. Sequence s gets
  // Q queries (Q = the most images a sequence holds), all the probe; query j carries the id of the j-th image
  // of s (or -1: a padding query, whose output is zeros and is never read), so AttentionMask::segments keeps
  // each query on its own image's tokens. Then the head's layernorm and MLP residual, per query row.
  Tensor<T, 2> packed_attention_pool(const Tensor<T, 3>& tokens, const PackPlan& plan, const Tensor<Index, 2>& ids,
                                     EncoderWorkspace<T>& ws, const Context& ctx) const {
    const AttentionPoolHead<T>& head = *pool_head_;
    const Index S = plan.sequences, L = plan.seq_len, D = tokens.dimension(2);
    std::vector<Index> local(plan.slots.size()), count(std::size_t(S), 0);
    for (std::size_t i = 0; i < plan.slots.size(); ++i) local[i] = count[std::size_t(plan.slots[i].sequence)]++;
    const Index Q = *std::max_element(count.begin(), count.end());
    Tensor<Index, 2> q_ids(S, Q);
    q_ids.setConstant(-1);
    for (std::size_t i = 0; i < plan.slots.size(); ++i) q_ids(plan.slots[i].sequence, local[i]) = Index(i);
    Tensor<T, 3> probes(1, Q, D);  // read with batch stride 0: one set of queries for every sequence
    for (Index j = 0; j < Q; ++j) std::copy_n(head.probe.data(), D, probes.data() + j * D);
    Tensor<T, 3> pooled(S, Q, D);
    const AttentionMask<T> mask = AttentionMask<T>::segments(q_ids, ids);
    head.attention.cross_attention_rows(probes.data(), 1, Q, tokens.data(), S, L, mask, pooled.data(), false, ws.attn,
                                        ctx);
    head.layernorm.forward_into(pooled, ws.normed, ws.mean, ws.rstd, ctx);
    head.mlp.forward_rows(ws.normed.data(), S * Q, pooled.data(), true, ws.hidden, ctx);
    Tensor<T, 2> out(plan.images(), D);
    for (std::size_t i = 0; i < plan.slots.size(); ++i)
      std::copy_n(pooled.data() + (plan.slots[i].sequence * Q + local[i]) * D, D, out.data() + Index(i) * D);
    return out;
  }

  VitConfig config_;
  detail::VitNames names_;
  PatchEmbed<T> patch_;
  Tensor<T, 2> prefix_;  // (prefix tokens, D): class token, then register tokens
  Tensor<T, 2> pos_;     // (num_positions, D)
  std::optional<LayerNorm<T>> norm_pre_;
  std::vector<EncoderBlock<T>> blocks_;
  std::optional<LayerNorm<T>> norm_;
  std::optional<AttentionPoolHead<T>> pool_head_;
  std::optional<LayerNorm<T>> fc_norm_;
  std::optional<Linear<T>> pre_logits_, head_, projection_;
};

inline std::map<std::string, std::vector<Index>> vit_state_dict_shapes(const VitConfig& c) {
  c.validate();
  const detail::VitNames n = detail::vit_names(c, detail::VitNaming{});
  const Index D = c.width, M = c.mlp_dim, R = c.representation_size;
  std::map<std::string, std::vector<Index>> m;
  if (!n.cls.empty()) m[n.cls] = n.cls_shape;
  if (!n.reg.empty()) m[n.reg] = n.reg_shape;
  m[n.pos] = n.pos_shape;
  auto param = [&](const std::string& prefix, std::vector<Index> weight, bool bias) {
    if (prefix.empty()) return;
    m[prefix + ".weight"] = weight;
    if (bias) m[prefix + ".bias"] = {weight[0]};
  };
  param(n.patch, {D, c.in_channels, c.patch_size, c.patch_size}, c.patch_bias);
  param(n.norm_pre, {D}, true), param(n.norm, {D}, true), param(n.fc_norm, {D}, true);
  param(n.pre_logits, {R, D}, true);
  param(n.head, {c.num_classes, R ? R : D}, true);
  param(n.projection, {c.projection_dim, D}, false);
  // The block's and pooling head's names come from the modules themselves, built tiny (width 2, one head,
  // MLP 5) so that each dimension says what it stands for: 2 -> D, 6 -> 3D, 5 -> M.
  auto add = [&](const std::string& name, const auto& t) {
    std::vector<Index> dims(t.dimensions().begin(), t.dimensions().end());
    for (Index& d : dims) d = d == 2 ? D : d == 6 ? 3 * D : d == 5 ? M : d;
    m[name] = dims;
  };
  EncoderBlock<float> blk(2, 1, 5, c.activation, c.eps, n.block);
  if (!c.qkv_bias) {
    if (blk.attn.separate_qkv()) {
      blk.attn.q_proj.emplace(2, 2, false), blk.attn.k_proj.emplace(2, 2, false), blk.attn.v_proj.emplace(2, 2, false);
    } else {
      blk.attn.in_proj_bias.resize(0);
    }
  }
  for (Index i = 0; i < c.depth; ++i) blk.named_tensors(n.block_name(i), add);
  if (!n.pool.empty()) AttentionPoolHead<float>(2, 1, 5, c.eps, c.activation).named_tensors(n.pool, add);
  return m;
}

}  // namespace fovea

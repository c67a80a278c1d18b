// fovea-embed: runs a vision encoder from a .safetensors checkpoint on a preprocessed .npy batch and writes
// its outputs as float32 .npy. One function per architecture (see archs()): torchvision-resnet and the ViT
// families torchvision-vit, timm-vit, hf-clip, hf-siglip (several inputs of their own sizes run packed, in one
// pass: VisionTransformer::forward_packed); run_navit is the place for navit.
//
// Exit codes: 0 done, 1 bad input (files, shapes, weights), 2 bad usage (flags, unknown or unimplemented
// architecture). Every error is one line on stderr that names its cause.
//
// The logic lives in fovea_embed_main(argc, argv, out, err) so tests can run it in-process; define
// FOVEA_EMBED_NO_MAIN before including this file to leave out main(). Guarded: two test files of one unity
// translation unit include it.
#ifndef FOVEA_EXAMPLES_FOVEA_EMBED_CPP
#define FOVEA_EXAMPLES_FOVEA_EMBED_CPP
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fovea/core/context.hpp"
#include "fovea/core/error.hpp"
#include "fovea/io/npy.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/io/image.hpp"
#include "fovea/io/preprocess.hpp"
#include "fovea/models/config.hpp"
#include "fovea/models/navit.hpp"
#include "fovea/models/resnet.hpp"
#include "fovea/models/vit.hpp"

namespace fovea_embed {

using fovea::Index;

// Wrong flags or an architecture this build cannot run: exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::string arch, weights, config, output, hidden_states;
  std::vector<std::string> inputs, images;
  int threads = 0;  // 0: the default context (FOVEA_NUM_THREADS, else every core)
  std::optional<Index> max_seq_len;
};

inline const char* usage_text() {
  return R"(usage: fovea-embed --arch ARCH --weights FILE.safetensors [--config config.json]
                   (--input X.npy | --image FILE...) --output OUT.npy [--hidden-states H.npy]
                   [--threads N] [--max-seq-len L]

Runs a vision encoder on a batch and writes its outputs as float32 .npy files.

  --arch ARCH            torchvision-resnet (torchvision.models.resnet18/34/50/101/152, ResNeXt, wide ResNet);
                         torchvision-vit (vit_b_16, vit_b_32, vit_l_16, ...); timm-vit (timm's vit_*);
                         hf-clip (CLIPVisionModel[WithProjection] or a full CLIPModel file); hf-siglip
                         (SiglipVisionModel or a full SiglipModel file); navit (lucidrains' vit_pytorch na_vit.py).
  --weights FILE         .safetensors holding the model's state_dict under its own names (torchvision:
                         conv1.weight, bn1.*, layer1.0.conv1.weight, ..., layer4.*.downsample.0.weight, fc.*).
                         F32, F64, F16 or BF16. BatchNorm's num_batches_tracked may be present and is ignored.
                         The architecture (block type, blocks per stage, widths, groups, classes, input
                         channels) is read off the names and shapes. ViT families: the family's own names
                         (Hugging Face with or without "vision_model."); width, depth, MLP, patch, image size,
                         tokens, norms, head and projection are read off the shapes.
  --config FILE          Optional config.json (keys at the top level or under "vision_config"). For
                         torchvision-resnet these keys, when present, override what the shapes say, and
                         the weights must then match: layer_type ("basic" | "bottleneck"), depths [4],
                         hidden_sizes [4] (stage output channels, as Hugging Face's ResNetConfig),
                         embedding_size (stem width), num_channels, num_labels, groups, width_per_group.
                         ViT families read hidden_size, num_attention_heads, num_hidden_layers,
                         intermediate_size, patch_size, image_size, layer_norm_eps, hidden_act (and
                         projection_dim, vision_use_head, timm's global_pool); keys the shapes also give must
                         agree with them. Without it: the family's eps and activation, and the heads of the
                         published model of that width. Other keys are ignored.
  --input X.npy          Preprocessed batch (N, C, H, W), float32 or float64 (computed in that precision),
                         e.g. normalised with the ImageNet mean and std. Any H, W >= 1 (ViT: >= the patch).
                         ViT families: repeat --input for images of different sizes, each file one image
                         (1, C, H, W); they are packed into sequences of at most --max-seq-len tokens and run
                         in one pass, attention kept inside each image; the output has one row per image, in
                         input order, equal to running each image alone. A size
                         other than the configured one resizes the position embeddings as the family does
                         (torchvision's interpolate_embeddings: bicubic, align_corners=True; timm's
                         dynamic_img_size: bicubic with antialias; Hugging Face's interpolate_pos_encoding:
                         bicubic, align_corners=False).
  --image FILE           Decode and preprocess an image (repeatable), ViT families only, at the model's image
                         size S with the family's own eval pipeline: torchvision Resize(S*256/224, bilinear) +
                         CenterCrop(S) + ImageNet mean/std; timm Resize(S/0.9, bicubic) + CenterCrop(S) +
                         mean = std = 0.5; CLIPImageProcessor; SiglipImageProcessor (PIL-exact resizes).
                         Not implemented yet for torchvision-resnet.
  --output OUT.npy       What the reference model returns, as float32. torchvision-resnet: the logits of
                         model.eval()(x), shape (N, num_classes). torchvision-vit, timm-vit: model(x) (logits,
                         or timm's pooled feature without a head). hf-clip: image_embeds when the file has
                         visual_projection.weight, else pooler_output. hf-siglip: pooler_output.
  --hidden-states H.npy  The last hidden state, as float32. torchvision-resnet: layer4's output feature
                         map before average pooling, shape (N, C, h, w) (C = 512 for resnet18/34, 2048 for
                         resnet50+; h, w = 7, 7 at 224 x 224). ViT families: (N, tokens, D) after the final
                         norm (torchvision, timm, SigLIP), CLIP's last_hidden_state before post_layernorm.
                         With several inputs: (images, tokens, D) when every image has the same number of
                         tokens; images of different sizes have no common array and are refused (exit 2).
  --threads N            Worker threads (default: FOVEA_NUM_THREADS, else every core).
  --max-seq-len L        Token budget per packed sequence for ViT families and navit (not for ResNet), used
                         with several --input or --image files: every token counts (class and register
                         tokens, patches); an image with more tokens than L is an error. Default 2048.
  -h, --help             This text.

Exit status: 0 on success, 1 when an input file, its shape or the weights are wrong, 2 on bad usage or an
architecture that is not implemented yet. Errors go to stderr, one line naming the cause.
)";
}

inline int parse_positive(const std::string& flag, const std::string& v, long max) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || end != v.c_str() + v.size() || n < 1 || n > max)
    throw UsageError(fovea::detail::cat(flag, " expects a whole number from 1 to ", max, ", got '", v, "'"));
  return int(n);
}

// Flags as --name VALUE or --name=VALUE. Returns nothing when --help was asked for.
inline std::optional<Args> parse_args(int argc, char** argv) {
  Args a;
  std::map<std::string, bool> seen;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i], value;
    if (flag == "-h" || flag == "--help") return std::nullopt;
    if (flag.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + flag + "' (flags start with --)");
    bool inline_value = false;
    if (const auto eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      inline_value = true;
    }
    static const char* known[] = {"--arch",   "--weights",       "--config",  "--input",      "--image",
                                  "--output", "--hidden-states", "--threads", "--max-seq-len"};
    if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return flag == k; }) == std::end(known))
      throw UsageError("unknown flag '" + flag + "' (see --help)");
    if (!inline_value) {
      if (i + 1 >= argc) throw UsageError(flag + " needs a value");
      value = argv[++i];
    }
    if (value.empty()) throw UsageError(flag + " needs a non-empty value");
    const bool repeatable = flag == "--input" || flag == "--image";
    if (!repeatable && seen[flag]) throw UsageError(flag + " given more than once");
    seen[flag] = true;
    if (flag == "--arch") a.arch = value;
    else if (flag == "--weights") a.weights = value;
    else if (flag == "--config") a.config = value;
    else if (flag == "--input") a.inputs.push_back(value);
    else if (flag == "--image") a.images.push_back(value);
    else if (flag == "--output") a.output = value;
    else if (flag == "--hidden-states") a.hidden_states = value;
    else if (flag == "--threads") a.threads = parse_positive(flag, value, 4096);
    else if (flag == "--max-seq-len") a.max_seq_len = parse_positive(flag, value, 1 << 30);
  }
  if (a.arch.empty()) throw UsageError("--arch is required (see --help)");
  if (a.weights.empty()) throw UsageError("--weights is required");
  if (a.output.empty()) throw UsageError("--output is required");
  if (a.inputs.empty() && a.images.empty()) throw UsageError("one of --input or --image is required");
  if (!a.inputs.empty() && !a.images.empty()) throw UsageError("give --input or --image, not both");
  return a;
}

// Writes (shape) values as float32, whatever precision they were computed in.
template <class T, int R>
void write_float32(const std::string& path, const fovea::Tensor<T, R>& t) {
  std::vector<float> v(static_cast<std::size_t>(t.size()));
  for (Index i = 0; i < t.size(); ++i) v[std::size_t(i)] = static_cast<float>(t.data()[i]);
  fovea::write_npy(path, v.data(), std::vector<Index>(t.dimensions().begin(), t.dimensions().end()));
}

// config.json -> the object holding the vision keys (top level or "vision_config").
inline nlohmann::json read_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) fovea::detail::throw_format("--config: cannot open '", path, "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fovea::detail::throw_format("--config: '", path, "' is not valid JSON: ", e.what());
  }
  if (!j.is_object()) fovea::detail::throw_format("--config: '", path, "' must hold a JSON object");
  if (j.contains("vision_config")) {
    if (!j["vision_config"].is_object())
      fovea::detail::throw_format("--config: '", path, "': \"vision_config\" must be an object");
    return j["vision_config"];
  }
  return j;
}

// Overrides what the weights' shapes said with the config.json keys that are present.
inline void apply_resnet_config(const nlohmann::json& j, const std::string& path, fovea::ResNetConfig& c) {
  auto fail = [&](const std::string& key, const std::string& want) {
    fovea::detail::throw_format("--config: '", path, "': \"", key, "\" must be ", want, ", got ", j[key].dump());
  };
  auto whole = [&](const std::string& key) -> std::optional<Index> {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    if (!j[key].is_number_integer() || j[key].get<long long>() < 1) fail(key, "a whole number >= 1");
    return Index(j[key].get<long long>());
  };
  auto four = [&](const std::string& key) -> std::optional<std::array<Index, 4>> {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    const auto& v = j[key];
    if (!v.is_array() || v.size() != 4) fail(key, "a list of 4 whole numbers (one per stage)");
    std::array<Index, 4> out{};
    for (std::size_t i = 0; i < 4; ++i) {
      if (!v[i].is_number_integer() || v[i].get<long long>() < 1) fail(key, "a list of 4 whole numbers >= 1");
      out[i] = Index(v[i].get<long long>());
    }
    return out;
  };
  if (j.contains("layer_type")) {
    const auto& t = j["layer_type"];
    if (t == "basic") c.block = fovea::ResNetBlock::basic;
    else if (t == "bottleneck") c.block = fovea::ResNetBlock::bottleneck;
    else fail("layer_type", "\"basic\" or \"bottleneck\"");
  }
  if (auto v = four("depths")) c.layers = *v;
  if (auto v = four("hidden_sizes")) {
    for (int s = 0; s < 4; ++s) {
      if ((*v)[s] % c.expansion() != 0)
        fovea::detail::throw_format("--config: '", path, "': hidden_sizes[", s, "] = ", (*v)[s],
                                    " is not a multiple of the block expansion ", c.expansion());
      c.widths[s] = (*v)[s] / c.expansion();
    }
  }
  if (auto v = whole("embedding_size")) c.stem_width = *v;
  if (auto v = whole("num_channels")) c.in_channels = *v;
  if (auto v = whole("num_labels")) c.num_classes = *v;
  if (auto v = whole("groups")) c.groups = *v;
  if (auto v = whole("width_per_group")) c.width_per_group = *v;
  try {
    c.validate();
  } catch (const fovea::ShapeError& e) {
    fovea::detail::throw_format("--config: '", path, "': ", e.what());
  }
}

template <class T>
int resnet_in(const Args& a, const fovea::SafeTensors& file, const fovea::NpyArray<double>& x_in,
              const fovea::Context& ctx, std::ostream& out) {
  fovea::ResNetConfig config = fovea::infer_resnet_config(file);
  if (!a.config.empty()) apply_resnet_config(read_config(a.config), a.config, config);
  fovea::ResNet<T> model(config);
  model.load(file);

  fovea::Tensor<T, 4> x(x_in.shape[0], x_in.shape[1], x_in.shape[2], x_in.shape[3]);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<T>(x_in.values[std::size_t(i)]);

  const auto t0 = std::chrono::steady_clock::now();
  const auto [logits, features] = model.forward_with_features(x, ctx);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  write_float32(a.output, logits);
  if (!a.hidden_states.empty()) write_float32(a.hidden_states, features);
  out << "torchvision-resnet " << config.str() << " (" << (std::is_same_v<T, float> ? "float32" : "float64")
      << ", " << ctx.num_threads() << " threads): input " << fovea::detail::shape_str(x) << " -> logits "
      << fovea::detail::shape_str(logits) << ", layer4 " << fovea::detail::shape_str(features) << " in " << ms
      << " ms\n";
  return 0;
}

inline int run_torchvision_resnet(const Args& a, const fovea::Context& ctx, std::ostream& out) {
  if (!a.images.empty())
    throw UsageError("--image is not implemented yet for torchvision-resnet (torchvision's resize, crop and "
                     "normalisation are not wired in); pass a preprocessed --input X.npy");
  if (a.inputs.size() != 1) throw UsageError("torchvision-resnet takes exactly one --input (a (N, C, H, W) batch)");
  if (a.max_seq_len) throw UsageError("--max-seq-len applies to the ViT families and navit, not torchvision-resnet");
  const fovea::NpyArray<double> x = fovea::read_npy_array<double>(a.inputs[0]);
  if (x.shape.size() != 4)
    fovea::detail::throw_shape("--input '", a.inputs[0], "': expected a batch (N, C, H, W), but got shape ",
                               fovea::detail::dims_str(x.shape),
                               x.shape.size() == 3 ? " (a single image needs a leading batch dimension of 1)" : "");
  const fovea::SafeTensors file = fovea::SafeTensors::open(a.weights);
  return x.was_double ? resnet_in<double>(a, file, x, ctx, out) : resnet_in<float>(a, file, x, ctx, out);
}

// ---- ViT families (torchvision-vit, timm-vit, hf-clip, hf-siglip) ----------------------------------------

// --image for a ViT family: decoded (stb, as PIL's convert("RGB")) and preprocessed by the family's own
// eval pipeline at the model's configured size S (its image_size.h; every published tower is square):
//   torchvision-vit  ImageClassification: Resize(S * 256 / 224, bilinear), CenterCrop(S), ImageNet mean/std
//                    (ViT_B_16_Weights.IMAGENET1K_V1 and the other 224 weights)
//   timm-vit         transforms_imagenet_eval: Resize(S / 0.9, bicubic), CenterCrop(S), mean = std = 0.5
//                    (vit_base_patch16_224.augreg*'s pretrained config)
//   hf-clip          CLIPImageProcessor: shortest edge S (bicubic), center crop S, OpenAI CLIP mean/std
//   hf-siglip        SiglipImageProcessor: resize to S x S (bicubic), mean = std = 0.5
inline fovea::Tensor<float, 4> vit_preprocess(fovea::VitFamily family, const fovea::Image& img, int size,
                                              const fovea::Context& ctx) {
  switch (family) {
    case fovea::VitFamily::torchvision: return fovea::preprocess_torchvision(img, size * 256 / 224, size,
                                                                            fovea::Resample::bilinear, ctx);
    case fovea::VitFamily::timm: return fovea::preprocess_timm(img, size, 0.9, fovea::Resample::bicubic,
                                                               fovea::kHalfMean, fovea::kHalfStd, ctx);
    case fovea::VitFamily::hf_clip: return fovea::preprocess_clip(img, size, ctx);
    case fovea::VitFamily::hf_siglip: return fovea::preprocess_siglip(img, size, ctx);
  }
  return {};
}

// One input of a ViT run: a batch (N, C, H, W) read from --input, or one preprocessed --image.
struct VitInput {
  std::string label;
  fovea::NpyArray<double> values;  // shape (N, C, H, W)
};

template <class T>
fovea::Tensor<T, 4> to_tensor4(const fovea::NpyArray<double>& a) {
  fovea::Tensor<T, 4> x(a.shape[0], a.shape[1], a.shape[2], a.shape[3]);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<T>(a.values[std::size_t(i)]);
  return x;
}

// The --input files, checked: each (N, C, H, W); with several files, each one image (1, C, H, W) of its own
// size (the packed runs of the ViT families and navit). Values kept in double until the precision is known.
inline std::vector<VitInput> read_image_inputs(const Args& a) {
  std::vector<VitInput> inputs;
  for (const std::string& path : a.inputs) {
    VitInput in{"--input '" + path + "'", fovea::read_npy_array<double>(path)};
    if (in.values.shape.size() != 4)
      fovea::detail::throw_shape(in.label, ": expected (N, C, H, W), but got shape ",
                                 fovea::detail::dims_str(in.values.shape),
                                 in.values.shape.size() == 3 ? " (a single image needs a leading batch dimension of 1)"
                                                             : "");
    if (a.inputs.size() > 1 && in.values.shape[0] != 1)
      fovea::detail::throw_shape(in.label, ": with several --input files each holds one image (1, C, H, W), but got ",
                                 fovea::detail::dims_str(in.values.shape));
    inputs.push_back(std::move(in));
  }
  return inputs;
}

inline bool any_double(const std::vector<VitInput>& inputs) {
  return std::any_of(inputs.begin(), inputs.end(), [](const VitInput& in) { return in.values.was_double; });
}

// --hidden-states with several images: written only when every image has the same number of tokens (one
// (images, tokens, D) array); images of different sizes are refused before any compute (exit 2), since no
// single array holds them and one file per image would change what the flag names.
inline void check_hidden_states_stack(const Args& a, const std::vector<Index>& tokens) {
  if (a.hidden_states.empty()) return;
  for (Index n : tokens)
    if (n != tokens.front())
      throw UsageError(fovea::detail::cat("--hidden-states needs every input to give the same number of tokens "
                                          "(one (images, tokens, D) array), but they give ", tokens.front(), " and ",
                                          n));
}

inline const char* vit_output_name(const fovea::VitConfig& config) {
  return config.num_classes                     ? "logits"
         : config.projection_dim                ? "image_embeds"
         : config.pool == fovea::VitPool::none ? "no pooled output"
                                                : "pooler_output";
}

// One --input (a batch of any N) or one --image: the plain forward, as the reference model runs it.
template <class T>
int vit_batch(const Args& a, const fovea::VisionTransformer<T>& model, const VitInput& in, const fovea::Context& ctx,
              std::ostream& out) {
  const fovea::VitConfig& config = model.config();
  const fovea::Tensor<T, 4> x = to_tensor4<T>(in.values);
  model.grid_for(x.dimensions(), in.label.c_str());
  const auto t0 = std::chrono::steady_clock::now();
  const fovea::VitOutput<T> res = model.forward_with_hidden(x, ctx);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  write_float32(a.output, res.output);
  if (!a.hidden_states.empty()) write_float32(a.hidden_states, res.last_hidden_state);
  out << fovea::vit_family_name(config.family) << " " << config.str() << " ("
      << (std::is_same_v<T, float> ? "float32" : "float64") << ", " << ctx.num_threads() << " threads): 1 input "
      << fovea::detail::shape_str(x) << " -> " << vit_output_name(config) << " " << fovea::detail::shape_str(res.output)
      << " in " << ms << " ms\n";
  return 0;
}

// Several inputs, one image each, of their own sizes: packed into sequences of at most --max-seq-len tokens
// and run in one pass (VisionTransformer::forward_packed); the output has one row per image, in input order,
// equal to running each image alone.
template <class T>
int vit_packed(const Args& a, const fovea::VisionTransformer<T>& model, const std::vector<VitInput>& inputs,
               const fovea::Context& ctx, std::ostream& out) {
  const fovea::VitConfig& config = model.config();
  const Index max_tokens = a.max_seq_len ? Index(*a.max_seq_len) : fovea::kDefaultMaxSeqLen;
  std::vector<fovea::Tensor<T, 4>> images;
  std::vector<Index> tokens;
  for (const VitInput& in : inputs) {
    images.push_back(to_tensor4<T>(in.values));
    const Index n = model.num_tokens(model.grid_for(images.back().dimensions(), in.label.c_str()));
    if (n > max_tokens)
      fovea::detail::throw_shape(in.label, " ", fovea::detail::shape_str(images.back()), " gives ", n,
                                 " tokens, more than --max-seq-len ", max_tokens, " allows in one sequence");
    tokens.push_back(n);
  }
  check_hidden_states_stack(a, tokens);

  const auto t0 = std::chrono::steady_clock::now();
  const fovea::VitPackedOutput<T> res = model.forward_packed_with_hidden(images, max_tokens, ctx);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  write_float32(a.output, res.output);
  if (!a.hidden_states.empty()) {
    const Index B = Index(res.last_hidden_state.size()), N = tokens.front(), D = config.width;
    fovea::Tensor<T, 3> hidden(B, N, D);
    for (Index i = 0; i < B; ++i)
      std::copy_n(res.last_hidden_state[std::size_t(i)].data(), N * D, hidden.data() + i * N * D);
    write_float32(a.hidden_states, hidden);
  }
  const fovea::PackPlan& plan = res.plan;
  out << fovea::vit_family_name(config.family) << " " << config.str() << " ("
      << (std::is_same_v<T, float> ? "float32" : "float64") << ", " << ctx.num_threads() << " threads): "
      << inputs.size() << " inputs -> " << vit_output_name(config) << " " << fovea::detail::shape_str(res.output)
      << ", packed into " << plan.sequences << " sequence" << (plan.sequences == 1 ? "" : "s") << " of "
      << plan.seq_len << " tokens (--max-seq-len " << max_tokens << ", " << int(plan.padding_fraction() * 100 + 0.5)
      << "% padding) in " << ms << " ms\n";
  return 0;
}

template <class T>
int vit_in(const Args& a, const fovea::VitConfig& config, const fovea::SafeTensors& file,
           const std::vector<VitInput>& inputs, const fovea::Context& ctx, std::ostream& out) {
  const auto model = fovea::VisionTransformer<T>::from_safetensors(file, config);
  return inputs.size() == 1 ? vit_batch(a, model, inputs.front(), ctx, out) : vit_packed(a, model, inputs, ctx, out);
}

inline int run_vit(fovea::VitFamily family, const Args& a, const fovea::Context& ctx, std::ostream& out) {
  const fovea::SafeTensors file = fovea::SafeTensors::open(a.weights);
  const fovea::HfVisionConfig hf = a.config.empty() ? fovea::HfVisionConfig{} : fovea::read_hf_vision_config(a.config);
  const fovea::VitConfig config = fovea::infer_vit_config(file, family, hf);
  if (config.pool == fovea::VitPool::none)
    throw UsageError(fovea::detail::cat("--arch ", fovea::vit_family_name(family), ": ", a.weights,
                                        " has no pooling head (vision_use_head = false), so there is no "
                                        "pooler_output to write"));
  std::vector<VitInput> inputs = read_image_inputs(a);
  for (const std::string& path : a.images) {
    const fovea::Tensor<float, 4> x = vit_preprocess(family, fovea::decode_image(path), int(config.image_size.h), ctx);
    VitInput in{"--image '" + path + "'", {}};
    in.values.shape = {x.dimension(0), x.dimension(1), x.dimension(2), x.dimension(3)};
    in.values.values.assign(x.data(), x.data() + x.size());
    inputs.push_back(std::move(in));
  }
  return any_double(inputs) ? vit_in<double>(a, config, file, inputs, ctx, out)
                            : vit_in<float>(a, config, file, inputs, ctx, out);
}

inline int run_torchvision_vit(const Args& a, const fovea::Context& ctx, std::ostream& out) {
  return run_vit(fovea::VitFamily::torchvision, a, ctx, out);
}
inline int run_timm_vit(const Args& a, const fovea::Context& ctx, std::ostream& out) {
  return run_vit(fovea::VitFamily::timm, a, ctx, out);
}
inline int run_hf_clip(const Args& a, const fovea::Context& ctx, std::ostream& out) {
  return run_vit(fovea::VitFamily::hf_clip, a, ctx, out);
}
inline int run_hf_siglip(const Args& a, const fovea::Context& ctx, std::ostream& out) {
  return run_vit(fovea::VitFamily::hf_siglip, a, ctx, out);
}

// ---- navit -------------------------------------------------------------------------------------------------

// --arch navit: lucidrains' na_vit.py weights. Every --input is split into its images; they are packed into
// sequences of at most --max-seq-len patches (no class token), attention kept inside each image, and the
// output has one row of logits per image, in input order: na_vit's model(images) in eval mode. na_vit
// has no image processor, so --image is refused rather than guessed.
template <class T>
int navit_in(const Args& a, const fovea::NaViT<T>& model, const std::vector<VitInput>& inputs,
             const fovea::Context& ctx, std::ostream& out) {
  const fovea::NaViTConfig& config = model.config();
  const Index max_tokens = a.max_seq_len ? Index(*a.max_seq_len) : fovea::kDefaultMaxSeqLen;
  std::vector<fovea::Tensor<T, 4>> images;
  std::vector<Index> tokens;
  for (const VitInput& in : inputs) {
    const fovea::Tensor<T, 4> batch = to_tensor4<T>(in.values);
    const Index N = batch.dimension(0), per = batch.size() / N;
    for (Index n = 0; n < N; ++n) {
      fovea::Tensor<T, 4> x(1, batch.dimension(1), batch.dimension(2), batch.dimension(3));
      std::copy_n(batch.data() + n * per, per, x.data());
      images.push_back(std::move(x));
      tokens.push_back((batch.dimension(2) / config.patch_size) * (batch.dimension(3) / config.patch_size));
    }
  }
  check_hidden_states_stack(a, tokens);
  const auto t0 = std::chrono::steady_clock::now();
  const fovea::NaViTOutput<T> res = model.forward_with_hidden(images, fovea::NaViTOptions().max_seq_len(max_tokens), ctx);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  write_float32(a.output, res.logits);
  if (!a.hidden_states.empty()) {
    const Index B = Index(res.hidden.size()), N = res.hidden.front().dimension(0), D = config.dim;
    fovea::Tensor<T, 3> hidden(B, N, D);
    for (Index i = 0; i < B; ++i) std::copy_n(res.hidden[std::size_t(i)].data(), N * D, hidden.data() + i * N * D);
    write_float32(a.hidden_states, hidden);
  }
  out << "navit dim " << config.dim << ", depth " << config.depth << ", heads " << config.heads << ", patch "
      << config.patch_size << " (" << (std::is_same_v<T, float> ? "float32" : "float64") << ", " << ctx.num_threads()
      << " threads): " << images.size() << " image" << (images.size() == 1 ? "" : "s") << " -> logits "
      << fovea::detail::shape_str(res.logits) << ", packed into " << res.plan.sequences << " sequence"
      << (res.plan.sequences == 1 ? "" : "s") << " of " << res.plan.seq_len << " tokens (--max-seq-len " << max_tokens
      << ") in " << ms << " ms\n";
  return 0;
}

inline int run_navit(const Args& a, const fovea::Context& ctx, std::ostream& out) {
  if (!a.images.empty())
    throw UsageError("--image is not available for navit: na_vit.py defines no preprocessing; pass preprocessed "
                     "--input files");
  const fovea::SafeTensors file = fovea::SafeTensors::open(a.weights);
  const fovea::HfVisionConfig hf = a.config.empty() ? fovea::HfVisionConfig{} : fovea::read_hf_vision_config(a.config);
  const std::vector<VitInput> inputs = read_image_inputs(a);
  if (any_double(inputs)) return navit_in(a, fovea::NaViT<double>::from_safetensors(file, hf), inputs, ctx, out);
  return navit_in(a, fovea::NaViT<float>::from_safetensors(file, hf), inputs, ctx, out);
}

using ArchFn = std::function<int(const Args&, const fovea::Context&, std::ostream&)>;

// Every architecture the CLI names; an empty function means "not implemented yet". Adding one is adding
// its run_* function here.
inline const std::map<std::string, ArchFn>& archs() {
  static const std::map<std::string, ArchFn> table = {
      {"torchvision-resnet", run_torchvision_resnet},
      {"torchvision-vit", run_torchvision_vit},
      {"timm-vit", run_timm_vit},
      {"hf-clip", run_hf_clip},
      {"hf-siglip", run_hf_siglip},
      {"navit", run_navit},
  };
  return table;
}

}  // namespace fovea_embed

inline int fovea_embed_main(int argc, char** argv, std::ostream& out, std::ostream& err) {
  using namespace fovea_embed;
  try {
    const std::optional<Args> a = parse_args(argc, argv);
    if (!a) {
      out << usage_text();
      return 0;
    }
    const auto it = archs().find(a->arch);
    if (it == archs().end()) {
      std::string names;
      for (const auto& [name, fn] : archs()) names += (names.empty() ? "" : ", ") + name;
      throw UsageError("unknown --arch '" + a->arch + "' (one of: " + names + ")");
    }
    if (!it->second)
      throw UsageError("--arch " + a->arch + " is not implemented yet in this build");
    std::optional<fovea::Context> own;
    if (a->threads > 0) own.emplace(a->threads);
    return it->second(*a, own ? *own : fovea::default_context(), out);
  } catch (const UsageError& e) {
    err << "fovea-embed: " << e.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    err << "fovea-embed: out of memory (the batch or the model is too large for this machine)\n";
    return 1;
  } catch (const std::exception& e) {
    // ShapeError, FormatError and I/O errors: the input is at fault.
    err << "fovea-embed: " << e.what() << "\n";
    return 1;
  }
}

#ifndef FOVEA_EMBED_NO_MAIN
int main(int argc, char** argv) { return fovea_embed_main(argc, argv, std::cout, std::cerr); }
#endif
#endif  // FOVEA_EXAMPLES_FOVEA_EMBED_CPP

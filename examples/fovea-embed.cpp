// fovea-embed: runs a vision encoder from a .safetensors checkpoint on a preprocessed .npy batch and writes
// its outputs as float32 .npy. One function per architecture (see kArchs); only torchvision-resnet so far.
//
// Exit codes: 0 done, 1 bad input (files, shapes, weights), 2 bad usage (flags, unknown or unimplemented
// architecture). Every error is one line on stderr that names its cause.
//
// The logic lives in fovea_embed_main(argc, argv, out, err) so tests can run it in-process; define
// FOVEA_EMBED_NO_MAIN before including this file to leave out main().
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
#include "fovea/models/resnet.hpp"

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

  --arch ARCH            torchvision-resnet (torchvision.models.resnet18/34/50/101/152, ResNeXt, wide ResNet).
                         Planned, not implemented yet: torchvision-vit, timm-vit, hf-clip, hf-siglip, navit.
  --weights FILE         .safetensors holding the model's state_dict under its own names (torchvision:
                         conv1.weight, bn1.*, layer1.0.conv1.weight, ..., layer4.*.downsample.0.weight, fc.*).
                         F32, F64, F16 or BF16. BatchNorm's num_batches_tracked may be present and is ignored.
                         The architecture (block type, blocks per stage, widths, groups, classes, input
                         channels) is read off the names and shapes.
  --config FILE          Optional config.json (keys at the top level or under "vision_config"). For
                         torchvision-resnet these keys, when present, override what the shapes say, and
                         the weights must then match: layer_type ("basic" | "bottleneck"), depths [4],
                         hidden_sizes [4] (stage output channels, as Hugging Face's ResNetConfig),
                         embedding_size (stem width), num_channels, num_labels, groups, width_per_group.
                         Other keys are ignored.
  --input X.npy          Preprocessed batch (N, C, H, W), float32 or float64 (computed in that precision),
                         e.g. normalised with the ImageNet mean and std. Any H, W >= 1.
  --image FILE           Decode and preprocess an image: not implemented yet for torchvision-resnet.
  --output OUT.npy       What the reference model returns, as float32. torchvision-resnet: the logits of
                         model.eval()(x), shape (N, num_classes).
  --hidden-states H.npy  The last hidden state, as float32. torchvision-resnet: layer4's output feature
                         map before average pooling, shape (N, C, h, w) (C = 512 for resnet18/34, 2048 for
                         resnet50+; h, w = 7, 7 at 224 x 224).
  --threads N            Worker threads (default: FOVEA_NUM_THREADS, else every core).
  --max-seq-len L        Token budget per packed sequence for ViT families and navit (not for ResNet).
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

using ArchFn = std::function<int(const Args&, const fovea::Context&, std::ostream&)>;

// Every architecture the CLI names; an empty function means "not implemented yet". Adding one is adding
// its run_* function here.
inline const std::map<std::string, ArchFn>& archs() {
  static const std::map<std::string, ArchFn> table = {
      {"torchvision-resnet", run_torchvision_resnet},
      {"torchvision-vit", nullptr},
      {"timm-vit", nullptr},
      {"hf-clip", nullptr},
      {"hf-siglip", nullptr},
      {"navit", nullptr},
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
      throw UsageError("--arch " + a->arch + " is not implemented yet in this build; only torchvision-resnet runs");
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

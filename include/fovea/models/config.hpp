#pragma once
// Hugging Face config.json for vision towers: the keys a VisionTransformer of any family can take from it,
// read from the top level (CLIPVisionConfig, SiglipVisionConfig, a hand-written file) or from
// "vision_config" (CLIPConfig, SiglipConfig). Absent and null keys stay unset, so whatever the weights'
// shapes say fills them; present keys are type-checked here and checked against the shapes by the model.
//
//   hidden_size, num_attention_heads, num_hidden_layers, intermediate_size, num_channels   whole numbers >= 1
//   patch_size, image_size      a whole number, or [height, width]; sides at most 2^24
//   layer_norm_eps              a number > 0
//   hidden_act                  "gelu" | "gelu_python" (exact), "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast"
//                               (tanh approximation), "quick_gelu"
//   projection_dim              CLIP's visual_projection width; in a CLIPConfig the top-level key is the one
//                               CLIPModel uses, so it wins over vision_config's
//   vision_use_head             SigLIP: whether the attention-pool head exists
//   global_pool                 timm: "token" | "avg" (also read from "model_args")
//
// Every problem is a FormatError naming the file and the key: unreadable file, invalid JSON (with the
// parser's position), a non-object document or vision_config, and a value of the wrong type or range.
// Untrusted text is bounded before it is parsed: at most ReadLimits::max_header_bytes of it, nested at most
// kMaxConfigDepth deep (Hugging Face configs nest 3 or 4 levels; nlohmann's printer, used in messages, recurses
// once per level).
#include <cmath>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "fovea/core/error.hpp"
#include "fovea/core/tensor.hpp"
#include "fovea/io/limits.hpp"
#include "fovea/ops/activation.hpp"

namespace fovea {

struct HfVisionConfig {
  std::optional<Index> hidden_size, num_attention_heads, num_hidden_layers, intermediate_size, num_channels,
      projection_dim;
  std::optional<Size2> patch_size, image_size;
  std::optional<double> layer_norm_eps;
  std::optional<std::string> hidden_act;  // as written; hf_activation() maps it
  std::optional<bool> vision_use_head;
  std::optional<std::string> global_pool;
  std::string source = "config";  // "config.json 'path'", for messages

  bool empty() const {
    return !hidden_size && !num_attention_heads && !num_hidden_layers && !intermediate_size && !num_channels &&
           !projection_dim && !patch_size && !image_size && !layer_norm_eps && !hidden_act && !vision_use_head &&
           !global_pool;
  }
};

// hidden_act -> Activation; FormatError naming `where` for a name no family uses with these towers.
inline detail::Activation hf_activation(const std::string& name, const std::string& where) {
  if (name == "gelu" || name == "gelu_python") return detail::Activation::gelu;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast") return detail::Activation::gelu_tanh;
  if (name == "quick_gelu") return detail::Activation::quick_gelu;
  detail::throw_format(where, ": \"hidden_act\" must be one of \"gelu\", \"gelu_python\", \"gelu_pytorch_tanh\", "
                       "\"gelu_new\", \"gelu_fast\", \"quick_gelu\", but got \"", name, "\"");
}

namespace detail {

inline std::string json_brief(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

// The typed readers: nullopt for an absent or null key, FormatError for a present one of the wrong kind.
struct HfConfigReader {
  const nlohmann::json& obj;
  const std::string& source;
  std::string section;  // "" or "vision_config."

  const nlohmann::json* find(const char* key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void bad(const char* key, const char* want, const nlohmann::json& v) const {
    throw_format(source, ": \"", section, key, "\" must be ", want, ", but got ", json_brief(v));
  }
  std::optional<Index> whole(const char* key) const {
    const nlohmann::json* v = find(key);
    if (!v) return std::nullopt;
    // 768.0 is a JSON number a writer may produce for an int; accept whole-valued floats.
    if (v->is_number_unsigned()) {  // nlohmann stores every non-negative integer as unsigned
      const unsigned long long n = v->get<unsigned long long>();
      if (n >= 1 && n <= (1ull << 40)) return Index(n);
    } else if (v->is_number_float()) {
      const double d = v->get<double>();
      if (d >= 1 && d <= double(1ll << 40) && std::floor(d) == d) return Index(d);
    }
    bad(key, "a whole number >= 1", *v);
  }
  // Image and patch sides are bounded by the largest image fovea decodes (stb_image's 2^24), so that a model's
  // products of them (the patch grid, its row count) stay far inside Index.
  static constexpr unsigned long long kMaxSide = 1ull << 24;
  std::optional<Size2> size2(const char* key) const {
    const nlohmann::json* v = find(key);
    if (!v) return std::nullopt;
    std::optional<Size2> out;
    if (v->is_array()) {
      auto side = [](const nlohmann::json& e) {
        return e.is_number_unsigned() && e.get<unsigned long long>() >= 1 && e.get<unsigned long long>() <= (1ull << 40);
      };
      if (v->size() == 2 && side((*v)[0]) && side((*v)[1]))
        out = Size2(Index((*v)[0].get<unsigned long long>()), Index((*v)[1].get<unsigned long long>()));
      else
        bad(key, "a whole number >= 1 or [height, width]", *v);
    } else if (auto n = whole(key)) {
      out = Size2(*n);
    }
    if (out && (std::uint64_t(out->h) > kMaxSide || std::uint64_t(out->w) > kMaxSide))
      bad(key, "at most 16777216 on each side (the largest image fovea decodes)", *v);
    return out;
  }
  std::optional<double> positive(const char* key) const {
    const nlohmann::json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number() || !(v->get<double>() > 0) || !std::isfinite(v->get<double>()))
      bad(key, "a number > 0", *v);
    return v->get<double>();
  }
  std::optional<std::string> text(const char* key) const {
    const nlohmann::json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) bad(key, "a string", *v);
    return v->get<std::string>();
  }
  std::optional<bool> boolean(const char* key) const {
    const nlohmann::json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) bad(key, "true or false", *v);
    return v->get<bool>();
  }
};

}  // namespace detail

// A parsed config.json document -> its vision keys. `source` names the file in messages.
inline HfVisionConfig parse_hf_vision_config(const nlohmann::json& doc, const std::string& source = "config") {
  if (!doc.is_object())
    detail::throw_format(source, ": expected a JSON object at the top level, but got ", detail::json_brief(doc));
  HfVisionConfig c;
  c.source = source;
  const nlohmann::json* vision = &doc;
  std::string section;
  if (auto it = doc.find("vision_config"); it != doc.end() && !it->is_null()) {
    if (!it->is_object())
      detail::throw_format(source, ": \"vision_config\" must be an object, but got ", detail::json_brief(*it));
    vision = &*it;
    section = "vision_config.";
  }
  const detail::HfConfigReader r{*vision, source, section};
  c.hidden_size = r.whole("hidden_size");
  c.num_attention_heads = r.whole("num_attention_heads");
  c.num_hidden_layers = r.whole("num_hidden_layers");
  c.intermediate_size = r.whole("intermediate_size");
  c.num_channels = r.whole("num_channels");
  c.patch_size = r.size2("patch_size");
  c.image_size = r.size2("image_size");
  c.layer_norm_eps = r.positive("layer_norm_eps");
  c.hidden_act = r.text("hidden_act");
  if (c.hidden_act) hf_activation(*c.hidden_act, source);  // reject unknown names here, naming the file
  c.vision_use_head = r.boolean("vision_use_head");
  c.global_pool = r.text("global_pool");
  c.projection_dim = r.whole("projection_dim");
  if (vision != &doc) {
    const detail::HfConfigReader top{doc, source, ""};
    if (auto p = top.whole("projection_dim")) c.projection_dim = p;
    if (!c.global_pool) c.global_pool = top.text("global_pool");
  }
  if (!c.global_pool) {
    if (auto it = doc.find("model_args"); it != doc.end() && it->is_object())
      c.global_pool = detail::HfConfigReader{*it, source, "model_args."}.text("global_pool");
  }
  if (c.global_pool && *c.global_pool != "token" && *c.global_pool != "avg")
    detail::throw_format(source, ": \"global_pool\" must be \"token\" or \"avg\" (the pools fovea runs), but got \"",
                         *c.global_pool, "\"");
  return c;
}

inline constexpr int kMaxConfigDepth = 64;

// JSON text -> its vision keys.
inline HfVisionConfig parse_hf_vision_config(const std::string& text, const std::string& source,
                                             const ReadLimits& limits = {}) {
  if (text.size() > limits.max_header_bytes())
    detail::throw_format(source, ": ", text.size(), " bytes of JSON exceed the limit of ", limits.max_header_bytes(),
                         " (ReadLimits::max_header_bytes)");
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
      if (depth >= kMaxConfigDepth && (event == nlohmann::json::parse_event_t::object_start ||
                                       event == nlohmann::json::parse_event_t::array_start))
        detail::throw_format(source, ": JSON nests deeper than ", kMaxConfigDepth, " levels");
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    detail::throw_format(source, ": not valid JSON: ", e.what());
  }
  return parse_hf_vision_config(doc, source);
}

// A string literal is text, not a one-string JSON document.
inline HfVisionConfig parse_hf_vision_config(const char* text, const std::string& source,
                                             const ReadLimits& limits = {}) {
  return parse_hf_vision_config(std::string(text), source, limits);
}

// Reads config.json at `path`; its length is checked against limits.max_header_bytes() before it is read.
inline HfVisionConfig read_hf_vision_config(const std::string& path, const ReadLimits& limits = {}) {
  const std::string source = detail::cat("config.json '", path, "'");
  std::ifstream f(path, std::ios::binary);
  if (!f) detail::throw_format(source, ": cannot open the file");
  f.seekg(0, std::ios::end);
  const std::streamoff len = f.tellg();
  f.seekg(0, std::ios::beg);
  if (len > 0 && std::uint64_t(len) > limits.max_header_bytes())
    detail::throw_format(source, ": the file is ", len, " bytes, more than the limit of ", limits.max_header_bytes(),
                         " (ReadLimits::max_header_bytes)");
  f.clear();
  std::ostringstream s;
  s << f.rdbuf();
  if (f.bad()) detail::throw_format(source, ": read error");
  return parse_hf_vision_config(s.str(), source, limits);
}

}  // namespace fovea

// Writes the seed corpus of every fuzz target (tests/fuzz/corpus/<target>/): tiny valid files of each format,
// their variants (dtypes, versions, ranks, colour types, families) and edge cases, plus the smallest committed
// reference files. Deterministic: re-running it rewrites the same bytes.
//   cmake -S tests/fuzz -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ && cmake --build build-fuzz --target make_corpus
//   ./build-fuzz/make_corpus tests/fuzz/corpus
// Every model seed is loaded back before it is written, so the seeds start the fuzzer deep in the loaders.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "fovea/io/image.hpp"
#include "fovea/io/npy.hpp"
#include "fovea/io/safetensors.hpp"
#include "fovea/models/config.hpp"
#include "fovea/models/navit.hpp"
#include "fovea/models/resnet.hpp"
#include "fovea/models/vit.hpp"

namespace fs = std::filesystem;
using namespace fovea;

namespace {

fs::path g_root;
std::mt19937 g_rng(20240607);
int g_written = 0;

void put(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = g_root / target;
  fs::create_directories(dir);
  std::ofstream f(dir / name, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + (dir / name).string());
  ++g_written;
}

std::string slurp(const fs::path& p) { return detail::read_file_bytes(p.string(), "make_corpus"); }

// Copies every file of `dir` with one of `exts` and at most `max_bytes` into the target's corpus.
void copy_small(const std::string& target, const fs::path& dir, const std::vector<std::string>& exts,
                std::size_t max_bytes) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& p : files) {
    if (std::find(exts.begin(), exts.end(), p.extension().string()) == exts.end()) continue;
    if (fs::file_size(p) > max_bytes) continue;
    put(target, "ref_" + p.filename().string(), slurp(p));
  }
}

std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[std::size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

std::uint16_t to_half(float f) {  // round to nearest even, enough for seeds (no subnormal outputs needed)
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  const std::uint32_t sign = (b >> 16) & 0x8000u;
  const int exp = int((b >> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return std::uint16_t(sign);
  if (exp >= 31) return std::uint16_t(sign | 0x7c00u);
  std::uint32_t m = b & 0x7fffffu;
  std::uint32_t h = sign | std::uint32_t(exp) << 10 | (m >> 13);
  if ((m & 0x1fffu) > 0x1000u || ((m & 0x1fffu) == 0x1000u && (h & 1))) ++h;
  return std::uint16_t(h);
}

// A safetensors file from raw entries, in the order given (offsets follow that order), header padded to
// `align` bytes with spaces (1 = unpadded).
struct Raw {
  std::string name, dtype;
  std::vector<Index> shape;
  std::string bytes;
};

std::string safetensors(const std::vector<Raw>& entries, const std::string& metadata_json = "", std::size_t align = 8,
                        bool reverse_header = false) {
  std::vector<std::string> parts;
  std::size_t off = 0;
  for (const Raw& e : entries) {
    std::string j = nlohmann::json(e.name).dump() + ":{\"dtype\":\"" + e.dtype + "\",\"shape\":[";
    for (std::size_t i = 0; i < e.shape.size(); ++i) j += (i ? "," : "") + std::to_string(e.shape[i]);
    j += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + e.bytes.size()) + "]}";
    off += e.bytes.size();
    parts.push_back(j);
  }
  if (reverse_header) std::reverse(parts.begin(), parts.end());
  std::string json = "{";
  if (!metadata_json.empty()) json += "\"__metadata__\":" + metadata_json + (parts.empty() ? "" : ",");
  for (std::size_t i = 0; i < parts.size(); ++i) json += (i ? "," : "") + parts[i];
  json += "}";
  json.append((align - json.size() % align) % align, ' ');
  std::string out = le64(json.size()) + json;
  for (const Raw& e : entries) out += e.bytes;
  return out;
}

Index numel(const std::vector<Index>& s) {
  Index n = 1;
  for (Index d : s) n *= d;
  return n;
}

// Random values of a shape in a dtype: F32, F64, F16 or BF16.
std::string values(const std::vector<Index>& shape, const std::string& dtype, float scale = 0.5f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::string b;
  for (Index i = 0; i < numel(shape); ++i) {
    const float v = u(g_rng);
    if (dtype == "F32") {
      b.append(reinterpret_cast<const char*>(&v), 4);
    } else if (dtype == "F64") {
      const double d = v;
      b.append(reinterpret_cast<const char*>(&d), 8);
    } else if (dtype == "F16") {
      const std::uint16_t h = to_half(v);
      b.append(reinterpret_cast<const char*>(&h), 2);
    } else {  // BF16
      std::uint32_t bits;
      std::memcpy(&bits, &v, 4);
      const std::uint16_t h = std::uint16_t(bits >> 16);
      b.append(reinterpret_cast<const char*>(&h), 2);
    }
  }
  return b;
}

// Every tensor of a state dict (name -> shape) as one safetensors file; norms' weights near 1, variances positive.
std::string state_dict(const std::map<std::string, std::vector<Index>>& shapes, const std::string& dtype,
                       const std::string& strip_prefix = "") {
  std::vector<Raw> entries;
  for (const auto& [name, shape] : shapes) {
    std::string n = name;
    if (!strip_prefix.empty() && n.rfind(strip_prefix, 0) == 0) n = n.substr(strip_prefix.size());
    const bool positive = n.find("running_var") != std::string::npos;
    std::string b = values(shape, dtype, 0.5f);
    if (positive) {  // |x| + 0.5 keeps BatchNorm's variance away from 0
      std::vector<Index> s = shape;
      b.clear();
      for (Index i = 0; i < numel(s); ++i) {
        const float v = 0.5f + float(i % 3) * 0.25f;
        if (dtype == "F32") b.append(reinterpret_cast<const char*>(&v), 4);
        else if (dtype == "F64") { const double d = v; b.append(reinterpret_cast<const char*>(&d), 8); }
        else { const std::uint16_t h = dtype == "F16" ? to_half(v) : std::uint16_t([&] { std::uint32_t x; std::memcpy(&x, &v, 4); return x >> 16; }()); b.append(reinterpret_cast<const char*>(&h), 2); }
      }
    }
    entries.push_back({n, dtype, shape, b});
  }
  return safetensors(entries);
}

std::string npy(const std::string& dict, const std::string& data, int major = 1) {
  std::string d = dict;
  const std::size_t pre = major == 1 ? 10 : 12;
  d.append((64 - (pre + d.size() + 1) % 64) % 64, ' ');
  d += '\n';
  std::string s = std::string("\x93NUMPY", 6) + char(major) + '\0';
  if (major == 1) {
    s += char(d.size() & 0xff);
    s += char(d.size() >> 8);
  } else {
    for (int i = 0; i < 4; ++i) s += char((d.size() >> (8 * i)) & 0xff);
  }
  return s + d + data;
}

std::string floats(std::size_t n, bool dbl) {
  std::string b;
  for (std::size_t i = 0; i < n; ++i) {
    const double v = double(i) * 0.5 - 1.0;
    if (dbl) b.append(reinterpret_cast<const char*>(&v), 8);
    else { const float f = float(v); b.append(reinterpret_cast<const char*>(&f), 4); }
  }
  return b;
}

void make_safetensors(const fs::path& ref) {
  const std::string t = "safetensors";
  SafeTensorsWriter w;
  Tensor<float, 2> a(2, 3);
  Tensor<double, 1> b(4);
  Tensor<float, 0> s;
  Tensor<float, 3> z(2, 0, 3);
  for (Index i = 0; i < a.size(); ++i) a.data()[i] = float(i) - 2.5f;
  for (Index i = 0; i < b.size(); ++i) b.data()[i] = double(i) * 1e300;
  s() = 7.f;
  w.add("a", a).add("b", b).add("scalar", s).add("empty", z).metadata("format", "pt");
  put(t, "writer_mixed.safetensors", w.to_bytes());
  put(t, "empty_header.safetensors", safetensors({}));
  put(t, "metadata_only.safetensors", safetensors({}, "{\"format\":\"pt\",\"k\":\"\\u00e9\"}"));
  put(t, "null_metadata.safetensors", safetensors({{"x", "F32", {1}, floats(1, false)}}, "null"));
  // Every convertible dtype and some that are not, unpadded and in reverse header order.
  put(t, "dtypes.safetensors",
      safetensors({{"f16", "F16", {2, 2}, values({2, 2}, "F16")},
                   {"bf16", "BF16", {3}, values({3}, "BF16")},
                   {"f32", "F32", {1, 1, 2}, values({1, 1, 2}, "F32")},
                   {"f64", "F64", {2}, values({2}, "F64")},
                   {"i8", "I8", {3}, "\x01\x02\x03"},
                   {"u8", "U8", {2}, "\xff\x00"},
                   {"bool", "BOOL", {1}, "\x01"},
                   {"i64", "I64", {1}, std::string(8, '\x07')}},
                  "", 1, true));
  put(t, "rank5.safetensors", safetensors({{"r5", "F32", {1, 2, 1, 2, 1}, values({1, 2, 1, 2, 1}, "F32")}}));
  put(t, "f4_packed.safetensors", safetensors({{"f4", "F4", {4}, "\x12\x34"}}));
  put(t, "unaligned_f32.safetensors", safetensors({{"h", "F16", {1}, values({1}, "F16")},
                                                    {"f", "F32", {2}, values({2}, "F32")}}, "", 1));
  copy_small(t, ref / "safetensors", {".safetensors"}, 4096);
}

void make_npy(const fs::path& ref) {
  const std::string t = "npy";
  put(t, "f4_2x3.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", floats(6, false)));
  put(t, "f8_4.npy", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }", floats(4, true)));
  put(t, "f4_scalar.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", floats(1, false)));
  put(t, "f4_empty.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", ""));
  put(t, "f4_rank5.npy", npy("{'descr': '=f4', 'fortran_order': False, 'shape': (1, 2, 1, 2, 1), }", floats(4, false)));
  put(t, "v2_f8.npy", npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", floats(3, true), 2));
  put(t, "v3_f4.npy", npy("{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,), }", floats(2, false), 3));
  put(t, "fortran.npy", npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", floats(4, false)));
  put(t, "i8.npy", npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')));
  put(t, "big_dim.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (100000000, 0), }", ""));
  copy_small(t, ref / "npy", {".npy"}, 600);
}

void make_config(const fs::path& ref) {
  const std::string t = "config";
  put(t, "clip_vision.json", R"({"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
 "num_hidden_layers": 12, "patch_size": 32, "image_size": 224, "hidden_act": "quick_gelu",
 "layer_norm_eps": 1e-05, "projection_dim": 512, "model_type": "clip_vision_model"})");
  put(t, "clip_nested.json", R"({"projection_dim": 512, "vision_config": {"hidden_size": 64, "patch_size": [4, 8],
 "image_size": [32, 64], "num_channels": 3, "layer_norm_eps": 1e-6, "hidden_act": "gelu"}, "text_config": {"vocab_size": 10}})");
  put(t, "siglip.json", R"({"vision_config": {"hidden_size": 768.0, "vision_use_head": false,
 "hidden_act": "gelu_pytorch_tanh", "image_size": null}})");
  put(t, "timm.json", R"({"architecture": "vit_base_patch16_224", "num_classes": 1000,
 "model_args": {"global_pool": "avg", "class_token": false}, "pretrained_cfg": {"crop_pct": 0.9}})");
  put(t, "bad_types.json", R"({"hidden_size": -1, "patch_size": [1, 2, 3], "layer_norm_eps": 0, "hidden_act": 3})");
  put(t, "not_object.json", "[1, 2, 3]");
  put(t, "deep.json", std::string(40, '[') + std::string(40, ']'));
  copy_small(t, ref / "vit", {".json"}, 2048);
}

void make_images(const fs::path& ref) {
  const std::string t = "image";
  auto rgb = [](Index h, Index w) {
    Image img(h, w);
    for (Index y = 0; y < h; ++y)
      for (Index x = 0; x < w; ++x)
        for (int c = 0; c < 3; ++c) img.at(y, x, c) = std::uint8_t((x * 37 + y * 11 + c * 80) & 0xff);
    return img;
  };
  put(t, "rgb_5x7.png", encode_png(rgb(5, 7)));
  put(t, "rgb_1x40.png", encode_png(rgb(1, 40)));
  put(t, "rgb_40x1.png", encode_png(rgb(40, 1)));
  std::string out;
  for (int comp : {1, 2, 4}) {  // grey, grey + alpha, RGBA
    std::vector<std::uint8_t> px(std::size_t(6 * 4 * comp));
    for (std::size_t i = 0; i < px.size(); ++i) px[i] = std::uint8_t(i * 29);
    out.clear();
    stbi_write_png_to_func(detail::append_to_string, &out, 6, 4, comp, px.data(), 6 * comp);
    put(t, "comp" + std::to_string(comp) + "_6x4.png", out);
  }
  for (int comp : {1, 3}) {
    for (int quality : {10, 90}) {
      const Image img = rgb(9, 13);
      std::vector<std::uint8_t> px;
      for (std::size_t i = 0; i < img.pixels.size(); i += 3)
        for (int c = 0; c < comp; ++c) px.push_back(img.pixels[i + std::size_t(c)]);
      out.clear();
      stbi_write_jpg_to_func(detail::append_to_string, &out, 13, 9, comp, px.data(), quality);
      put(t, "jpeg_c" + std::to_string(comp) + "_q" + std::to_string(quality) + "_13x9.jpg", out);
    }
  }
  copy_small(t, ref / "image", {".png", ".jpg"}, 2048);
}

// Tiny models of every loader, each with the config.json that names what shapes cannot (heads), prefixed with
// the selector byte of fuzz_models.cpp.
std::string model_input(unsigned char selector, const std::string& config, const std::string& file) {
  return std::string(1, char(selector)) + config + std::string(1, '\0') + file;
}

enum class Loader { resnet, vit, navit };

void check_loads(const std::string& name, const std::string& config, const std::string& file, Loader loader) {
  const SafeTensors st = SafeTensors::from_bytes(file, name);
  if (loader == Loader::navit) {
    (void)NaViT<float>::from_safetensors(st);
  } else if (loader == Loader::resnet) {
    (void)ResNet<float>::from_safetensors(st);
  } else {
    const HfVisionConfig hf = config.empty() ? HfVisionConfig{} : parse_hf_vision_config(config, name);
    (void)VisionTransformer<float>::from_safetensors(st, hf);
  }
}

void make_models() {
  const std::string t = "models";
  auto emit = [&](const std::string& name, unsigned char sel, const std::string& config, const std::string& file,
                  bool is_resnet) {
    check_loads(name, config, file, is_resnet ? Loader::resnet : Loader::vit);
    put(t, name, model_input(sel, config, file));
  };
  ResNetConfig basic;
  basic.layers = {1, 1, 1, 1};
  basic.widths = {2, 2, 3, 3};
  basic.stem_width = 2;
  basic.num_classes = 3;
  emit("resnet_basic_f32.bin", 0, "", state_dict(resnet_state_dict_shapes(basic), "F32"), true);
  emit("resnet_basic_f16.bin", 0, "", state_dict(resnet_state_dict_shapes(basic), "F16"), true);
  ResNetConfig bottle = basic;
  bottle.block = ResNetBlock::bottleneck;
  bottle.layers = {2, 1, 1, 1};
  bottle.widths = {1, 1, 1, 1};
  bottle.num_classes = 2;
  emit("resnet_bottleneck_bf16.bin", 3, "", state_dict(resnet_state_dict_shapes(bottle), "BF16"), true);
  ResNetConfig grouped = bottle;
  grouped.groups = 2;
  grouped.width_per_group = 64;
  emit("resnet_grouped_f32.bin", 0, "", state_dict(resnet_state_dict_shapes(grouped), "F32"), true);

  auto tiny = [](VitFamily f) {
    VitConfig c;
    c.family = f;
    c.image_size = {8, 8};
    c.patch_size = 4;
    c.width = 8;
    c.depth = 1;
    c.heads = 2;
    c.mlp_dim = 16;
    c.num_classes = 5;
    return c;
  };
  const std::string heads = R"({"num_attention_heads": 2})";
  VitConfig tv = tiny(VitFamily::torchvision);
  emit("vit_torchvision_f32.bin", 1, heads, state_dict(vit_state_dict_shapes(tv), "F32"), false);
  tv.representation_size = 6;
  emit("vit_torchvision_prelogits_f16.bin", 2, heads, state_dict(vit_state_dict_shapes(tv), "F16"), false);
  VitConfig timm = tiny(VitFamily::timm);
  emit("vit_timm_token_f16.bin", 1, heads, state_dict(vit_state_dict_shapes(timm), "F16"), false);
  timm.register_tokens = 1;
  timm.pool = VitPool::avg;
  timm.fc_norm = true;
  timm.final_norm = false;
  timm.qkv_bias = false;
  emit("vit_timm_avg_reg_f32.bin", 1 + 4 * 1 + 1, R"({"num_attention_heads": 2, "global_pool": "avg"})",
       state_dict(vit_state_dict_shapes(timm), "F32"), false);
  VitConfig clip = tiny(VitFamily::hf_clip);
  clip.pre_norm = true, clip.final_norm = false, clip.fc_norm = true, clip.num_classes = 0, clip.projection_dim = 6;
  clip.patch_bias = false, clip.eps = 1e-5, clip.activation = Activation::quick_gelu;
  const std::string clip_cfg = R"({"vision_config": {"num_attention_heads": 2, "hidden_size": 8, "patch_size": 4,
 "image_size": 8, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}, "projection_dim": 6})";
  emit("vit_clip_f32.bin", 1, clip_cfg, state_dict(vit_state_dict_shapes(clip), "F32"), false);
  emit("vit_clip_noprefix_f16.bin", 2 + 4 * 2, clip_cfg,
       state_dict(vit_state_dict_shapes(clip), "F16", "vision_model."), false);
  VitConfig sig = tiny(VitFamily::hf_siglip);
  sig.class_token = false, sig.pool = VitPool::attention, sig.num_classes = 0;
  sig.activation = Activation::gelu_tanh;
  emit("vit_siglip_f32.bin", 1, R"({"num_attention_heads": 2, "hidden_act": "gelu_pytorch_tanh"})",
       state_dict(vit_state_dict_shapes(sig), "F32"), false);
  sig.pool = VitPool::none;
  emit("vit_siglip_nohead_bf16.bin", 3 + 4, R"({"num_attention_heads": 2, "vision_use_head": false})",
       state_dict(vit_state_dict_shapes(sig), "BF16"), false);

  // NaViT: 8 x 8 images of 4 x 4 patches, width 8, one block; shapes from the model itself.
  NaViTConfig nc;
  nc.image_size = {8, 8}, nc.patch_size = 4, nc.dim = 8, nc.depth = 1, nc.heads = 2, nc.dim_head = 4;
  nc.mlp_dim = 16, nc.num_classes = 3;
  const NaViT<float> navit(nc);
  std::map<std::string, std::vector<Index>> navit_shapes;
  navit.named_parameters([&](const std::string& name, const auto& w) {
    navit_shapes[name] = std::vector<Index>(w.dimensions().begin(), w.dimensions().end());
  });
  for (const auto& [name, sel, dtype] : {std::tuple<const char*, unsigned char, const char*>{"navit_f32.bin", 3 + 4 * 2, "F32"},
                                         {"navit_f16_double.bin", 3 + 4 * 3, "F16"}}) {
    const std::string file = state_dict(navit_shapes, dtype);
    check_loads(name, "", file, Loader::navit);
    put(t, name, model_input(sel, "", file));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_corpus <corpus dir, e.g. tests/fuzz/corpus>\n";
    return 2;
  }
  g_root = argv[1];
  const fs::path ref = FOVEA_REF_DIR;
  try {
    make_safetensors(ref);
    make_npy(ref);
    make_config(ref);
    make_images(ref);
    make_models();
  } catch (const std::exception& e) {
    std::cerr << "make_corpus: " << e.what() << "\n";
    return 1;
  }
  std::cout << "make_corpus: wrote " << g_written << " seed files under " << g_root << "\n";
  return 0;
}

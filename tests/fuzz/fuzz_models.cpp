// Fuzzes the model loaders: ResNet, VisionTransformer and NaViT ::from_safetensors (with an optional
// config.json) on a safetensors file in memory, then a forward pass of what loaded, when it is small.
//
// Input: one selector byte, then config.json text up to the first NUL byte, then the safetensors file.
//   selector % 4: 0 ResNet<float>, 1 ViT<float> (family from the names), 2 ViT<float> of family
//   (selector / 4) % 4, 3 by (selector / 4) % 4: ResNet<double>, ViT<double>, NaViT<float>, NaViT<double>.
#include <cstring>
#include <optional>

#include "common.hpp"
#include "fovea/models/navit.hpp"
#include "fovea/models/resnet.hpp"
#include "fovea/models/vit.hpp"

namespace {

using namespace fovea;

constexpr Index kMaxForwardWeights = 1 << 16;  // run forward only on models this small (fast under ASan)

template <class T>
void resnet(const SafeTensors& st) {
  const ResNet<T> m = ResNet<T>::from_safetensors(st);
  const ResNetConfig& c = m.config();
  Index weights = 0;
  for (const auto& info : st.tensors()) weights += info.numel();
  if (weights > kMaxForwardWeights) return;
  Tensor<T, 4> x(1, c.in_channels, 8, 8);
  x.setConstant(T(0.5));
  const Tensor<T, 2> y = m.forward(x, fuzz::ctx());
  FOVEA_FUZZ_CHECK(y.dimension(0) == 1 && y.dimension(1) == c.num_classes);
}

template <class T>
void vit(const SafeTensors& st, const HfVisionConfig& hf, std::optional<VitFamily> family) {
  const VisionTransformer<T> m = VisionTransformer<T>::from_safetensors(st, hf, family);
  const VitConfig& c = m.config();
  Index weights = 0;
  for (const auto& info : st.tensors()) weights += info.numel();
  if (weights > kMaxForwardWeights || c.image_size.h * c.image_size.w > 32 * 32 || c.grid().h * c.grid().w > 64)
    return;
  Tensor<T, 4> x(1, c.in_channels, c.image_size.h, c.image_size.w);
  x.setConstant(T(0.25));
  if (c.pool == VitPool::none) {
    const VitOutput<T> o = m.forward_with_hidden(x, fuzz::ctx());
    FOVEA_FUZZ_CHECK(o.last_hidden_state.dimension(2) == c.width);
  } else {
    const Tensor<T, 2> y = m.forward(x, fuzz::ctx());
    FOVEA_FUZZ_CHECK(y.dimension(0) == 1 && y.dimension(1) == c.output_dim());
  }
}

template <class T>
void navit(const SafeTensors& st, const HfVisionConfig& hf) {
  const NaViT<T> m = NaViT<T>::from_safetensors(st, hf);
  const NaViTConfig& c = m.config();
  Index weights = 0;
  for (const auto& info : st.tensors()) weights += info.numel();
  if (weights > kMaxForwardWeights || c.image_size.h * c.image_size.w > 32 * 32 || c.grid().h * c.grid().w > 64)
    return;
  // Two images, the second a smaller patch grid, packed into one sequence.
  std::vector<Tensor<T, 3>> images;
  images.emplace_back(c.channels, c.image_size.h, c.image_size.w);
  images.emplace_back(c.channels, c.patch_size, c.patch_size);
  for (auto& im : images) im.setConstant(T(0.25));
  const Tensor<T, 2> y = m.forward(images, NaViTOptions(), fuzz::ctx());
  FOVEA_FUZZ_CHECK(y.dimension(0) == 2 && y.dimension(1) == c.num_classes);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const unsigned sel = data[0];
  const char* rest = reinterpret_cast<const char*>(data + 1);
  const std::size_t n = size - 1;
  const char* nul = static_cast<const char*>(std::memchr(rest, 0, n));
  if (!nul) return 0;
  const std::string config(rest, nul), file(nul + 1, rest + n);
  fuzz::expect_clean([&] {
    // Ceilings the size of the inputs (the loaders' own checks are what is fuzzed).
    const SafeTensors st = SafeTensors::from_bytes(
        file, "fuzz.safetensors", SafeTensorsOptions().limits(ReadLimits().max_tensor_bytes(64 << 20)));
    const HfVisionConfig hf =
        config.empty() ? HfVisionConfig{} : parse_hf_vision_config(config, "config.json 'fuzz'");
    const VitFamily families[] = {VitFamily::torchvision, VitFamily::timm, VitFamily::hf_clip, VitFamily::hf_siglip};
    switch (sel % 4) {
      case 0: resnet<float>(st); break;
      case 1: vit<float>(st, hf, std::nullopt); break;
      case 2: vit<float>(st, hf, families[(sel / 4) % 4]); break;
      default:
        switch ((sel / 4) % 4) {
          case 0: resnet<double>(st); break;
          case 1: vit<double>(st, hf, std::nullopt); break;
          case 2: navit<float>(st, hf); break;
          default: navit<double>(st, hf);
        }
    }
  });
  return 0;
}

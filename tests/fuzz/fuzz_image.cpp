// Fuzzes image decoding (PNG, JPEG through fovea's hardened stb) and every family's preprocessing of what
// decodes: one of CLIP, SigLIP, torchvision and timm at its default size, and CLIP, torchvision and timm at a
// small size and filter taken from the input's length, so odd sizes and every PIL filter are exercised.
#include "common.hpp"
#include "fovea/io/image.hpp"
#include "fovea/io/preprocess.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace fovea;
  // 2^20 pixels keeps a decode fast under the sanitizers; the checks against it run before stb allocates.
  const ReadLimits limits = ReadLimits().max_image_pixels(1 << 20);
  Image img;
  bool ok = false;
  fuzz::expect_clean([&] {
    img = decode_image_bytes(fuzz::bytes(data, size), "fuzz", limits);
    ok = true;
  });
  if (!ok) return 0;
  FOVEA_FUZZ_CHECK(img.height >= 1 && img.width >= 1 && img.height * img.width <= (1 << 20));
  FOVEA_FUZZ_CHECK(img.pixels.size() == std::size_t(img.height * img.width * 3));
  const Context& ctx = fuzz::ctx();
  auto check = [](const Tensor<float, 4>& t, Index h, Index w) {
    FOVEA_FUZZ_CHECK(t.dimension(0) == 1 && t.dimension(1) == 3 && t.dimension(2) == h && t.dimension(3) == w);
    for (Index i = 0; i < t.size(); ++i) FOVEA_FUZZ_CHECK(t.data()[i] >= -3.f && t.data()[i] <= 3.f);
  };
  // Every family's defaults must accept any decoded image (so any exception escapes: a crash). One family per
  // input, chosen by its length, keeps a run at a few milliseconds under the sanitizers.
  switch (size % 4) {
    case 0: check(preprocess_clip(img, 224, ctx), 224, 224); break;
    case 1: check(preprocess_siglip(img, 224, ctx), 224, 224); break;
    case 2: check(preprocess_torchvision(img, 256, 224, Resample::bilinear, ctx), 224, 224); break;
    default: check(preprocess_timm(img, 224, 0.9, Resample::bicubic, kHalfMean, kHalfStd, ctx), 224, 224);
  }
  const int small = 1 + int(size % 37);
  const Resample filters[] = {Resample::nearest, Resample::box,     Resample::bilinear,
                              Resample::hamming, Resample::bicubic, Resample::lanczos};
  const Resample r = filters[size % 6];
  check(preprocess_clip(img, small, ctx), small, small);
  check(preprocess_torchvision(img, small + int(size % 5), small, r, ctx), small, small);
  check(preprocess_timm(img, small, 0.875, r, kImagenetMean, kImagenetStd, ctx), small, small);
  // The fused resize-and-crop equals resizing then cropping, pixel for pixel, where the whole resize is small.
  const Size2 full = shortest_edge_size(img.size(), small + 3);
  if (full.h * full.w <= (1 << 16)) {
    const Image a = center_crop(resize(img, full, r, ctx), small, CropRounding::half_even);
    const Image b = resize_center_crop(img, full, small, r, CropRounding::half_even, ctx);
    FOVEA_FUZZ_CHECK(a.pixels == b.pixels);
  }
  return 0;
}

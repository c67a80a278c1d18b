// Image input cost: decode + preprocess_clip of a 640 x 480 JPEG, and PIL-exact resize alone.
// Counter "Mpix/s": source megapixels handled per second.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>

#include "fovea/io/preprocess.hpp"

using namespace fovea;

namespace {

// A photo-like 640 x 480, for the resize-only cases.
Image synthetic_photo(Index h, Index w) {
  Image img(h, w);
  for (Index y = 0; y < h; ++y)
    for (Index x = 0; x < w; ++x) {
      const double r = 128 + 90 * std::sin(double(x) / 37.0) * std::cos(double(y) / 23.0);
      const double g = double(x + y) * 255.0 / double(h + w) + ((x / 40 + y / 40) % 2 ? 25 : -25);
      const double b = 60 + 120 * (double((x * 7 + y * 13) % 97) / 97.0);
      img.at(y, x, 0) = std::uint8_t(std::clamp(r, 0.0, 255.0));
      img.at(y, x, 1) = std::uint8_t(std::clamp(g, 0.0, 255.0));
      img.at(y, x, 2) = std::uint8_t(std::clamp(b, 0.0, 255.0));
    }
  return img;
}

// The same picture as a libjpeg-written quality-80 JPEG (tests/reference/ref_image.py), found next to this
// source file so the benchmark needs no arguments.
const std::string& photo_jpeg() {
  static const std::string bytes = [] {
    std::string here = __FILE__;
    here = here.substr(0, here.find_last_of("/\\") + 1);
    return detail::read_file_bytes(here + "../tests/reference/data/image/photo_640x480.jpg", "bench_preprocess");
  }();
  return bytes;
}

}  // namespace

// stb decodes on the calling thread only.
static void BM_decode_jpeg_640x480(benchmark::State& st) {
  const std::string& jpg = photo_jpeg();
  for (auto _ : st) benchmark::DoNotOptimize(decode_image_bytes(jpg).pixels.data());
  st.counters["Mpix/s"] = benchmark::Counter(640.0 * 480 / 1e6, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_decode_jpeg_640x480)->Unit(benchmark::kMillisecond)->UseRealTime();

// Args: threads. Decode, then HF CLIP's resize (bicubic to 298 x 224), crop, normalise.
static void BM_decode_preprocess_clip_640x480(benchmark::State& st) {
  const std::string& jpg = photo_jpeg();
  Context ctx(int(st.range(0)));
  for (auto _ : st) {
    const Image img = decode_image_bytes(jpg);
    benchmark::DoNotOptimize(preprocess_clip(img, 224, ctx).data());
  }
  st.counters["Mpix/s"] = benchmark::Counter(640.0 * 480 / 1e6, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_decode_preprocess_clip_640x480)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

// Args: filter (Resample as int), threads. 640 x 480 -> 224 x 298, CLIP's resize.
static void BM_resize_640x480_to_224(benchmark::State& st) {
  static const Image img = synthetic_photo(480, 640);
  const auto filter = Resample(st.range(0));
  Context ctx(int(st.range(1)));
  for (auto _ : st) benchmark::DoNotOptimize(resize(img, {224, 298}, filter, ctx).pixels.data());
  st.SetLabel(resample_name(filter));
  st.counters["Mpix/s"] = benchmark::Counter(640.0 * 480 / 1e6, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_resize_640x480_to_224)
    ->ArgsProduct({{int(Resample::bilinear), int(Resample::bicubic), int(Resample::lanczos)}, {1, 2}})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();

// Args: threads. 20 x 30 -> 224 x 224 (SigLIP's square resize of a thumbnail): upscale path.
static void BM_resize_upscale_to_224(benchmark::State& st) {
  static const Image img = synthetic_photo(30, 20);
  Context ctx(int(st.range(0)));
  for (auto _ : st) benchmark::DoNotOptimize(resize(img, {224, 224}, Resample::bicubic, ctx).pixels.data());
  st.counters["Mpix/s"] = benchmark::Counter(224.0 * 224 / 1e6, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_resize_upscale_to_224)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();

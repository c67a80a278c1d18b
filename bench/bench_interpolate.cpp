// interpolate: position-embedding resizes (ViT-B/16 224 -> 384: a 14 x 14 grid to 24 x 24 at width 768, the
// (N, C, H, W) op and the channels-last interpolate_pos_embed) and an image-sized resize (8, 3, 224, 224)
// -> 256 x 256. Items are output values.
#include <benchmark/benchmark.h>

#include <random>

#include "fovea/ops/interpolate.hpp"

using namespace fovea;

namespace {

template <class T, int R>
Tensor<T, R> random_tensor(const std::array<Index, R>& dims) {
  Tensor<T, R> t(dims);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(u(rng));
  return t;
}

const char* kModes[] = {"bilinear", "bicubic"};

}  // namespace

// Args: batch, channels, in side, out side, mode (0 bilinear, 1 bicubic), threads.
void BM_interpolate(benchmark::State& st) {
  const Index n = st.range(0), c = st.range(1), in = st.range(2), out = st.range(3);
  Context ctx(int(st.range(5)));
  const auto x = random_tensor<float, 4>({n, c, in, in});
  for (auto _ : st) {
    auto y = interpolate(x, {out, out}, kModes[st.range(4)], false, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetItemsProcessed(st.iterations() * n * c * out * out);
}

// Args: width, old grid side, new grid side, mode, threads; one class token.
void BM_interpolate_pos_embed(benchmark::State& st) {
  const Index d = st.range(0), g0 = st.range(1), g1 = st.range(2);
  Context ctx(int(st.range(4)));
  const auto pos = random_tensor<float, 2>({1 + g0 * g0, d});
  for (auto _ : st) {
    auto y = interpolate_pos_embed(pos, 1, g0, g1, kModes[st.range(3)], false, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  st.SetItemsProcessed(st.iterations() * d * g1 * g1);
}

BENCHMARK(BM_interpolate)
    ->ArgsProduct({{1}, {768}, {14}, {24}, {0, 1}, {1, 2}})
    ->ArgsProduct({{8}, {3}, {224}, {256}, {0, 1}, {1, 2}})
    ->ArgNames({"N", "C", "in", "out", "bicubic", "threads"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_interpolate_pos_embed)
    ->ArgsProduct({{768}, {14}, {24}, {0, 1}, {1, 2}})
    ->ArgNames({"D", "old", "new", "bicubic", "threads"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

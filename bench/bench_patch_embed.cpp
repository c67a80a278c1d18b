// patch_embed at ViT-B/16 (224 x 224 images, 16 x 16 patches, width 768), batch 1 and 8, next to the
// library's general conv2d with stride 16 (the same product through im2col tiles), and the sequence
// overload that also writes the class token and adds position embeddings in the same pass.
#include <benchmark/benchmark.h>

#include <random>

#include "fovea/ops/conv2d.hpp"
#include "fovea/ops/patch_embed.hpp"

using namespace fovea;

namespace {

template <class T, int R>
Tensor<T, R> random_tensor(const std::array<Index, R>& dims, unsigned seed) {
  Tensor<T, R> t(dims);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = T(u(rng));
  return t;
}

// 2 * tokens * D * (C * P * P)
void set_gflops(benchmark::State& st, Index b, Index image, Index patch, Index d) {
  const double tokens = double(b) * double(image / patch) * double(image / patch);
  st.counters["GFLOPS"] = benchmark::Counter(2.0 * tokens * double(d) * 3.0 * double(patch * patch) * 1e-9,
                                             benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

// Args: batch, image side, patch, width, threads.
void BM_patch_embed(benchmark::State& st) {
  const Index b = st.range(0), s = st.range(1), p = st.range(2), d = st.range(3);
  Context ctx(int(st.range(4)));
  const auto x = random_tensor<float, 4>({b, 3, s, s}, 1);
  const auto w = random_tensor<float, 4>({d, 3, p, p}, 2);
  const auto bias = random_tensor<float, 1>({d}, 3);
  for (auto _ : st) {
    auto y = patch_embed(x, w, bias, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  set_gflops(st, b, s, p, d);
}

void BM_patch_embed_sequence(benchmark::State& st) {
  const Index b = st.range(0), s = st.range(1), p = st.range(2), d = st.range(3), l = (s / p) * (s / p);
  Context ctx(int(st.range(4)));
  const auto x = random_tensor<float, 4>({b, 3, s, s}, 1);
  const auto w = random_tensor<float, 4>({d, 3, p, p}, 2);
  const auto bias = random_tensor<float, 1>({d}, 3);
  const auto cls = random_tensor<float, 2>({1, d}, 4);
  const auto pos = random_tensor<float, 2>({1 + l, d}, 5);
  for (auto _ : st) {
    auto y = patch_embed(x, w, bias, cls, pos, ctx);
    benchmark::DoNotOptimize(y.data());
  }
  set_gflops(st, b, s, p, d);
}

void BM_conv2d_stride_p(benchmark::State& st) {
  const Index b = st.range(0), s = st.range(1), p = st.range(2), d = st.range(3);
  Context ctx(int(st.range(4)));
  const auto x = random_tensor<float, 4>({b, 3, s, s}, 1);
  const auto w = random_tensor<float, 4>({d, 3, p, p}, 2);
  const auto bias = random_tensor<float, 1>({d}, 3);
  for (auto _ : st) {
    auto y = conv2d(x, w, bias, Conv2dOptions().stride(p), ctx);
    benchmark::DoNotOptimize(y.data());
  }
  set_gflops(st, b, s, p, d);
}

#define PATCH_SHAPES(bm)                                      \
  BENCHMARK(bm)                                               \
      ->ArgsProduct({{1, 8}, {224}, {16}, {768}, {1, 2}})     \
      ->ArgNames({"B", "image", "patch", "D", "threads"})     \
      ->Unit(benchmark::kMillisecond)                         \
      ->UseRealTime()
PATCH_SHAPES(BM_patch_embed);
PATCH_SHAPES(BM_patch_embed_sequence);
PATCH_SHAPES(BM_conv2d_stride_p);
